"""Ingest + ClickHouse sink: decode, dead-letter what fails, insert in batches.

It runs inside the Faust worker as a service with its own aiokafka consumer
group, not as a Faust agent: Faust's per-event stream machinery tops out near
11,500 events/s on this 2-core machine even with an agent that does nothing
(measured, see BENCHMARKS.md), while the sink has to keep up with the whole
log. Batches are consumed with getmany, decoded on the loop, and inserted on a
single-thread executor (chDB calls block; the loop must keep heartbeating)
while the next batch is fetched and decoded.

Delivery is at-least-once: a batch's offsets are committed only after its rows
are in ClickHouse and its dead letters are acknowledged by Kafka. A replayed
batch changes nothing: tables are ReplacingMergeTree keyed by row identity and
dead letters carry ids derived from their source position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from events.codec import Codec
from events.registry import RegistryUnavailable
from events.topics import Topics
from sql.client import ClickHouse
from streams.ingest import Ingested, Rejected, SourceRecord, ingest
from streams.rows import TABLE_COLUMNS, Batch, build_batch

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    insert_seconds: float = 0.0
    decode_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    first_fetch: float | None = None  # when the first records arrived
    last_commit: float | None = None  # when the latest batch was committed

    def as_dict(self) -> dict[str, float]:
        return {
            "records": self.records,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "decode_seconds": round(self.decode_seconds, 3),
            "insert_seconds": round(self.insert_seconds, 3),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            # first records fetched -> latest batch committed: the sink's busy span
            "active_seconds": round((self.last_commit or 0) - (self.first_fetch or 0), 4)
            if self.first_fetch and self.last_commit
            else 0.0,
        }


def write_batch(ch: ClickHouse, batch: Batch) -> float:
    """Insert a batch; return the seconds it took (measured in the executor)."""
    started = time.perf_counter()
    # Typed tables before the archive: the archive is the record of what has
    # been sunk, so it is written last.
    for table in ("turns", "sessions", "dead_letters", "events_archive"):
        rows = batch.rows[table]
        if rows:
            ch.insert(table, rows, TABLE_COLUMNS[table])
    return time.perf_counter() - started


@dataclass
class _InFlight:
    future: asyncio.Future[float]
    offsets: dict[TopicPartition, int]
    size: int


class _CommitBeforeRevoke(ConsumerRebalanceListener):
    """Finish and commit the in-flight batch before partitions move away."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.sink.drain()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("sink assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class ClickHouseSink(Service):
    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Topics,
        codec: Codec,
        clickhouse: ClickHouse,
        executor: Executor,
        batch_size: int,
        flush_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.codec = codec
        self.clickhouse = clickhouse
        self.executor = executor
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.stats = SinkStats()
        self._inflight: _InFlight | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group_id}-deadletters",
            enable_idempotence=True,
            acks="all",
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.batch_size,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._consumer.subscribe(
            [self.topics.sessions, self.topics.tenants], listener=_CommitBeforeRevoke(self)
        )
        await self._consumer.start()

    async def on_stop(self) -> None:
        # Runs after the consume task is cancelled: finish what is in flight.
        try:
            await self.drain()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self._producer is not None:
                await self._producer.stop()

    @Service.task
    async def _consume(self) -> None:
        assert self._consumer is not None
        timeout_ms = int(self.flush_seconds * 1000)
        backoff = 0.0
        while not self.should_stop:
            fetched = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.batch_size
            )
            if not fetched:
                await self.drain()
                continue
            if self.stats.first_fetch is None:
                self.stats.first_fetch = time.monotonic()
            started = time.perf_counter()
            try:
                items, offsets = self._ingest(fetched)
            except RegistryUnavailable as exc:
                # Not the records' fault: read them again once the registry answers.
                backoff = min(2 * backoff, 30.0) if backoff else 1.0
                log.error("schema registry unavailable, retrying in %.0fs: %s", backoff, exc)
                for tp, records in fetched.items():
                    self._consumer.seek(tp, records[0].offset)
                await self.sleep(backoff)
                continue
            backoff = 0.0
            batch = build_batch(items)
            self.stats.decode_seconds += time.perf_counter() - started
            await self._dead_letter(items)
            await self.drain()  # one insert in flight at a time, in order
            future = asyncio.get_running_loop().run_in_executor(
                self.executor, write_batch, self.clickhouse, batch
            )
            self._inflight = _InFlight(future, offsets, len(items))

    def _ingest(
        self, fetched: dict[TopicPartition, list[Any]]
    ) -> tuple[list[Ingested | Rejected], dict[TopicPartition, int]]:
        items: list[Ingested | Rejected] = []
        offsets: dict[TopicPartition, int] = {}
        codec = self.codec
        for tp, records in fetched.items():
            for r in records:
                source = SourceRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                items.append(ingest(codec, source))
            offsets[tp] = records[-1].offset + 1
        return items, offsets

    async def _dead_letter(self, items: list[Ingested | Rejected]) -> None:
        assert self._producer is not None
        pending = []
        for item in items:
            if isinstance(item, Rejected):
                letter = item.dead_letter
                log.warning(
                    "dead letter %s/%s/%s: %s: %s",
                    letter.source_topic, letter.source_partition, letter.source_offset,
                    letter.reason_code, letter.reason,
                )  # fmt: skip
                pending.append(
                    await self._producer.send(
                        self.topics.deadletter,
                        value=self.codec.encode(letter),
                        key=item.source.key,
                    )
                )
                self.stats.dead_letters += 1
        if pending:
            await asyncio.gather(*pending)

    async def drain(self) -> None:
        """Wait for the in-flight insert, then commit its offsets."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        self.stats.insert_seconds += await inflight.future
        self.stats.records += inflight.size
        self.stats.batches += 1
        assert self._consumer is not None
        try:
            await self._consumer.commit(inflight.offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner re-reads these records and the
            # idempotent tables absorb the repeat.
            log.warning("sink commit skipped after rebalance: %s", exc)
        self.stats.last_commit = time.monotonic()
        self.stats.events = self.stats.records - self.stats.dead_letters
