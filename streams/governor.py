"""The governor's adapter: a batch consume-transform-produce Service, exactly once.

The pure fold (projections/governor) decides; this module only moves records:

- one aiokafka consumer in the governor's own group (read_committed, manual
  commits) over the sessions topic (the tenant-keyed log) and the tenants
  topic, assigned co-partitioned (`OwnerAssignor`: partition p of both to one
  worker, and every worker learns who owns which partition and where its web
  port is);
- per assigned partition a transactional producer whose transactional_id is
  fixed per (group, partition): starting it fences a zombie that still holds
  the partition. It starts before the state is restored from the changelog;
- a checkpoint every N records or T ms per partition puts, in one
  transaction: the derived events, the denials for review, the tenant
  profiles relayed from the tenants topic into the tenant's log, the
  changelog records of the state keys changed since the last checkpoint (one
  per key, compacted topic) and the consumer offsets. The state's overlay
  becomes committed state only once the transaction has committed; on an
  abort it is dropped and the partition is read again from its committed
  offsets; a fenced producer drops the partition;
- an exception in the fold never commits past its record: the partition
  stops, /v1/health says why, and after a bounded number of retries from the
  last checkpoint the worker exits non-zero.

Admission requests (streams/admission.py) are appended to the tenant's log
with the worker's signature and answered when the fold reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import ProducerFenced
from mode import Service

from events import kafka_security
from events.codec import Codec
from events.models import AdmissionRequested, PolicyDecided, SessionEvent
from events.topics import Topics
from projections.governor.config import GovernorConfig
from projections.governor.fold import step
from projections.governor.state import PartitionState, canonical
from streams.ingest import Ingested, InputRules, Rejected, ingest
from streams.log_reader import log_record, read_topics

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # fold failures of one partition before the worker gives up


# --- who owns which partition --------------------------------------------------------------


class OwnerAssignor(AbstractPartitionAssignor):
    """Co-partitioned assignment, and the owners' web addresses for every member.

    Partition p of every subscribed topic goes to the same member (the tenants
    topic's partition p holds the profiles of the tenants whose sessions are
    in partition p). Each member sends its URL as metadata; the leader hands
    every member the whole map, so a request for a tenant is forwarded to the
    worker that owns the tenant's partition.
    """

    name = "govstream-owner"
    version = 0

    def __init__(self, url: str) -> None:
        self.url = url
        self.owners: dict[int, str] = {}  # partition -> owner URL

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), self.url.encode())

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        counts = [len(cluster.partitions_for_topic(t) or ()) for t in topics]
        partitions = range(max(counts, default=0))
        ordered = sorted(members)
        owner_of = {p: ordered[p % len(ordered)] for p in partitions}
        urls = {ordered.index(m): members[m].user_data.decode() for m in ordered}
        owners = {str(p): urls[ordered.index(owner_of[p])] for p in partitions}
        user_data = orjson.dumps(owners)
        out = {}
        for member in ordered:
            mine = [p for p in partitions if owner_of[p] == member]
            plan = [
                (t, [p for p in mine if p in (cluster.partitions_for_topic(t) or ())])
                for t in topics
            ]
            out[member] = ConsumerProtocolMemberAssignment(self.version, plan, user_data)
        return out

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        try:
            self.owners = {int(p): url for p, url in orjson.loads(assignment.user_data).items()}
        except ValueError:
            self.owners = {}


# --- one partition ---------------------------------------------------------------------------


@dataclass
class Partition:
    """What the worker holds for one partition of the tenant log."""

    number: int
    producer: AIOKafkaProducer
    state: PartitionState = field(default_factory=PartitionState)
    derived: list[SessionEvent] = field(default_factory=list)
    relays: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)  # to commit next
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    pending: int = 0  # records folded since the last checkpoint
    since: float = field(default_factory=time.monotonic)
    ready: bool = False  # restored and reading
    failed: str | None = None
    failures: int = 0
    answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    folded: int = 0  # records folded since assignment (health)
    restoring: asyncio.Task[None] | None = None
    checkpointing: asyncio.Task[None] | None = None  # the transaction in flight
    epoch: int = 0  # bumped by every rewind: records fetched before it are stale

    @property
    def dirty(self) -> bool:
        return bool(self.pending or self.relays or self.state.dirty)


@dataclass
class GovernorStats:
    records: int = 0
    derived: int = 0
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0  # inside transactions (they overlap the fold)
    checkpoint_wait_seconds: float = 0.0  # the loop waiting for one in flight
    fold_seconds: float = 0.0
    restored_keys: int = 0
    restore_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float]:
        return {
            "records": self.records,
            "derived": self.derived,
            "checkpoints": self.checkpoints,
            "checkpoint_seconds": round(self.checkpoint_seconds, 3),
            "checkpoint_wait_seconds": round(self.checkpoint_wait_seconds, 3),
            "fold_seconds": round(self.fold_seconds, 3),
            "restored_keys": self.restored_keys,
            "restore_seconds": round(self.restore_seconds, 3),
        }


@dataclass(frozen=True)
class Drill:
    """Faults on purpose, for tests and game days; all off by default."""

    fail_on: str | None = None  # folding this event type raises, as a bug would
    checkpoint_pause_ms: int = 0  # inside each transaction, before its commit
    fetch_pause_ms: int = 0  # after each fetch: a slowed consumer


class DrillFault(Exception):
    """Raised by the fail_on drill."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.governor.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.governor.acquire({tp.partition for tp in assigned})


