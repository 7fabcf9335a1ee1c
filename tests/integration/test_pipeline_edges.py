"""Bad records, duplicates and the emit CLI against a real broker and worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.codec import Codec
from events.emitter import Emitter
from events.jsonl import to_json_line
from events.models import RecordDeadLettered
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.processes import WorkerProcess
from govstream.settings import Settings, as_environment, record_signer
from sql.client import ClickHouse, open_clickhouse
from tests.conftest import BACKENDS, Backend, isolated_settings
from tests.factories import session_started, turn
from tests.kafka_io import read_topic

pytestmark = pytest.mark.integration
MAX_RECORD = 64 * 1024


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def pipeline(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, ClickHouse]]:
    backend: Backend = request.param
    base = tmp_path_factory.mktemp("edges")
    settings = isolated_settings(
        base,
        brokers.bootstrap(backend.kafka),
        clickhouse_servers.url(backend.clickhouse),
        max_record_bytes=MAX_RECORD,
    )
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        ch = open_clickhouse(settings, role="client")
        yield settings, ch
        ch.close()
    finally:
        worker.stop()


def _send(settings: Settings, *events: Any, raw: list[bytes] | None = None) -> None:
    async def go() -> None:
        topics = Topics(settings.topic_prefix)
        async with Emitter(
            settings.kafka_bootstrap or "", topics=topics, signer=record_signer(settings)
        ) as em:
            for value in raw or []:
                await em.send_raw(topics.sessions, value, key=b"s-bad")
            for event in events:
                await em.emit(event)

    asyncio.run(go())
    asyncio.run(wait_for_zero_lag(settings, settings.kafka_bootstrap or "", timeout=120))


def test_non_avro_bytes_are_dead_lettered_and_processing_continues(
    pipeline: tuple[Settings, ClickHouse],
) -> None:
    settings, ch = pipeline
    after = turn(session_id="s-after-garbage", input_tokens=4242)
    _send(settings, after, raw=[b"definitely not avro", b"\x00\x00\x0f\x42\x3f\x02xx"])

    deadletter = Topics(settings.topic_prefix).deadletter
    records = asyncio.run(read_topic(settings.kafka_bootstrap or "", deadletter))
    letters = [Codec(EmbeddedRegistry()).decode(r.value).event for r in records]
    assert all(isinstance(letter, RecordDeadLettered) for letter in letters)
    by_raw = {letter.raw_value: letter for letter in letters}  # type: ignore[union-attr]
    garbage = by_raw[b"definitely not avro"]
    assert garbage.reason_code == "bad_framing"
    assert garbage.source_topic == Topics(settings.topic_prefix).sessions
    assert garbage.raw_key == b"s-bad"
    assert "magic byte" in garbage.reason
    assert by_raw[b"\x00\x00\x0f\x42\x3f\x02xx"].reason_code == "unknown_schema"

    rows = ch.query("SELECT reason_code, count() FROM dead_letters FINAL GROUP BY reason_code").rows
    assert dict(rows) == {"bad_framing": 1, "unknown_schema": 1}
    # The valid event after the garbage still arrived.
    tokens = ch.query(
        "SELECT input_tokens FROM turns FINAL WHERE session_id = {s:String}",
        {"s": "s-after-garbage"},
    ).rows
    assert tokens == [(4242,)]


def test_oversized_record_is_dead_lettered(pipeline: tuple[Settings, ClickHouse]) -> None:
    settings, ch = pipeline
    # Past the content bound too: built unvalidated, as a careless producer would.
    big = turn(session_id="s-big").model_copy(update={"content": "x" * (MAX_RECORD + 10)})
    _send(settings, raw=[Codec(EmbeddedRegistry()).encode(big)])
    rows = ch.query("SELECT count() FROM dead_letters FINAL WHERE reason_code = 'oversized'").rows
    assert rows == [(1,)]


def test_same_event_produced_twice_leaves_one_row(pipeline: tuple[Settings, ClickHouse]) -> None:
    settings, ch = pipeline
    started = session_started(session_id="s-twice")
    event = turn(session_id="s-twice", cost_usd_micros=1234)
    _send(settings, started, event, event)
    params = {"s": "s-twice"}
    archived = ch.query(
        "SELECT count(), uniqExact(event_id) FROM events_archive FINAL"
        " WHERE session_id = {s:String} AND NOT endsWith(topic, '.derived')",
        params,
    ).rows
    assert archived == [(3, 2)]  # the log holds both records; the event is one
    turns = ch.query(
        "SELECT count(), sum(cost_usd_micros) FROM turns FINAL WHERE session_id = {s:String}",
        params,
    ).rows
    assert turns == [(1, 1234)]


def _govstream(settings: Settings, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **as_environment(settings)}
    return subprocess.run(
        [sys.executable, "-m", "govstream.cli", *args],
        input=stdin, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_emit_cli_refuses_a_file_with_an_invalid_line(
    pipeline: tuple[Settings, ClickHouse], tmp_path: Path
) -> None:
    settings, _ = pipeline
    topic = Topics(settings.topic_prefix).sessions
    before = len(asyncio.run(read_topic(settings.kafka_bootstrap or "", topic)))
    good = to_json_line(turn(session_id="s-cli-refused"))
    result = _govstream(
        settings, "emit", "-", stdin=f'{good}\n{{"type":"TurnCompleted"}}\nnot json\n'
    )
    assert result.returncode == 2
    assert "line 2: TurnCompleted:" in result.stderr
    assert "line 3: not JSON" in result.stderr
    assert "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(asyncio.run(read_topic(settings.kafka_bootstrap or "", topic))) == before


def test_emit_cli_sends_valid_lines(pipeline: tuple[Settings, ClickHouse]) -> None:
    settings, ch = pipeline
    lines = [to_json_line(turn(session_id="s-cli", input_tokens=n)) for n in (1, 2, 3)]
    result = _govstream(settings, "emit", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent 3 events")
    asyncio.run(wait_for_zero_lag(settings, settings.kafka_bootstrap or "", timeout=120))
    rows = ch.query(
        "SELECT sum(input_tokens) FROM turns FINAL WHERE session_id = {s:String}", {"s": "s-cli"}
    ).rows
    assert rows == [(6,)]
