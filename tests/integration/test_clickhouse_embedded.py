"""Embedded ClickHouse (chDB) end to end: migrations, server-side parameters, dedupe, owner proxy.

chDB allows one engine per process and one data directory per process, so this
module opens ONE engine (module scope) and every other process in it — the CLI
subprocesses — reaches that engine through the owner routes, exactly as the CLI
reaches a running worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from govstream.errors import GovstreamError, UsageError
from govstream.settings import Settings
from sql.client import (
    ClickHouse,
    ClickHouseError,
    Embedded,
    Owner,
    OwnerProxy,
    find_owner,
    mount_owner_routes,
    open_clickhouse,
    register_owner,
)
from sql.migrate import MIGRATIONS_TABLE, apply_migrations, checksum, load_migrations
from sql.retention import apply_retention
from streams.http_guard import Guard
from streams.rows import TABLE_COLUMNS

REPO = Path(__file__).resolve().parents[2]
# The migration files in the package, found without the runner's loader.
MIGRATION_FILES = sorted(path.name for path in (REPO / "sql/migrations").glob("*.sql"))
DATABASE = "govstream_test"
SECRET = "owner-secret-for-tests"
INJECTION = "x'; DROP TABLE turns; -- \" ` \\ {y:String} %(z)s"

TURN_COLUMNS = [
    "event_id",
    "occurred_at",
    "tenant_id",
    "session_id",
    "workflow_id",
    "environment",
    "model",
    "prompt_version",
    "input_tokens",
    "output_tokens",
    "cost_usd_micros",
    "first_token_ms",
    "latency_ms",
    "outcome",
    "error_class",
    "attempt",
]
ARCHIVE_COLUMNS = [
    "topic",
    "partition",
    "offset",
    "event_id",
    "event_type",
    "schema_id",
    "tenant_id",
    "session_id",
    "occurred_at",
    "payload",
]


def turn(event_id: str, tenant: str, cost: int, at: datetime) -> list[Any]:
    return [event_id, at, tenant, "s-1", None, "prod", "gpt-x", "v1", 100, 20, cost, 50, 400,
            "completed", None, 1]  # fmt: skip


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("govstream-home")


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(home=home, clickhouse_url=None, clickhouse_database=DATABASE)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[ClickHouse]:
    ch = open_clickhouse(settings, role="owner")
    assert isinstance(ch, Embedded)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture(scope="module")
def migrated(engine: ClickHouse) -> list[str]:
    return apply_migrations(engine)


@contextlib.contextmanager
def serve(build: Callable[[web.Application, Executor], None]) -> Iterator[str]:
    """An aiohttp app on a free loopback port, its loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="owner-http", daemon=True)
    thread.start()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def start() -> web.AppRunner:
        # Behind the worker's guard, as the worker serves the owner routes.
        app = web.Application(middlewares=[Guard({"op-key": "*"}, SECRET).middleware])
        build(app, executor)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        executor.shutdown()


@pytest.fixture(scope="module")
def owner_url(engine: ClickHouse, migrated: list[str]) -> Iterator[str]:
    """The owner routes around the module's engine, as mount_owner_routes serves them."""

    def migrate(ch: ClickHouse) -> tuple[list[str], list[str]]:
        return apply_migrations(ch), apply_retention(ch, {}, None)

    with serve(lambda app, executor: mount_owner_routes(app, engine, executor, migrate)) as url:
        yield url


@pytest.fixture(scope="module")
def cli() -> list[str]:
    return [sys.executable, "-m", "govstream.cli"]


def up_to_date() -> str:
    n = len(MIGRATION_FILES)
    return f"schema up to date ({n} migration{'' if n == 1 else 's'})"


