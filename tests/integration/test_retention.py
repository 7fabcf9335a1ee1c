"""Retention from configuration: TTLs set on the tables, bad configuration refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from govstream.errors import UsageError
from govstream.settings import Settings, as_environment
from sql.client import open_clickhouse
from sql.migrate import apply_migrations
from sql.retention import TIME_COLUMNS, apply_retention, retention_statements

pytestmark = pytest.mark.integration


def _ttl(ch: object, table: str) -> str:
    create = ch.query(f"SHOW CREATE TABLE {table}").scalar()  # type: ignore[attr-defined]
    return " ".join(create.split())


def test_ttls_are_set_and_removed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, clickhouse_database="retention_test")
    with open_clickhouse(settings, role="owner") as ch:
        apply_migrations(ch)
        assert set(TIME_COLUMNS) <= {r[0] for r in ch.query("SHOW TABLES").rows}
        ran = apply_retention(ch, {"turns": 400, "dead_letters": 30})
        assert ran == retention_statements({"turns": 400, "dead_letters": 30})
        assert "TTL toDateTime(occurred_at) + toIntervalDay(400)" in _ttl(ch, "turns")
        assert "TTL toDateTime(recorded_at) + toIntervalDay(30)" in _ttl(ch, "dead_letters")
        apply_retention(ch, {"turns": 0})
        assert "TTL" not in _ttl(ch, "turns")
        # Every mapped column exists and takes a TTL.
        apply_retention(ch, dict.fromkeys(TIME_COLUMNS, 3650))
        assert all("toIntervalDay(3650)" in _ttl(ch, t) for t in TIME_COLUMNS)


def test_unknown_tables_and_bad_days_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown table"):
        retention_statements({"turns; DROP TABLE turns": 1})
    with pytest.raises(UsageError, match="whole days"):
        retention_statements({"turns": -1})


def test_migrate_applies_the_configured_retention(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, clickhouse_database="retention_cli", retention_days={"turns": 90}
    )
    env = {**os.environ, **as_environment(settings)}
    assert env["GOVSTREAM_RETENTION_DAYS"] == '{"turns": 90}'
    result = subprocess.run([sys.executable, "-m", "govstream.cli", "migrate"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "retention: ALTER TABLE turns MODIFY TTL toDateTime(occurred_at) + INTERVAL 90 DAY" in (
        result.stdout
    )
    env["GOVSTREAM_RETENTION_DAYS"] = '{"nope": 1}'
    bad = subprocess.run([sys.executable, "-m", "govstream.cli", "migrate"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown table(s) nope" in bad.stderr
