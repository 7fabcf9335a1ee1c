"""The ingest + sink agent: decode, dead-letter what fails, batch into ClickHouse.

One agent with concurrency=1 (Faust can commit past an unprocessed message
with concurrency > 1, faust-streaming#606). Events are taken in batches; a
batch's offsets are acknowledged only after its rows are in ClickHouse, so
delivery is at-least-once, and the tables' ReplacingMergeTree keys make a
redelivered record collapse to one row. ClickHouse calls run on a single-thread
executor so the event loop keeps serving Kafka heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import faust
from faust.types import EventT

from events.codec import Codec
from events.topics import Topics
from sql.client import ClickHouse
from streams.ingest import Rejected, SourceRecord, ingest
from streams.rows import TABLE_COLUMNS, Batch, build_batch

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    insert_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "records": self.records,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "insert_seconds": round(self.insert_seconds, 3),
            "records_per_second": round(self.records / elapsed, 1),
        }


def write_batch(ch: ClickHouse, batch: Batch) -> None:
    # Typed tables before the archive: the archive is the record of what has
    # been sunk, so it is written last.
    for table in ("turns", "sessions", "dead_letters", "events_archive"):
        rows = batch.rows[table]
        if rows:
            ch.insert(table, rows, TABLE_COLUMNS[table])


def _source(event: EventT) -> SourceRecord:
    message = event.message
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000),
        key=message.key,
        value=message.value,
    )


def register_sink(
    app: faust.App,
    *,
    topics: Topics,
    codec: Codec,
    clickhouse: ClickHouse,
    executor: Executor,
    batch_size: int,
    flush_seconds: float,
) -> SinkStats:
    stats = SinkStats()
    source = app.topic(
        topics.sessions, topics.tenants, key_serializer="raw", value_serializer="raw"
    )
    deadletter = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="govstream.sink", concurrency=1)
    async def sink(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(batch_size, within=flush_seconds):
            items = [ingest(codec, _source(e)) for e in events]
            rejected: Sequence[Rejected] = [i for i in items if isinstance(i, Rejected)]
            for item in rejected:
                letter = item.dead_letter
                log.warning(
                    "dead letter %s/%s/%s: %s",
                    letter.source_topic, letter.source_partition, letter.source_offset,
                    letter.reason_code,
                )  # fmt: skip
                await deadletter.send(key=item.source.key, value=codec.encode(letter))
            batch = build_batch(items)
            started = time.perf_counter()
            await loop.run_in_executor(executor, write_batch, clickhouse, batch)
            stats.insert_seconds += time.perf_counter() - started
            stats.records += len(items)
            stats.dead_letters += len(rejected)
            stats.events += len(items) - len(rejected)
            stats.batches += 1

    return stats
