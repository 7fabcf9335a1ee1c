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
    OwnerProxy,
    find_owner,
    handle_owner_request,
    mount_owner_routes,
    open_clickhouse,
    register_owner,
)
from sql.migrate import MIGRATIONS_TABLE, apply_migrations, checksum, load_migrations
from streams.rows import TABLE_COLUMNS

REPO = Path(__file__).resolve().parents[2]
# The migration files in the package, found without the runner's loader.
MIGRATION_FILES = sorted(path.name for path in (REPO / "sql/migrations").glob("*.sql"))
DATABASE = "govstream_test"
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
        app = web.Application()
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
    with serve(lambda app, executor: mount_owner_routes(app, engine, executor)) as url:
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
        " reason, raw_value) SELECT 'inj', 0, 1, 'test', {reason:String}, ''",
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
    with register_owner(settings, owner_url):
        assert find_owner(settings) == owner_url
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
            # Insert through the proxy (JSONEachRow over the command route).
            ch.insert(
                "turns",
                [turn("px-ins", "tenant-proxy-ins", 77, at), turn("px-ins2", INJECTION, 3, at)],
                TURN_COLUMNS,
            )
            assert engine.query(
                "SELECT count(), sum(cost_usd_micros), min(occurred_at) FROM turns "
                "WHERE tenant_id IN ('tenant-proxy-ins', {t:String})",
                {"t": INJECTION},
            ).rows == [(3, 87, at)]
            with pytest.raises(ClickHouseError) as info:
                ch.query("SELECT * FROM no_such_table")
            assert str(info.value).startswith("ClickHouse: Code: 60.")
            with pytest.raises(UsageError):
                ch.query("SELECT 1", {"unused": 1})
    assert find_owner(settings) is None


def test_cli_sql_in_a_subprocess_goes_through_the_owner(
    engine: ClickHouse, settings: Settings, owner_url: str, cli: list[str], home: Path
) -> None:
    expected = engine.query("SELECT count(), sum(cost_usd_micros) FROM turns").rows[0]
    assert expected[0] >= 5
    with register_owner(settings, owner_url):
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
            " reason, raw_value) SELECT 'cli', 0, 1, 'test', {r:String}, ''",
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
    assert (written.returncode, written.stdout) == (0, "OK\n"), written.stderr
    assert engine.query("SELECT reason FROM dead_letters WHERE source_topic = 'cli'").rows == [
        (INJECTION,)
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
    with register_owner(settings, owner_url), open_clickhouse(settings) as ch:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            counts = list(
                pool.map(lambda i: ch.query("SELECT {i:UInt32} * 2", {"i": i}).scalar(), range(40))
            )
        elapsed = time.perf_counter() - started
    assert counts == [i * 2 for i in range(40)]
    assert elapsed < 10


def test_large_proxy_insert_is_split_under_the_owner_body_limit(
    engine: ClickHouse, settings: Settings, owner_url: str
) -> None:
    at = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    payload = 'é"\\' * 150  # escapes and multi-byte text make the JSON body larger than it looks
    rows = [
        ["t.big", 0, offset, f"e-{offset}", "TurnCompleted", 1, "acme", "s", at, payload]
        for offset in range(3000)
    ]  # ~2.5 MB as JSON: over aiohttp's 1 MiB default, so several requests
    with register_owner(settings, owner_url), open_clickhouse(settings) as ch:
        ch.insert("events_archive", rows, ARCHIVE_COLUMNS)
    result = engine.query(
        "SELECT count(), sum(offset), uniqExact(payload), any(payload) "
        "FROM events_archive FINAL WHERE topic = 't.big'"
    )
    assert result.rows == [(3000, sum(range(3000)), 1, payload)]


def test_proxy_through_a_post_only_view_like_the_workers(
    engine: ClickHouse, settings: Settings, migrated: list[str]
) -> None:
    """The worker serves POST /v1/clickhouse/{action} through handle_owner_request only."""

    def build(app: web.Application, executor: Executor) -> None:
        async def view(request: web.Request) -> web.Response:
            status, payload = await handle_owner_request(
                engine, executor, f"/v1/clickhouse/{request.match_info['action']}",
                await request.read(),
            )  # fmt: skip
            return web.json_response(payload, status=status)

        app.router.add_post("/v1/clickhouse/{action}", view)

    with serve(build) as url, register_owner(settings, url):
        assert find_owner(settings) == url
        with open_clickhouse(settings) as ch:
            assert isinstance(ch, OwnerProxy)
            ch.command("CREATE TABLE IF NOT EXISTS post_only (k String, n UInt32) ENGINE = Memory")
            try:
                ch.insert("post_only", [["a", 1], ["b", 2], [INJECTION, 39]], ["k", "n"])
                assert ch.query("SELECT count(), sum(n) FROM post_only").rows == [(3, 42)]
                empty = ch.query("-- leading comment\nSELECT k, n FROM post_only WHERE n > 100")
                assert (empty.columns, empty.types, empty.rows) == (
                    ["k", "n"],
                    ["String", "UInt32"],
                    [],
                )
            finally:
                ch.command("DROP TABLE post_only")