def run_cli(
    cli: list[str], home: Path, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVSTREAM_")}
    env.update(GOVSTREAM_HOME=str(home), GOVSTREAM_CLICKHOUSE_DATABASE=DATABASE)
    argv = (
        [*cli, command, *args]
        if cli
        else [sys.executable, "-m", f"govstream.commands.{command}", *args]
    )
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- migrations


def test_migrations_apply_once_then_are_a_no_op(engine: ClickHouse, migrated: list[str]) -> None:
    migrations = load_migrations()
    assert [m.name for m in migrations] == MIGRATION_FILES
    assert MIGRATION_FILES[0] == "0001_foundation.sql"
    assert migrated == MIGRATION_FILES
    assert apply_migrations(engine) == []
    recorded = engine.query(
        f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    )
    assert recorded.rows == [(m.version, m.name, checksum(m.text)) for m in migrations]


def test_tables_exist_in_the_configured_database(engine: ClickHouse, migrated: list[str]) -> None:
    assert engine.query("SELECT currentDatabase()").scalar() == DATABASE
    tables = engine.query(
        # A refreshable view builds its next result in a hidden .tmp table: not ours.
        "SELECT name, engine FROM system.tables WHERE database = {db:String}"
        " AND NOT startsWith(name, '.') ORDER BY name",
        {"db": DATABASE},
    )
    assert tables.rows == [
        ("admission_decisions", "ReplacingMergeTree"),
        ("budget_events", "ReplacingMergeTree"),
        ("consumer_backlog", "MergeTree"),
        ("dead_letters", "ReplacingMergeTree"),
        ("decisions_per_minute", "AggregatingMergeTree"),
        ("decisions_per_minute_refresh", "MaterializedView"),
        ("duplicates_suppressed", "ReplacingMergeTree"),
        ("events_archive", "ReplacingMergeTree"),
        ("policy_decisions", "ReplacingMergeTree"),
        ("schema_migrations", "MergeTree"),
        ("session_transitions", "ReplacingMergeTree"),
        ("sessions", "ReplacingMergeTree"),
        ("tenant_profiles", "ReplacingMergeTree"),
        ("tenant_profiles_from_archive", "MaterializedView"),
        ("tool_calls", "View"),
        ("tool_completions", "ReplacingMergeTree"),
        ("tool_proposals", "ReplacingMergeTree"),
        ("turns", "ReplacingMergeTree"),
        ("turns_per_minute", "AggregatingMergeTree"),
        ("turns_per_minute_refresh", "MaterializedView"),
    ]


def test_the_sink_writes_columns_the_tables_have(engine: ClickHouse, migrated: list[str]) -> None:
    # streams/rows.py spells each table's columns for the sink: each is a column
    # the migrated table takes on insert, and each one it leaves out fills itself.
    for table, written in TABLE_COLUMNS.items():
        columns = engine.query(
            "SELECT name, default_kind FROM system.columns"
            " WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            {"db": DATABASE, "t": table},
        ).rows
        insertable = {name for name, kind in columns if kind not in ("MATERIALIZED", "ALIAS")}
        assert len(set(written)) == len(written), table
        assert set(written) <= insertable, (table, set(written) - insertable)
        unwritten = {name: kind for name, kind in columns if name not in written}
        assert all(unwritten.values()), (table, unwritten)


@pytest.mark.parametrize("changed", MIGRATION_FILES)
def test_a_changed_applied_migration_is_refused(
    engine: ClickHouse, migrated: list[str], tmp_path: Path, changed: str
) -> None:
    # Every applied file is there, only one of them edited.
    for migration in load_migrations():
        edit = "\n-- an innocent edit\n" if migration.name == changed else ""
        (tmp_path / migration.name).write_text(migration.text + edit)
    with pytest.raises(GovstreamError) as info:
        apply_migrations(engine, tmp_path)
    assert str(info.value) == (
        f"migration {changed} was changed after it was applied; "
        "migrations are frozen: add a new file"
    )


def test_a_new_migration_file_is_applied_after_the_old_ones(
    engine: ClickHouse, migrated: list[str], tmp_path: Path
) -> None:
    migrations = load_migrations()
    for migration in migrations:
        (tmp_path / migration.name).write_text(migration.text)
    version = migrations[-1].version + 1
    extra = f"{version:04d}_extra.sql"
    (tmp_path / extra).write_text(
        "-- one more file\nCREATE TABLE IF NOT EXISTS extra_a (x UInt8) ENGINE = Memory;\n"
        "CREATE TABLE IF NOT EXISTS extra_b (y String) ENGINE = Memory;\n"
    )
    try:
        assert apply_migrations(engine, tmp_path) == [extra]
        assert apply_migrations(engine, tmp_path) == []
        assert engine.query("SELECT count() FROM extra_a").scalar() == 0
        assert engine.query("SELECT count() FROM extra_b").scalar() == 0
        recorded = engine.query(
            f"SELECT version, name FROM {MIGRATIONS_TABLE} ORDER BY version"
        ).rows
        assert recorded == [*((m.version, m.name) for m in migrations), (version, extra)]
    finally:
        engine.command("DROP TABLE IF EXISTS extra_a")
        engine.command("DROP TABLE IF EXISTS extra_b")
        engine.command(
            f"DELETE FROM {MIGRATIONS_TABLE} WHERE version = {{v:UInt32}}", {"v": version}
        )


# --------------------------------------------------------------------------- parameters


def test_parameter_with_sql_injection_text_is_a_value(
    engine: ClickHouse, migrated: list[str]
) -> None:
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    engine.insert("turns", [turn("inj-1", INJECTION, 7, at)], TURN_COLUMNS)
    hit = engine.query(
        "SELECT count(), sum(cost_usd_micros) FROM turns WHERE tenant_id = {t:String}",
        {"t": INJECTION},
    )
    assert hit.rows == [(1, 7)]
    # Also through command(): the value lands in a row byte for byte.
    engine.command(
        "INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason_code,"
        " reason, raw_preview) SELECT 'inj', 0, 1, 'test', {reason:String}, ''",
        {"reason": INJECTION},
    )
    stored = engine.query("SELECT reason FROM dead_letters WHERE source_topic = 'inj'")
    assert stored.rows == [(INJECTION,)]
    assert engine.query("EXISTS TABLE turns").scalar() == 1
    # Without a {name:Type} placeholder the value would be formatted client side: refused.
    with pytest.raises(UsageError, match="placeholder"):
        engine.query("SELECT count() FROM turns WHERE tenant_id = %(t)s", {"t": INJECTION})


def test_typed_parameters_are_parsed_server_side(engine: ClickHouse) -> None:
    result = engine.query(
        "SELECT {n:UInt32} + 1 AS n, {ids:Array(String)} AS ids, {at:DateTime64(3, 'UTC')} AS at",
        {"n": "41", "ids": ["a'b", "c"], "at": "2026-11-23 04:05:06.789"},
    )
    assert result.columns == ["n", "ids", "at"]
    assert result.rows == [(42, ["a'b", "c"], datetime(2026, 11, 23, 4, 5, 6, 789000, tzinfo=UTC))]


def test_empty_result_still_reports_columns(engine: ClickHouse, migrated: list[str]) -> None:
    empty = engine.query("SELECT event_id, cost_usd_micros FROM turns WHERE tenant_id = 'none'")
    assert (empty.columns, empty.types, empty.rows) == (
        ["event_id", "cost_usd_micros"],
        ["String", "UInt64"],
        [],
    )


def test_clickhouse_error_is_one_line(engine: ClickHouse) -> None:
    with pytest.raises(ClickHouseError) as info:
        engine.query("SELECT * FROM no_such_table")
    message = str(info.value)
    assert message.startswith("ClickHouse: Code: 60.") and "\n" not in message


# --------------------------------------------------------------------------- dedupe


def test_final_collapses_a_redelivered_archive_record(
    engine: ClickHouse, migrated: list[str]
) -> None:
    at = datetime(2026, 11, 23, 4, 5, 6, 123456, tzinfo=UTC)
    first = ["t.dedupe", 2, 10, "e-10", "TurnCompleted", 1, "acme", "s-1", at, '{"a": 1}']
    other = ["t.dedupe", 2, 11, "e-11", "TurnCompleted", 1, "acme", "s-1", at, '{"a": 2}']
    # Keep the parts apart so FINAL, not a background merge, does the dedupe.
    engine.command("SYSTEM STOP MERGES events_archive")
    try:
        engine.insert("events_archive", [first, other], ARCHIVE_COLUMNS)
        engine.insert("events_archive", [first], ARCHIVE_COLUMNS)  # at-least-once redelivery
        raw = engine.query("SELECT count() FROM events_archive WHERE topic = 't.dedupe'")
        final = engine.query(
            "SELECT count(), sum(offset), countIf(offset = 10) "
            "FROM events_archive FINAL WHERE topic = 't.dedupe'"
        )
    finally:
        engine.command("SYSTEM START MERGES events_archive")
    assert raw.scalar() == 3
    assert final.rows == [(2, 21, 1)]
    row = engine.query(
        "SELECT occurred_at, payload FROM events_archive FINAL WHERE topic = 't.dedupe' "
        "AND offset = 10"
    )
    assert row.rows == [(at, '{"a": 1}')]


def test_final_keeps_the_first_attempt_of_a_session_whatever_the_order(
    engine: ClickHouse, migrated: list[str]
) -> None:
    columns = list(TABLE_COLUMNS["sessions"])
    at = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    later = datetime(2026, 11, 23, 5, 0, 30, tzinfo=UTC)

    def session(session_id: str, event_id: str, started: datetime, attempt: int) -> list[Any]:
        return [session_id, "t-first", None, "A", "team", "u-1", "v1", "production", started,
                event_id, attempt]  # fmt: skip

    sends = [  # one insert each: the retry before or after its original
        session("s-retry-last", "e-1", at, 1),
        session("s-retry-first", "e-2r", later, 2),
        session("s-retry-last", "e-1", at, 1),  # a redelivery
        session("s-retry-last", "e-1r", later, 2),
        session("s-retry-first", "e-2", at, 1),
    ]
    engine.command("SYSTEM STOP MERGES sessions")
    try:
        for row in sends:
            engine.insert("sessions", [row], columns)
        raw = engine.query("SELECT count() FROM sessions WHERE tenant_id = 't-first'")
        final = engine.query(
            "SELECT session_id, event_id, started_at, attempt FROM sessions FINAL"
            " WHERE tenant_id = 't-first' ORDER BY session_id"
        )
    finally:
        engine.command("SYSTEM START MERGES sessions")
    assert raw.scalar() == 5
    assert final.rows == [("s-retry-first", "e-2", at, 1), ("s-retry-last", "e-1", at, 1)]


# --------------------------------------------------------------------------- owner proxy


def test_owner_proxy_in_the_same_process(
    engine: ClickHouse, settings: Settings, owner_url: str
) -> None:
    at = datetime(2026, 11, 23, 8, 30, 0, 250000, tzinfo=UTC)
    engine.insert(
        "turns",
        [turn(f"px-{i}", "tenant-proxy", 1000 + i, at) for i in range(5)],
        TURN_COLUMNS,
    )
    assert find_owner(settings) is None
    with register_owner(settings, owner_url, SECRET):
        assert find_owner(settings) == Owner(owner_url, SECRET)
        with open_clickhouse(settings, role="client") as ch:
            assert isinstance(ch, OwnerProxy)
            result = ch.query(
                "SELECT count(), sum(cost_usd_micros), max(occurred_at) FROM turns "
                "WHERE tenant_id = {t:String}",
                {"t": "tenant-proxy"},
            )
            assert result.rows == [(5, 5010, at)]
            assert result.types == ["UInt64", "UInt64", "DateTime64(6, 'UTC')"]
            # Typed values come back as Python values, as from the embedded client.
            direct = engine.query("SELECT * FROM turns WHERE event_id = 'px-3'")
            proxied = ch.query("SELECT * FROM turns WHERE event_id = {id:String}", {"id": "px-3"})
            assert proxied == direct
            # Injection text through the proxy is still a value.
            assert ch.query(
                "SELECT count() FROM turns WHERE tenant_id = {t:String}", {"t": INJECTION}
            ).rows == [(1,)]
            # The proxy reads; it writes only by asking the owner to migrate.
            with pytest.raises(UsageError, match="serves reads only"):
                ch.insert("turns", [turn("px-ins", "tenant-proxy-ins", 77, at)], TURN_COLUMNS)
            with pytest.raises(UsageError, match="serves reads only"):
                ch.command("DROP TABLE turns")
            assert ch.migrate() == ([], [])
            with pytest.raises(ClickHouseError) as info:
                ch.query("SELECT * FROM no_such_table")
            assert "UNKNOWN_TABLE" in str(info.value)
            with pytest.raises(UsageError):
                ch.query("SELECT 1", {"unused": 1})
            empty = ch.query("-- leading comment\nSELECT event_id FROM turns WHERE 0")
            assert (empty.columns, empty.types, empty.rows) == (["event_id"], ["String"], [])
    assert find_owner(settings) is None


def test_cli_sql_in_a_subprocess_goes_through_the_owner(
    engine: ClickHouse, settings: Settings, owner_url: str, cli: list[str], home: Path
) -> None:
    expected = engine.query("SELECT count(), sum(cost_usd_micros) FROM turns").rows[0]
    assert expected[0] >= 5
    with register_owner(settings, owner_url, SECRET):
        table = run_cli(
            cli, home, "sql", "SELECT count() AS n, sum(cost_usd_micros) AS cost FROM turns"
        )
        as_json = run_cli(
            cli, home, "sql", "--json", "--param", "t=tenant-proxy",
            "SELECT event_id, cost_usd_micros FROM turns WHERE tenant_id = {t:String} "
            "ORDER BY event_id",
        )  # fmt: skip
        written = run_cli(
            cli, home, "sql", "--param", f"r={INJECTION}",
            "INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason_code,"
            " reason, raw_preview) SELECT 'cli', 0, 1, 'test', {r:String}, ''",
        )  # fmt: skip
        broken = run_cli(cli, home, "sql", "SELECT * FROM no_such_table")
        empty = run_cli(cli, home, "sql", "   ")
        migrate = run_cli(cli, home, "migrate")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["n", "cost"]
    assert lines[2].split() == [str(expected[0]), str(expected[1])]
    assert lines[-1] == "1 row"
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"event_id": f"px-{i}", "cost_usd_micros": 1000 + i} for i in range(5)
    ]
    # A write through a running owner is refused in one line, and nothing is written.
    assert written.returncode == 2
    assert "serves reads only" in written.stderr and written.stderr.count("\n") == 1
    assert engine.query("SELECT count() FROM dead_letters WHERE source_topic = 'cli'").rows == [
        (0,)
    ]
    assert broken.returncode == 1
    assert broken.stderr.startswith("govstream: ClickHouse: Code: 60.")
    assert broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr
    assert empty.returncode == 2 and "empty query" in empty.stderr
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.strip() == up_to_date()


