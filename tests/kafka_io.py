"""Reading a topic back in tests: every committed record, from the beginning."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

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