class Governor(Service):
    """The batch consume-transform-produce loop around `projections.governor.fold.step`."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        url: str,
        topics: Topics,
        codec: Codec,
        rules: InputRules,
        config: GovernorConfig,
        checkpoint_records: int = 5_000,
        checkpoint_ms: int = 200,
        fetch_records: int = 5_000,
        drill: Drill | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap, self.group_id, self.topics = bootstrap, group_id, topics
        self.codec, self.rules, self.config = codec, rules, config
        self.checkpoint_records, self.checkpoint_ms = checkpoint_records, checkpoint_ms
        self.fetch_records = fetch_records
        self.drill = drill or Drill()
        self.changelog = topics.governor_changelog(group_id)
        self.assignor = OwnerAssignor(url)
        self.partitions: dict[int, Partition] = {}
        self.stats = GovernorStats()
        self.failure: str | None = None  # set when the worker gives up
        self._consumer: AIOKafkaConsumer | None = None
        self._appender: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()  # checkpoints and rebalances, one at a time

    # --- life cycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        self._appender = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            **kafka_security.current().client_options(),
            client_id=f"{self.group_id}-appender",
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
        )
        await self._appender.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **kafka_security.current().client_options(),
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(self.assignor,),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        self._consumer.subscribe(
            [self.topics.sessions, self.topics.tenants], listener=_Rebalance(self)
        )
        await self._consumer.start()

    async def on_stop(self) -> None:
        try:
            async with self._lock:
                for part in list(self.partitions.values()):
                    await self._settled(part)
                    if part.failed is None and self.partitions.get(part.number) is part:
                        await self._checkpoint(part)
        finally:
            for part in list(self.partitions.values()):
                await part.producer.stop()
            self.partitions.clear()
            if self._consumer is not None:
                await self._consumer.stop()
            if self._appender is not None:
                await self._appender.stop()

    # --- assignment ---------------------------------------------------------------------

    def _tps(self, number: int) -> tuple[TopicPartition, TopicPartition]:
        return (
            TopicPartition(self.topics.sessions, number),
            TopicPartition(self.topics.tenants, number),
        )

    async def acquire(self, numbers: set[int]) -> None:
        async with self._lock:
            for number in sorted(numbers - set(self.partitions)):
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    **kafka_security.current().client_options(),
                    client_id=f"{self.group_id}-txn-{number}",
                    transactional_id=f"{self.group_id}-governor-{number}",
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=5,
                    # Changelog values are a few KB each: the default 16 KiB batch would
                    # make a produce request per handful of them.
                    max_batch_size=1024 * 1024,
                )
                await producer.start()  # fences a zombie holding this partition
                part = Partition(number, producer, PartitionState(number))
                self.partitions[number] = part
                # Restored outside the rebalance listener: aiokafka sends no heartbeat
                # while a listener runs, and a restore longer than the session timeout
                # would get this member expelled, re-assigned, and restoring again.
                assert self._consumer is not None
                self._consumer.pause(*self._tps(number))
                part.restoring = asyncio.create_task(self._restore_or_halt(part))

    async def release(self, numbers: set[int]) -> None:
        async with self._lock:
            for number in sorted(numbers & set(self.partitions)):
                part = self.partitions[number]
                if part.restoring is not None and not part.restoring.done():
                    part.restoring.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await part.restoring
                else:
                    await self._settled(part)
                    if self.partitions.get(number) is not part:
                        continue  # fenced meanwhile, and dropped
                    if part.ready and part.failed is None:
                        try:
                            await self._checkpoint(part)
                        except Exception:  # the new owner reads again from the last commit
                            log.exception("governor: checkpoint on revoke of %d failed", number)
                await self._drop(part, "the partition moved to another worker")

    async def _drop(self, part: Partition, why: str) -> None:
        if self.partitions.get(part.number) is part:
            del self.partitions[part.number]
        for future in part.answers.values():
            if not future.done():
                future.set_exception(PartitionMoved(why))
        await part.producer.stop()

    async def _restore_or_halt(self, part: Partition) -> None:
        """Restore, retried a bounded number of times; then the partition halts (the
        loop stops the worker: it never folds on a partial state)."""
        for attempt in range(MAX_RETRIES + 1):
            try:
                await self._restore(part)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("governor: restore of partition %d failed", part.number)
                part.state = PartitionState(part.number)
                if attempt == MAX_RETRIES:
                    part.failed = f"restore failed: {type(exc).__name__}: {exc}"
                    part.failures = MAX_RETRIES + 1
                    return
                await asyncio.sleep(0.5 * 2**attempt)

    async def _restore(self, part: Partition) -> None:
        """The partition's state from its changelog (every key's last value), then the
        committed offsets of the inputs; then the partition is read again."""
        started = time.perf_counter()
        keys = 0
        async for batch in read_topics(self.bootstrap, [self.changelog], partitions=[part.number]):
            for record in batch:
                if record.key is not None:
                    part.state.restore(record.key.decode(), record.value)
                    keys += 1
            await asyncio.sleep(0)  # heartbeats, the web server and other partitions
        part.state.reindex()
        assert self._consumer is not None
        for tp in self._tps(part.number):
            offset = await self._consumer.committed(tp)
            part.committed[tp] = offset if offset is not None and offset >= 0 else 0
            # The restored state is as of the committed offsets: read from there.
            self._consumer.seek(tp, part.committed[tp])
        if self.partitions.get(part.number) is not part:
            return  # revoked meanwhile
        self._consumer.resume(*self._tps(part.number))
        part.since = time.monotonic()
        part.ready = True
        self.stats.restored_keys += keys
        self.stats.restore_seconds += time.perf_counter() - started
        log.info("governor: partition %d restored (%d records)", part.number, keys)

    # --- the loop -----------------------------------------------------------------------

    @Service.task
    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            fetched = await consumer.getmany(
                timeout_ms=self.checkpoint_ms, max_records=self.fetch_records
            )
            epochs = {number: part.epoch for number, part in self.partitions.items()}
            started = time.perf_counter()
            for tp, records in fetched.items():
                part = self.partitions.get(tp.partition)
                if part is None or part.failed is not None or not part.ready:
                    # Fetched before the partition was restored (aiokafka may
                    # fetch before the rebalance listener ran), or halted:
                    # never dropped, read again once it is ours and ready.
                    consumer.seek(tp, records[0].offset)
                    continue
                if part.epoch != epochs.get(tp.partition):
                    continue  # rewound since the fetch (and the consumer seeked back)
                if tp.topic == self.topics.tenants:
                    self._relay(part, records)
                else:
                    self._fold(part, tp, records)
                if part.failed is None:
                    position = await consumer.position(tp)
                    if part.epoch == epochs[tp.partition]:
                        part.positions[tp] = position
                await asyncio.sleep(0)  # let the web server answer between partitions
            self.stats.fold_seconds += time.perf_counter() - started
            if self.drill.fetch_pause_ms and fetched:
                await asyncio.sleep(self.drill.fetch_pause_ms / 1000)
            await self._checkpoints()
            await self._retry_failed()

    def _relay(self, part: Partition, records: list[Any]) -> None:
        """Profiles from the tenants topic go into the tenant's log, signed, in the
        next checkpoint's transaction: folded in log order like everything else."""
        for message in records:
            record = log_record(message)
            item = ingest(self.codec, record, self.rules)
            if isinstance(item, Rejected):
                continue  # the sink dead-letters it
            value = record.value or b""
            part.relays.append((record.key, value))
            part.pending += 1

    def _fold(self, part: Partition, tp: TopicPartition, records: list[Any]) -> None:
        state, config = part.state, self.config
        for message in records:
            record = log_record(message)
            item = ingest(self.codec, record, self.rules)
            if not isinstance(item, Ingested):
                part.pending += 1
                continue  # dead-lettered by the sink, applied by no one
            try:
                if type(item.event).__name__ == self.drill.fail_on:
                    raise DrillFault(f"drill: folding {self.drill.fail_on} fails")
                folded = step(state, item.event, record.timestamp_ms, config)
            except Exception as exc:  # a bug: halt here, never commit past this record
                self._fail(part, f"{type(exc).__name__}: {exc} (at {record.position})")
                log.exception("governor: fold failed at %s", record.position)
                return
            part.pending += 1
            part.folded += 1
            self.stats.records += 1
            if folded.derived:
                part.derived.extend(folded.derived)
            if folded.answer is not None and isinstance(item.event, AdmissionRequested):
                future = part.answers.pop(item.event.event_id, None)
                if future is not None and not future.done():
                    future.set_result(folded.answer)

    def _fail(self, part: Partition, reason: str) -> None:
        """Stop the partition at a record the fold failed on. What was folded since the
        last checkpoint is dropped; a checkpoint in flight may still commit (it holds
        only records before this one). `_retry_failed` reads again from the commit."""
        part.failed = reason
        part.failures += 1
        part.state.drop_dirty()
        self._clear_batch(part)
        assert self._consumer is not None
        self._consumer.pause(*self._tps(part.number))

    def _rewind(self, part: Partition) -> None:
        """A checkpoint failed: drop everything folded since the last commit (the
        sealed interval and the one after it); read again from the commit."""
        part.state.abort()
        self._clear_batch(part)
        assert self._consumer is not None
        for tp, offset in part.committed.items():
            self._consumer.seek(tp, offset)

    @staticmethod
    def _clear_batch(part: Partition) -> None:
        part.epoch += 1
        part.derived.clear()
        part.relays.clear()
        part.pending = 0
        part.positions.clear()

    async def _settled(self, part: Partition) -> None:
        """Wait for the partition's checkpoint in flight, if any, to end."""
        if part.checkpointing is not None:
            started = time.perf_counter()
            await part.checkpointing  # never raises: _checkpoint_or_reset handles it
            part.checkpointing = None
            self.stats.checkpoint_wait_seconds += time.perf_counter() - started

    async def _retry_failed(self) -> None:
        """Read a failed partition again from its last checkpoint, a bounded number of
        times; then give up and stop the worker (exit non-zero)."""
        for part in list(self.partitions.values()):
            if part.failed is None:
                continue
            if part.failures > MAX_RETRIES:
                self.failure = f"partition {part.number}: {part.failed}"
                log.error("governor: giving up: %s", self.failure)
                raise GovernorHalted(self.failure)
            await asyncio.sleep(min(5.0, 0.5 * 2**part.failures))
            await self._settled(part)
            if self.partitions.get(part.number) is not part:
                continue
            assert self._consumer is not None
            for tp, offset in part.committed.items():
                self._consumer.seek(tp, offset)
            self._consumer.resume(*self._tps(part.number))
            part.failed = None

    # --- checkpoints ----------------------------------------------------------------------

    async def _checkpoints(self) -> None:
        now = time.monotonic()
        due = [
            p
            for p in self.partitions.values()
            if p.failed is None
            and p.ready
            and p.dirty
            and (
                p.pending >= self.checkpoint_records or (now - p.since) * 1000 >= self.checkpoint_ms
            )
        ]
        if not due:
            return
        async with self._lock:
            for part in due:
                if part.checkpointing is not None and not part.checkpointing.done():
                    if part.pending < self.checkpoint_records:
                        continue  # due by time: it goes in the next round
                    await self._settled(part)  # at most one interval ahead of the commit
                if self.partitions.get(part.number) is not part or part.failed is not None:
                    continue
                if part.dirty or part.positions:
                    part.checkpointing = asyncio.create_task(self._checkpoint_or_reset(part))

    async def _checkpoint_or_reset(self, part: Partition) -> None:
        try:
            await self._checkpoint(part)
        except ProducerFenced:
            log.warning("governor: partition %d fenced by a newer owner", part.number)
            await self._drop(part, "the partition moved to another worker")
        except Exception:
            log.exception("governor: checkpoint of partition %d aborted", part.number)
            self._rewind(part)

    async def _checkpoint(self, part: Partition) -> None:
        """Derived events, relays, changed state and offsets in one transaction.

        The interval is sealed first (no await before): the loop folds the next
        records into a new overlay while this transaction is in flight.
        """
        if not part.dirty and not part.positions:
            return
        started = time.perf_counter()
        number, producer, signer = part.number, part.producer, self.rules.signer
        derived, relays, positions = part.derived, part.relays, part.positions
        part.derived, part.relays, part.positions = [], [], {}
        part.pending, part.since = 0, time.monotonic()
        changed = part.state.seal()
        offsets = {tp: o for tp, o in positions.items() if o > part.committed.get(tp, -1)}
        sends = []
        async with producer.transaction():
            for event in derived:
                key = event.tenant_id.encode()
                value = self.codec.encode(event)
                headers = [signer.header(key, value)]
                sends.append(
                    await producer.send(
                        self.topics.derived, value, key, partition=number, headers=headers
                    )
                )
                if isinstance(event, PolicyDecided) and event.decision == "deny":
                    sends.append(
                        await producer.send(
                            self.topics.review, value, key, partition=number, headers=headers
                        )
                    )
            for key, value in relays:
                headers = [signer.header(key, value)]
                sends.append(
                    await producer.send(
                        self.topics.sessions, value, key, partition=number, headers=headers
                    )
                )
            for state_key, entry in changed.items():
                value = None if entry is None else canonical(entry.to_json())
                sends.append(
                    await producer.send(self.changelog, value, state_key.encode(), partition=number)
                )
            if sends:
                await asyncio.gather(*sends)
            if offsets:
                await producer.send_offsets_to_transaction(
                    {tp: o for tp, o in offsets.items()}, self.group_id
                )
            if self.drill.checkpoint_pause_ms:
                log.warning("governor: drill: partition %d paused before commit", number)
                await asyncio.sleep(self.drill.checkpoint_pause_ms / 1000)
        # Committed: the sealed overlay becomes the state, the positions the restart point.
        part.state.commit_sealed(changed)
        part.committed.update(offsets)
        self.stats.derived += len(derived)
        if part.failed is None:
            part.failures = 0
        self.stats.checkpoints += 1
        self.stats.checkpoint_seconds += time.perf_counter() - started

    # --- admission ----------------------------------------------------------------------------

    def owner(self, number: int) -> str | None:
        """The web address of the worker that owns partition `number` (None: unknown)."""
        return self.assignor.owners.get(number)

    def partition_ready(self, number: int) -> Partition | None:
        part = self.partitions.get(number)
        if part is None or not part.ready or part.failed is not None:
            return None
        return part

    async def admit(
        self, number: int, request: AdmissionRequested, timeout: float
    ) -> dict[str, Any]:
        """Append the request to the tenant's log and wait for the fold's answer."""
        part = self.partition_ready(number)
        if part is None:
            raise PartitionMoved(f"partition {number} is not served here right now")
        assert self._appender is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        part.answers[request.event_id] = future
        key = request.tenant_id.encode()
        value = self.codec.encode(request)
        try:
            await (
                await self._appender.send(
                    self.topics.sessions,
                    value,
                    key,
                    partition=number,
                    headers=[self.rules.signer.header(key, value)],
                )
            )
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            part.answers.pop(request.event_id, None)

    def health(self, digest: bool = False) -> dict[str, Any]:
        """Status and stats; with `digest`, each ready partition's state digest (a
        restart drill compares them: the cost is a pass over the whole state)."""
        partitions = {
            str(p.number): {
                "ready": p.ready,
                "failed": p.failed,
                "folded": p.folded,
                "keys": len(p.state.committed),
                **({"digest": p.state.digest() if p.ready else None} if digest else {}),
            }
            for p in self.partitions.values()
        }
        failed = self.failure or next(
            (p.failed for p in self.partitions.values() if p.failed), None
        )
        return {
            "status": "failed" if failed else "ok",
            "reason": failed,
            "partitions": partitions,
            **self.stats.as_dict(),
        }


class PartitionMoved(Exception):
    """The partition is not (or no longer) held by this worker: retry elsewhere."""


class GovernorHalted(Exception):
    """The fold kept failing on a record: the worker stops rather than skip it."""