def test_cli_without_an_answering_owner_reports_the_holder(
    engine: ClickHouse, migrated: list[str], cli: list[str], home: Path
) -> None:
    assert not (home / "clickhouse-owner.json").exists()
    result = run_cli(cli, home, "sql", "SELECT 1")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"govstream: embedded ClickHouse at {(home / 'clickhouse').resolve()} is held by "
        f"another process (pid {os.getpid()}?) that does not answer; stop it or set "
        "GOVSTREAM_CLICKHOUSE_URL"
    )


def test_cli_opens_the_engine_directly_when_no_one_holds_it(cli: list[str], tmp_path: Path) -> None:
    # A fresh home, never opened in this process: the subprocess owns it for its lifetime.
    first = run_cli(cli, tmp_path, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in MIGRATION_FILES]
    assert first.stderr == ""
    second = run_cli(cli, tmp_path, "migrate")
    assert second.stdout.strip() == up_to_date()
    count = run_cli(cli, tmp_path, "sql", "--json", "SELECT count() AS n FROM schema_migrations")
    assert count.returncode == 0, count.stderr
    assert json.loads(count.stdout) == {"n": len(MIGRATION_FILES)}


def test_owner_answers_while_busy_with_parallel_clients(
    engine: ClickHouse, settings: Settings, owner_url: str
) -> None:
    # Several client threads share one OwnerProxy; the owner serializes on its executor.
    with register_owner(settings, owner_url, SECRET), open_clickhouse(settings) as ch:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            counts = list(
                pool.map(lambda i: ch.query("SELECT {i:UInt32} * 2", {"i": i}).scalar(), range(40))
            )
        elapsed = time.perf_counter() - started
    assert counts == [i * 2 for i in range(40)]
    assert elapsed < 30


