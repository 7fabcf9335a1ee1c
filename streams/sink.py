"""Ingest + ClickHouse sink: decode, dead-letter what fails, insert in batches.

It runs inside the Faust worker as a service with its own aiokafka consumer
group, not as a Faust agent: Faust's per-event stream machinery tops out near
11,500 events/s on this 2-core machine even with an agent that does nothing
(measured, see BENCHMARKS.md), while the sink has to keep up with the whole
log.

A batch moves through three stages, each overlapping the next batch:
fetch (aiokafka, on the loop) -> prepare (decode, validate, serialize rows:
streams/prepare.py, in decoder processes so the GIL does not serialize it
with the rest) -> insert (chDB/HTTP on a single-thread executor; ClickHouse
parses the JSON rows in C++ with the GIL released). Batches are inserted and
committed strictly in fetch order.

Delivery is at-least-once: a batch's offsets are committed only after its rows
are in ClickHouse and its dead letters are acknowledged by Kafka. A replayed
batch changes nothing: tables are ReplacingMergeTree keyed by row identity and
dead letters carry ids derived from their source position.

It reads the producer topics and the derived topic (Topics.sink_inputs), where
the processors write partly inside Kafka transactions: read_committed, and
what it commits is the consumer's position after a fetch, not the last
record's offset + 1. A transaction's commit marker takes an offset of its own
after the last record, which the consumer steps over; committing last + 1
would leave the group one behind the end offset for ever (phantom lag). A
marker that arrives in a fetch with no records moves the position alone, so
when idle the sink commits the positions it has not committed yet.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from events import kafka_security
from events.codec import Codec
from events.registry import RegistryUnavailable
from events.topics import Topics
from projections.redaction import Redactor
from sql.client import ClickHouse
from streams.ingest import InputRules
from streams.prepare import JSON_TABLES, PreparedBatch, RawRecord, init_process, prepare_batch
from streams.rows import TABLE_COLUMNS, use_redactor

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
        active = 0.0
        if self.first_fetch is not None and self.last_commit is not None:
            active = self.last_commit - self.first_fetch
        return {
            "records": self.records,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "decode_seconds": round(self.decode_seconds, 3),
            "insert_seconds": round(self.insert_seconds, 3),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            # first records fetched -> latest batch committed: the sink's busy span
            "active_seconds": round(active, 4),
        }


def write_batch(ch: ClickHouse, batch: PreparedBatch) -> float:
    """Insert a prepared batch; return the seconds it took (measured in the executor)."""
    started = time.perf_counter()
    # Typed tables before the archive: the archive is the record of what has
    # been sunk, so it is written last.
    if batch.dead_letter_rows:
        ch.insert("dead_letters", batch.dead_letter_rows, TABLE_COLUMNS["dead_letters"])
    for table in JSON_TABLES:
        if batch.rows[table]:
            ch.insert_json(table, TABLE_COLUMNS[table], batch.bodies[table])
    return time.perf_counter() - started


@dataclass
class _Fetched:
    prepared: asyncio.Future[PreparedBatch]
    offsets: dict[TopicPartition, int]  # to commit once inserted
    first: dict[TopicPartition, int]  # to seek back to if the registry is down


@dataclass
class _Inserting:
    future: asyncio.Future[float]
    offsets: dict[TopicPartition, int]
    batch: PreparedBatch


class _CommitBeforeRevoke(ConsumerRebalanceListener):
    """Finish and commit everything in flight before partitions move away."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self.sink.busy:
            # The consume loop is moving a batch and may be waiting on a commit
            # that waits for this rebalance: don't wait for it. A commit that
            # fails re-delivers records, which the idempotent tables absorb.
            return
        await self.sink.flush()

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
        processes: int,
        schema_registry_url: str | None,
        rules: InputRules,
        redaction_patterns: dict[str, str] | None = None,
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
        self.processes = processes
        self.schema_registry_url = schema_registry_url
        self.rules = rules
        self.redaction_patterns = dict(redaction_patterns or {})
        # In-process batches (processes=0) redact here; pool processes in init_process.
        use_redactor(Redactor.build(self.redaction_patterns))
        self.stats = SinkStats()
        self._pool: ProcessPoolExecutor | None = None
        self._fetched: deque[_Fetched] = deque()
        # One coroutine at a time moves batches along (the consume loop, the
        # rebalance listener, shutdown), so none is taken or committed twice.
        self._pipeline = asyncio.Lock()
        self._inserting: _Inserting | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}  # positions this sink committed

    async def on_start(self) -> None:
        if self.processes > 0:
            # spawn, not fork: this process already runs threads (chDB, Kafka).
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_process,
                initargs=(
                    self.schema_registry_url,
                    self.codec.max_record_bytes,
                    self.rules,
                    self.redaction_patterns,
                ),
            )
            # Start the decoders now (spawn + imports take a second or two), not
            # on the first batch.
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, prepare_batch, [])
                    for _ in range(self.processes)
                ),
            )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            **kafka_security.current().client_options(),
            client_id=f"{self.group_id}-deadletters",
            enable_idempotence=True,
            acks="all",
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **kafka_security.current().client_options(),
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
            list(self.topics.sink_inputs()), listener=_CommitBeforeRevoke(self)
        )
        await self._consumer.start()

    async def on_stop(self) -> None:
        # Runs after the consume task is cancelled: finish what is in flight.
        try:
            await self.flush()
        except RegistryUnavailable:
            pass  # uncommitted: the next start reads those records again
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self._producer is not None:
                await self._producer.stop()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, records: list[RawRecord]) -> asyncio.Future[PreparedBatch]:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            future: asyncio.Future[PreparedBatch] = loop.create_future()
            try:
                future.set_result(prepare_batch(records, self.codec, self.rules))
            except RegistryUnavailable as exc:
                future.set_exception(exc)
            return future
        return loop.run_in_executor(self._pool, prepare_batch, records)

    @Service.task
    async def _consume(self) -> None:
        assert self._consumer is not None
        timeout_ms = int(self.flush_seconds * 1000)
        depth = max(1, self.processes)  # batches being prepared at once
        backoff = 0.0
        while not self.should_stop:
            fetched = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.batch_size
            )
            if fetched:
                if self.stats.first_fetch is None:
                    self.stats.first_fetch = time.monotonic()
                self._fetched.append(await self._submit(fetched))
            try:
                async with self._pipeline:
                    # Keep `depth` batches preparing; when idle, finish everything.
                    while self._fetched and (
                        len(self._fetched) > depth
                        or self._fetched[0].prepared.done()
                        or not fetched
                    ):
                        await self._insert_next()
                    if not fetched:
                        await self._finish_insert()
                        await self._commit_positions()
                backoff = 0.0
            except RegistryUnavailable as exc:
                # Not the records' fault: read them again once the registry answers.
                backoff = min(2 * backoff, 30.0) if backoff else 1.0
                log.error("schema registry unavailable, retrying in %.0fs: %s", backoff, exc)
                async with self._pipeline:
                    await self._rewind()
                await self.sleep(backoff)

    async def _submit(self, fetched: dict[TopicPartition, list[Any]]) -> _Fetched:
        assert self._consumer is not None
        records: list[RawRecord] = []
        offsets: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, int] = {}
        for tp, batch in fetched.items():
            records.extend(
                (tp.topic, tp.partition, r.offset, r.timestamp, r.value, r.key, tuple(r.headers))
                for r in batch
            )
            first[tp] = batch[0].offset
            # The position, not batch[-1].offset + 1: past any transaction
            # marker the fetch stepped over after the last record.
            offsets[tp] = max(batch[-1].offset + 1, await self._consumer.position(tp))
        return _Fetched(self._prepare(records), offsets, first)

    async def _rewind(self) -> None:
        """Drop the batches not yet inserted and seek back to their first records."""
        await self._finish_insert()
        assert self._consumer is not None
        positions: dict[TopicPartition, int] = {}
        while self._fetched:
            pending = self._fetched.popleft()
            for tp, offset in pending.first.items():
                positions.setdefault(tp, offset)
            pending.prepared.cancel()
        for tp, offset in positions.items():
            self._consumer.seek(tp, offset)

    async def _insert_next(self) -> None:
        """Take the oldest prepared batch: dead letters out, then its insert."""
        batch = await self._fetched[0].prepared
        pending = self._fetched.popleft()
        self.stats.decode_seconds += batch.seconds
        await self._send_dead_letters(batch)
        await self._finish_insert()  # one insert in flight, in fetch order
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, write_batch, self.clickhouse, batch
        )
        self._inserting = _Inserting(future, pending.offsets, batch)

    async def _send_dead_letters(self, batch: PreparedBatch) -> None:
        assert self._producer is not None
        for reason in batch.dead_letter_reasons:
            log.warning("dead letter %s", reason)
        futures = [
            await self._producer.send(self.topics.deadletter, value=value, key=key)
            for key, value in batch.dead_letters
        ]
        if futures:
            await asyncio.gather(*futures)

    async def _finish_insert(self) -> None:
        """Wait for the in-flight insert, then commit its offsets."""
        inserting, self._inserting = self._inserting, None
        if inserting is None:
            return
        self.stats.insert_seconds += await inserting.future
        await self._commit(inserting.offsets)
        batch = inserting.batch
        self.stats.records += batch.records
        self.stats.dead_letters += len(batch.dead_letters)
        self.stats.events = self.stats.records - self.stats.dead_letters
        self.stats.batches += 1
        self.stats.last_commit = time.monotonic()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner re-reads these records and the
            # idempotent tables absorb the repeat.
            log.warning("sink commit skipped after rebalance: %s", exc)
            return
        self._committed.update(offsets)

    async def _commit_positions(self) -> None:
        """Idle, everything inserted: commit positions that moved without records.

        A fetch that held only a transaction marker (or aborted records)
        advances the position and returns nothing; without this the group
        would lag by that marker until the partition's next record.
        """
        assert self._consumer is not None
        moved: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            try:
                position = await asyncio.wait_for(self._consumer.position(tp), 1.0)
            except (IllegalStateError, TimeoutError):
                continue  # being revoked, or no position yet: nothing read to commit
            if self._committed.get(tp, -1) < position:
                moved[tp] = position
        if moved:
            await self._commit(moved)

    @property
    def busy(self) -> bool:
        return self._pipeline.locked()

    async def flush(self) -> None:
        """Prepare, insert and commit everything fetched so far."""
        async with self._pipeline:
            while self._fetched:
                await self._insert_next()
            await self._finish_insert()
