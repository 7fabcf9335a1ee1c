"""Reading a topic back in tests: every committed record, from the beginning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel

from events.codec import Codec
from events.emitter import Emitter
from events.models import SessionEvent
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.settings import Settings, record_signer
from streams.admin import partitions_of


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 20.0) -> list[ConsumerRecord]:
    """All records up to the end offsets seen at the start (read_committed), in
    partition order; stops at the end or after `timeout` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    tps = await partitions_of(bootstrap, [topic])
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        return records
    finally:
        await consumer.stop()


def read_events_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[SessionEvent]], bool],
    timeout: float = 60.0,
) -> list[SessionEvent]:
    """Decode `topic` from the beginning, again and again, until `done(events)` or timeout.

    Committed records only (read_committed): what a downstream consumer sees.
    """
    codec = Codec(EmbeddedRegistry())
    deadline = time.monotonic() + timeout
    while True:
        records = asyncio.run(read_topic(bootstrap, topic))
        decoded = (codec.decode(r.value).event for r in records)
        events = [e for e in decoded if isinstance(e, SessionEvent)]
        if done(events) or time.monotonic() >= deadline:
            return events
        time.sleep(0.3)


def send_events(settings: Settings, events: Sequence[BaseModel]) -> None:
    """Send events to their topics through the Emitter, as a runtime would."""

    async def go() -> None:
        topics = Topics(settings.topic_prefix)
        async with Emitter(
            settings.kafka_bootstrap or "", topics=topics, signer=record_signer(settings)
        ) as emitter:
            await emitter.emit_many(list(events))

    asyncio.run(go())


def wait_for_partitions(url: str, api_key: str, timeout: float = 40.0) -> None:
    """Until a worker owns its partitions (its admission API answers 503 before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(
            f"{url}/v1/budgets/t-none", headers={"Authorization": f"Bearer {api_key}"}, timeout=5
        )
        if reply.status_code == 200:
            return
        assert reply.status_code == 503, reply.text
        time.sleep(0.2)
    raise AssertionError("the worker never owned its partitions")
