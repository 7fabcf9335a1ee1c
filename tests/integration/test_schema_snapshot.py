"""A snapshot of every CREATE statement the migrations produce.

Any change to the schema, intended or not, shows up as a diff of
tests/snapshots/schema.sql. Refresh it on purpose with
GOVSTREAM_UPDATE_SNAPSHOT=1 pytest tests/integration/test_schema_snapshot.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from govstream.settings import Settings
from sql.client import open_clickhouse
from sql.migrate import apply_migrations

pytestmark = pytest.mark.integration
SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "schema.sql"


def schema(tmp_path: Path) -> str:
    settings = Settings(home=tmp_path, clickhouse_database="snapshot")
    with open_clickhouse(settings, role="owner") as ch:
        apply_migrations(ch)
        names = [
            row[0]
            for row in ch.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase()"
                " AND NOT startsWith(name, '.') AND name != 'schema_migrations' ORDER BY name"
            ).rows
        ]
        statements = [ch.query(f"SHOW CREATE TABLE {name}").scalar() for name in names]
    # The database name is this test's; the snapshot names none.
    text = "\n\n".join(s.replace("snapshot.", "") + ";" for s in statements)
    return text + "\n"


def test_the_schema_matches_its_snapshot(tmp_path: Path) -> None:
    current = schema(tmp_path)
    if os.environ.get("GOVSTREAM_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), "no snapshot yet: run with GOVSTREAM_UPDATE_SNAPSHOT=1"
    assert current == SNAPSHOT.read_text(), (
        "the schema changed; if intended, refresh tests/snapshots/schema.sql "
        "with GOVSTREAM_UPDATE_SNAPSHOT=1"
    )