# --------------------------------------------------------------------------- hostile requests


def _tables(engine: ClickHouse) -> list[str]:
    return [
        r[0]
        for r in engine.query(
            "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
            {"db": DATABASE},
        ).rows
    ]


HOSTILE_SQL = [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file()"),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')", "url()"),
    ("SELECT * FROM remote('127.0.0.1:9', system.one)", "remote()"),
    ("SELECT * FROM s3('http://127.0.0.1:9/bucket-a/x.csv', 'CSV', 'a String')", "s3()"),
    ("SELECT 1 FROM system.one WHERE 1 IN (SELECT 1 FROM file('/etc/hostname', 'LineAsString'))",
     "file()"),
    ("DROP TABLE turns", "DropQuery"),
    ("CREATE TABLE probe (x UInt8) ENGINE = Memory", "CreateQuery"),
    ("INSERT INTO turns (event_id) VALUES ('evil')", "InsertQuery"),
    ("INSERT INTO FUNCTION file('/tmp/govstream-probe.csv') SELECT 1", "InsertQuery"),
    ("SELECT 1; DROP TABLE turns", "Multi-statements"),
    ("SELECT 1 INTO OUTFILE '/tmp/govstream-probe-outfile.csv'", "INTO OUTFILE"),
    ("SELECT 1 SETTINGS readonly = 0", "readonly"),
    ("SYSTEM SHUTDOWN", "SYSTEM"),
    ("SET readonly = 0", "SetQuery"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "why"), HOSTILE_SQL)
