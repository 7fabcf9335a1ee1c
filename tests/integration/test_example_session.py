"""The shipped example session (examples/session.jsonl) goes through `govstream emit`
and a worker as documented: the denied call and its rejected completion, the
allowed call, the turns, and a session that ends completed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from govstream.settings import Settings, as_environment
from sql.client import open_clickhouse
from tests.conftest import BACKENDS, poll, running_worker

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "session.jsonl"
SESSION = "s-example-1"
WAIT_SECONDS = 90


@pytest.fixture(scope="module")
def worker(
    brokers: Any, clickhouse_servers: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    base = tmp_path_factory.mktemp("example")
    # The default age bound (30 days) holds: --retime makes the sample current.
    with running_worker(BACKENDS[0], brokers, clickhouse_servers, base, max_event_age_days=30) as (
        settings,
        _,
    ):
        yield settings


def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with open_clickhouse(settings, role="client") as ch:
        parameters = {"s": SESSION} if "{s:String}" in sql else None
        return [tuple(row) for row in ch.query(sql, parameters).rows]


def test_the_example_session_is_emitted_and_governed_as_documented(worker: Settings) -> None:
    sent = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "emit", "--retime", str(EXAMPLE)],
        env={**os.environ, **as_environment(worker)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent 10 events in ")

    # What the worker made of it, read until it is all there (the sink writes in batches).
    queries = {
        # Opened and closed, and no step refused (a refusal is a "rejected" row here).
        "transitions": "SELECT event_type, outcome FROM session_transitions FINAL "
        "WHERE session_id = {s:String} ORDER BY occurred_at",
        "decisions": "SELECT tool, decision, reason_code FROM policy_decisions FINAL "
        "WHERE session_id = {s:String} ORDER BY tool",
        "turns": "SELECT count(), sum(input_tokens + output_tokens), sum(cost_usd_micros) "
        "FROM turns FINAL WHERE session_id = {s:String}",
        "completions": "SELECT operation_key, status FROM tool_completions FINAL "
        "WHERE session_id = {s:String} ORDER BY operation_key",
        "dead letters": "SELECT count() FROM dead_letters",
    }
    expected = {
        "transitions": [("SessionStarted", "applied"), ("SessionClosed", "applied")],
        "decisions": [("shell", "deny", "TOOL_NOT_PERMITTED"), ("web_search", "allow", "ALLOWED")],
        "turns": [(2, 812 + 214 + 1350 + 160, 550)],
        "completions": [
            ("s-example-1/op-search", "succeeded"),
            ("s-example-1/op-shell", "rejected"),
        ],
        "dead letters": [(0,)],
    }
    seen = poll(
        "the example session's rows",
        lambda: {name: _rows(worker, sql) for name, sql in queries.items()},
        lambda rows: rows == expected,
        seconds=WAIT_SECONDS,
    )
    assert seen == expected
