"""The emitter SDK and `govstream lag` against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from events.codec import Codec
from events.emitter import Emitter, SyncEmitter
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.settings import as_environment
from streams.admin import ensure_topics, group_lag
from tests.conftest import isolated_settings
from tests.factories import session_started, tenant_profile, turn
from tests.kafka_io import read_topic

pytestmark = pytest.mark.integration


def test_sync_emitter_sends_keyed_validated_events(local_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap)
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(local_bootstrap, topics, 3))
    events = [session_started(session_id="s-sync"), turn(session_id="s-sync", input_tokens=9)]
    with SyncEmitter(local_bootstrap, topics=topics) as emitter:
        for event in events:
            emitter.emit(event)
        emitter.emit(tenant_profile(tenant_id="t-sync"))
        with pytest.raises(ValueError, match="input_tokens"):
            emitter.emit({**turn().model_dump(mode="json"), "type": "TurnCompleted",
                          "input_tokens": -1})  # fmt: skip
    records = [(r.key, r.value) for r in asyncio.run(read_topic(local_bootstrap, topics.sessions))]
    codec = Codec(EmbeddedRegistry())
    assert [k for k, _ in records] == [b"t-001", b"t-001"]  # the tenant log: keyed by tenant
    assert [codec.decode(v).event for _, v in records] == events  # order kept per session
    tenants = [(r.key, r.value) for r in asyncio.run(read_topic(local_bootstrap, topics.tenants))]
    assert [k for k, _ in tenants] == [b"t-sync"]


def test_emit_many_refuses_the_whole_batch_on_one_invalid_event(
    local_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap)
    topics = Topics(settings.topic_prefix)

    async def go() -> None:
        await ensure_topics(local_bootstrap, topics, 3)
        async with Emitter(local_bootstrap, topics=topics) as emitter:
            bad = {"type": "TurnCompleted", "event_id": "x"}
            with pytest.raises(ValueError):
                await emitter.emit_many([turn(), bad])
            assert emitter.sent == 0

    asyncio.run(go())
    assert asyncio.run(read_topic(local_bootstrap, topics.sessions)) == []


def test_lag_wait_zero_times_out_when_nobody_consumes(local_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap)
    topics = Topics(settings.topic_prefix)

    async def go() -> None:
        await ensure_topics(local_bootstrap, topics, 3)
        async with Emitter(local_bootstrap, topics=topics) as emitter:
            await emitter.emit_many([turn(session_id=f"s-{n}") for n in range(5)])

    asyncio.run(go())
    rows = asyncio.run(group_lag(local_bootstrap, settings.sink_group, [topics.sessions]))
    assert sum(r.lag for r in rows) == 5
    env = {**os.environ, **as_environment(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "lag", "--wait-zero", "--timeout", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "govstream: lag still 5 after 1s"
    both = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "lag", "--group", "all"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    assert lines[-1] == "total lag 10"  # 5 for the sink, 5 for the governor
    # sessions, tenants and derived: 3 topics x 3 partitions
    assert sum(line.startswith(f"{settings.sink_group} ") for line in lines) == 9
    # the tenant log and the tenants topic: 2 topics x 3 partitions
    assert sum(line.startswith(f"{settings.governor_group} ") for line in lines) == 6