def test_the_owner_runs_no_hostile_sql(
    engine: ClickHouse, owner_url: str, sql: str, why: str
) -> None:
    import httpx

    tables = _tables(engine)
    headers = {"Authorization": f"Bearer {SECRET}"}
    answer = httpx.post(f"{owner_url}/v1/clickhouse/query", json={"sql": sql}, headers=headers)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error"}
    assert _tables(engine) == tables  # nothing created or dropped
    assert not Path("/tmp/govstream-probe.csv").exists()
    assert not Path("/tmp/govstream-probe-outfile.csv").exists()
    assert engine.query("SELECT count() FROM turns WHERE event_id = 'evil'").scalar() == 0


@pytest.mark.parametrize("path", ["query", "migrate", "ping", "command", "nope"])
def test_the_owner_routes_need_the_owner_secret(
    engine: ClickHouse, owner_url: str, path: str
) -> None:
    import httpx

    url = f"{owner_url}/v1/clickhouse/{path}"
    body = {"sql": "SELECT count() FROM turns"}
    tables = _tables(engine)
    assert httpx.post(url, json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-secret"}
    assert httpx.post(url, json=body, headers=wrong).status_code == 401
    # An operator API key is not the owner's secret: no SQL for it either.
    operator = {"Authorization": "Bearer op-key"}
    assert httpx.post(url, json=body, headers=operator).status_code in (403, 404)
    # Browser-shaped requests with the secret: a page cannot drive the owner.
    good = {"Authorization": f"Bearer {SECRET}"}
    from_page = httpx.post(url, json=body, headers={**good, "Origin": "http://evil.example"})
    assert from_page.status_code == 403
    as_text = httpx.post(
        url,
        content=b'{"sql": "CREATE TABLE probe2 (x UInt8) ENGINE = Memory"}',
        headers={**good, "Content-Type": "text/plain"},
    )
    assert as_text.status_code in (404, 415)
    assert _tables(engine) == tables
