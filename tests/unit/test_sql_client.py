"""sql.client pieces that need no ClickHouse: parameter guard, JSON codec, owner file, routes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from govstream.commands.sql import parse_params, print_json_lines, print_table, returns_rows
from govstream.errors import GovstreamError, UsageError
from govstream.settings import Settings
from sql.client import (
    ClickHouseError,
    _decode_rows,
    _param_to_json,
    check_parameters,
    find_owner,
    one_line,
    owner_file,
    quote_identifier,
    register_owner,
    to_json_value,
)


def test_one_line_keeps_the_clickhouse_error_and_drops_wrapping() -> None:
    raw = (
        "HTTPDriver for http://localhost:8123 received ClickHouse error code 60\n"
        " Code: 60. DB::Exception: Unknown table expression identifier 'nope'.\n"
        " (UNKNOWN_TABLE) (version 25.8.1.1)"
    )
    assert one_line(raw) == (
        "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. (UNKNOWN_TABLE)"
    )
    assert "\n" not in one_line("a\nb\n Stack trace:\n 0. frame")
    assert len(one_line("x" * 5000)) == 1000


def test_parameters_must_have_placeholders() -> None:
    assert check_parameters("SELECT {a:String}", {"a": "x"}) == {"a": "x"}
    assert check_parameters("SELECT 1", None) is None
    assert check_parameters("SELECT { a : Array(UInt8) }", {"a": [1]}) == {"a": [1]}
    with pytest.raises(UsageError, match=r"no \{b:Type\} placeholder"):
        check_parameters("SELECT {a:String}", {"a": "x", "b": "y"})
    # pyformat would be formatted into the SQL text client side: refused.
    with pytest.raises(UsageError):
        check_parameters("SELECT %(a)s", {"a": "x"})
    with pytest.raises(UsageError, match="invalid parameter name"):
        check_parameters("SELECT {a:String}", {"a;b": 1})


def test_quote_identifier() -> None:
    assert quote_identifier("turns") == "`turns`"
    assert quote_identifier("db.turns") == "`db`.`turns`"
    assert quote_identifier("we`ird") == "`we\\`ird`"
    with pytest.raises(UsageError):
        quote_identifier("db.")


def test_json_codec_round_trips_top_level_typed_values() -> None:
    ts = datetime(2026, 11, 23, 4, 5, 6, 123456, tzinfo=UTC)
    row = (
        ts,
        date(2026, 1, 2),
        Decimal("1.250"),
        UUID(int=7),
        b"\x00\xffz",
        IPv4Address("10.0.0.1"),
        None,
        [ts, 1],
        {"k": (1, 2)},
        "text",
    )
    types = [
        "DateTime64(6, 'UTC')",
        "Date32",
        "Decimal(18, 3)",
        "UUID",
        "FixedString(3)",
        "IPv4",
        "Nullable(DateTime)",
        "Tuple(DateTime, UInt8)",
        "Map(String, Tuple(UInt8, UInt8))",
        "LowCardinality(String)",
    ]
    encoded = json.loads(json.dumps([to_json_value(v) for v in row]))
    assert encoded[0] == "2026-11-23T04:05:06.123456+00:00"
    assert encoded[4] == "\x00\xffz"
    (decoded,) = _decode_rows(types, [encoded])
    assert decoded[:7] == row[:7]
    # Nested values stay JSON-decoded (documented).
    assert decoded[7] == ["2026-11-23T04:05:06.123456+00:00", 1]
    assert decoded[8] == {"k": [1, 2]}
    assert decoded[9] == "text"


def test_datetime_parameters_travel_as_utc_wall_time() -> None:
    aware = datetime(2026, 11, 23, 6, 0, tzinfo=UTC).astimezone()
    assert _param_to_json(aware) == "2026-11-23 06:00:00.000000"
    assert _param_to_json([Decimal("2.5"), date(2026, 1, 1)]) == ["2.5", "2026-01-01"]


# --------------------------------------------------------------------------- owner file


def _settings(home: Path) -> Settings:
    return Settings(home=home, clickhouse_url=None)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_register_owner_writes_a_private_file_and_removes_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home")
    with register_owner(settings, "http://127.0.0.1:1/", "s3cret") as path:
        assert path == owner_file(settings)
        assert json.loads(path.read_text()) == {
            "pid": os.getpid(),
            "url": "http://127.0.0.1:1",
            "secret": "s3cret",
        }
        # The owner's secret: readable and writable by its user only.
        assert path.stat().st_mode & 0o777 == 0o600
    assert not owner_file(settings).exists()


def test_register_owner_leaves_a_newer_owners_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with register_owner(settings, "http://127.0.0.1:1", "s3cret") as path:
        path.write_text(json.dumps({"pid": 1, "url": "http://127.0.0.1:2"}))
    assert owner_file(settings).exists()


def test_find_owner_removes_a_file_whose_process_is_gone(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    record = {"pid": _dead_pid(), "url": "http://127.0.0.1:9", "secret": "x"}
    owner_file(settings).write_text(json.dumps(record))
    assert find_owner(settings) is None
    assert not owner_file(settings).exists()


def test_find_owner_removes_a_garbled_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    owner_file(settings).write_text("{not json")
    assert find_owner(settings) is None
    assert not owner_file(settings).exists()


def test_find_owner_ignores_but_keeps_a_live_owner_that_does_not_answer(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    # Our own pid is alive; port 9 (discard) on localhost refuses the connection.
    record = {"pid": os.getpid(), "url": "http://127.0.0.1:9", "secret": "x"}
    owner_file(settings).write_text(json.dumps(record))
    assert find_owner(settings, timeout=0.5) is None
    assert owner_file(settings).exists()


def test_find_owner_without_a_file(tmp_path: Path) -> None:
    assert find_owner(_settings(tmp_path)) is None


# --------------------------------------------------------------------------- `govstream sql` output


def test_print_table_aligns_and_counts() -> None:
    out = io.StringIO()
    print_table(["tenant", "cost"], [("acme", 12), ("b\nc", None)], out)
    assert out.getvalue() == ("tenant  cost\n------  ----\nacme      12\nb\\nc    NULL\n2 rows\n")
    out = io.StringIO()
    print_table(["x"], [], out)
    assert out.getvalue().splitlines() == ["x", "-", "0 rows"]


def test_print_json_lines() -> None:
    out = io.StringIO()
    print_json_lines(["a", "t"], [(1, datetime(2026, 1, 1, tzinfo=UTC))], out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"a": 1, "t": "2026-01-01T00:00:00+00:00"}
    ]


def test_parse_params() -> None:
    assert parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(GovstreamError):
        parse_params(["novalue"])


def test_server_url_is_validated_and_its_password_never_shown() -> None:
    from sql.client import Server

    with pytest.raises(UsageError, match="must look like"):
        Server("ftp://somewhere", "govstream")
    with pytest.raises(UsageError, match="GOVSTREAM_CLICKHOUSE_DATABASE"):
        Server("http://localhost:8123/analytics", "govstream")
    with pytest.raises(UsageError, match="invalid ClickHouse database name"):
        Server("http://localhost:8123", "bad-name; DROP")
    # Port 9 on localhost refuses connections: fails fast, one line, password redacted.
    with pytest.raises(ClickHouseError) as info:
        Server("http://default:s3cret@127.0.0.1:9", "govstream")
    message = str(info.value)
    assert message.startswith("cannot reach ClickHouse server at http://default:***@127.0.0.1:9")
    assert "s3cret" not in message and "\n" not in message


def test_returns_rows_by_first_keyword() -> None:
    for q in (
        "SELECT 1",
        " with x AS (SELECT 1) SELECT * FROM x",
        "SHOW TABLES",
        "DESC turns",
        "-- note\n/* c */ EXISTS TABLE turns",
        "(SELECT 1) UNION ALL (SELECT 2)",
    ):
        assert returns_rows(q), q
    for q in (
        "INSERT INTO t VALUES (1)",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "SYSTEM FLUSH LOGS",
        "-- SELECT\nDROP TABLE t",
        "OPTIMIZE TABLE t FINAL",
    ):
        assert not returns_rows(q), q


def test_only_loopback_clients_reach_the_owner_routes() -> None:
    from sql.client import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("127.3.2.1")
    assert not _is_loopback("10.0.0.5") and not _is_loopback(None) and not _is_loopback("unix")


def test_queued_runs_each_statement_as_a_task_of_the_executor_in_turn() -> None:
    """A long read through `Queued` (on a thread of its own) puts each statement at the
    back of the executor's queue: work queued meanwhile runs between its statements."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sql.client import QueryResult, Queued
    from tests.stubs import QueryOnlyClickHouse

    order: list[str] = []
    in_first = threading.Event()
    let_go = threading.Event()

    class Recording(QueryOnlyClickHouse):
        def query(self, sql: str, parameters: object = None, *, readonly: bool = False) -> Any:
            order.append(f"{sql} on {threading.current_thread().name}")
            if sql == "read 1":
                in_first.set()
                let_go.wait(30)
            if sql == "bad":
                raise ClickHouseError("Code: 62. syntax")
            return QueryResult(["n"], ["UInt8"], [(1,)])

        def command(self, sql: str, parameters: object = None) -> None: ...

    with ThreadPoolExecutor(1, "clickhouse") as executor, ThreadPoolExecutor(1, "bg") as bg:
        queued = Queued(Recording(), executor)
        read = bg.submit(lambda: [queued.query(f"read {i}").rows for i in (1, 2)])
        assert in_first.wait(30)
        page = executor.submit(Recording().query, "page")  # queued while "read 1" runs
        let_go.set()
        assert read.result(30) == [[(1,)], [(1,)]] and page.result(30).rows == [(1,)]
        with pytest.raises(ClickHouseError, match="syntax"):
            queued.query("bad")
    assert order == ["read 1 on clickhouse_0", "page on clickhouse_0", "read 2 on clickhouse_0",
                     "bad on clickhouse_0"]  # fmt: skip
