"""The cluster variant of the migrations: ClickHouse's own parser accepts every statement.

No cluster runs here, so the statements are parsed (EXPLAIN AST) and
normalised (formatQuery) by the embedded engine, and the runner is checked to
send the rendered statements.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from govstream.settings import Settings
from sql.client import QueryResult, open_clickhouse
from sql.cluster import render_statement, rendered_statements
from sql.migrate import apply_migrations, load_migrations

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(home=tmp_path_factory.mktemp("cluster"), clickhouse_database="cluster")
    with open_clickhouse(settings, role="owner") as ch:
        yield ch


def test_every_rendered_statement_parses_as_cluster_ddl(engine: Any) -> None:
    tables = 0
    for migration in load_migrations():
        for statement in rendered_statements(migration.text, "main"):
            engine.query("EXPLAIN AST " + statement)  # raises on a syntax error
            formatted = engine.query("SELECT formatQuery({q:String})", {"q": statement}).scalar()
            if formatted.startswith(("CREATE", "ALTER")):
                assert "ON CLUSTER main" in formatted, formatted[:120]
            if "MergeTree" in formatted:
                tables += 1
                assert "ENGINE = Replicated" in formatted
                assert "'/clickhouse/tables/{shard}/{database}/" in formatted
    assert tables >= 14  # every table of 0001-0004, the rebuilt ones of 0002 included


def test_engine_arguments_are_kept_after_the_replication_path() -> None:
    rendered = render_statement(
        "CREATE TABLE IF NOT EXISTS t (a UInt8, v UInt16) "
        "ENGINE = ReplacingMergeTree(v) ORDER BY a",
        "prod",
    )
    assert rendered == (
        "CREATE TABLE IF NOT EXISTS t ON CLUSTER 'prod' (a UInt8, v UInt16) ENGINE = "
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}', v)"
        " ORDER BY a"
    )
    with pytest.raises(ValueError, match="cluster name"):
        render_statement("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "x'; --")


class _Recorder:
    """Records commands; answers the bookkeeping query with no rows applied."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def command(self, sql: str, parameters: Any = None) -> None:
        self.commands.append(sql)

    def query(self, sql: str, parameters: Any = None) -> QueryResult:
        return QueryResult(["version", "name", "checksum"], ["UInt32", "String", "String"], [])


def test_the_runner_sends_the_cluster_statements() -> None:
    recorder = _Recorder()
    applied = apply_migrations(recorder, cluster="main")  # type: ignore[arg-type]
    assert applied == [m.name for m in load_migrations()]
    ddl = [c for c in recorder.commands if not c.startswith("INSERT")]
    assert all(" ON CLUSTER 'main'" in c for c in ddl)
    assert "ReplicatedMergeTree(" in ddl[0]  # schema_migrations itself is replicated


def test_migrate_renders_the_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "migrate", "--render-cluster", "main",
         "--out", str(tmp_path)],
        env=os.environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [m.name for m in load_migrations()]
    assert "ON CLUSTER 'main'" in (tmp_path / "0001_foundation.sql").read_text()
