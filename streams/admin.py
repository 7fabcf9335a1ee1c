"""Kafka administration the pipeline needs: create its topics, read group lag."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    TopicAlreadyExistsError,
)

from events import kafka_security
from events.topics import Topics
from govstream.errors import UsageError
from govstream.settings import Settings


async def reachable(bootstrap: str, timeout_ms: int = 10_000) -> None:
    """Connect once and leave; KafkaConnectionError when no broker answers."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        request_timeout_ms=timeout_ms,
    )
    try:
        await admin.start()
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str, topics: Topics, partitions: int, changelogs: tuple[str, ...] = ()
) -> list[str]:
    """Create the pipeline's topics if missing; return the ones created.

    `changelogs`: the governor's changelog topics (compacted), created with
    the same partition count as the tenant log they mirror. An existing topic
    with another partition count is refused (UsageError): tenants would map to
    other partitions than their state and decisions.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        client_id="govstream-admin",
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [name for name in (*topics.all(), *changelogs) if name in existing]
        counts: dict[str, int] = {}
        for tp in await _partitions(admin, mine) if mine else []:
            counts[tp.topic] = counts.get(tp.topic, 0) + 1
        for name, count in sorted(counts.items()):
            if count != partitions:
                raise UsageError(
                    f"topic {name} has {count} partitions but GOVSTREAM_TOPIC_PARTITIONS is "
                    f"{partitions}: set it to {count}, or use a new GOVSTREAM_TOPIC_PREFIX"
                )
        wanted = []
        compacted = {*topics.compacted(), *changelogs}
        for name in (*topics.all(), *changelogs):
            if name in existing:
                continue
            config = {"cleanup.policy": "compact"} if name in compacted else {}
            wanted.append(NewTopic(name, partitions, 1, topic_configs=config))
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        for topic, code, message in (e[:3] for e in response.topic_errors):
            # 36 = TOPIC_ALREADY_EXISTS: another process won the race, which is fine.
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {message}")
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def _committed_offsets(admin: AIOKafkaAdminClient, group: str) -> dict:  # type: ignore[type-arg]
    # A fresh broker creates its offsets topic on the first coordinator lookup
    # and answers "coordinator not available" until it is ready.
    for attempt in range(40):
        try:
            return await admin.list_consumer_group_offsets(group)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def _partitions(admin: AIOKafkaAdminClient, topic_names: list[str]) -> list[TopicPartition]:
    tps = []
    for topic in await admin.describe_topics(topic_names):
        if topic["error_code"]:
            raise RuntimeError(f"cannot describe topic {topic['topic']}: {topic['error_code']}")
        for p in sorted(part["partition"] for part in topic["partitions"]):
            tps.append(TopicPartition(topic["topic"], p))
    return tps


async def partitions_of(bootstrap: str, topic_names: list[str]) -> list[TopicPartition]:
    """Every partition of the given topics (from fresh cluster metadata)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        client_id="govstream-admin",
    )
    await admin.start()
    try:
        return await _partitions(admin, topic_names)
    finally:
        await admin.close()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # -1 when the group has committed nothing yet
    end: int
    markers: int = 0  # offsets after `committed` that hold only transaction markers

    @property
    def lag(self) -> int:
        return self.end - max(self.committed, 0) - self.markers


# A consumer that commits "last record + 1" (Faust) stops before the commit
# marker of a transaction that ended a partition: lag 1 that is no record.
# Tails this short are read to tell markers from records.
_MARKER_PROBE = 8


async def _marker_tail(bootstrap: str, tp: TopicPartition, start: int, end: int) -> int:
    """`end - start` when no committed record sits in [start, end), else 0."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        for _ in range(5):
            batch = await consumer.getmany(tp, timeout_ms=200)
            if any(m.offset < end for m in batch.get(tp, [])):
                return 0
            if await consumer.position(tp) >= end:
                return end - start
        return 0  # an open transaction: records may still come
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group: str, topic_names: list[str]) -> list[PartitionLag]:
    """Committed offset vs log end for each partition of the given topics.

    A short tail of transaction markers after the committed offset is not lag.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        client_id="govstream-lag",
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        enable_auto_commit=False,
    )
    await admin.start()
    await consumer.start()
    try:
        committed = await _committed_offsets(admin, group)
        tps = await _partitions(admin, topic_names)
        ends = await consumer.end_offsets(tps) if tps else {}
        rows = []
        for tp in tps:
            meta = committed.get(tp)
            at = meta.offset if meta else -1
            markers = 0
            if 0 <= at < ends[tp] <= at + _MARKER_PROBE:
                markers = await _marker_tail(bootstrap, tp, at, ends[tp])
            rows.append(PartitionLag(tp.topic, tp.partition, at, ends[tp], markers))
        return rows
    finally:
        await consumer.stop()
        await admin.close()


def worker_groups(settings: Settings, which: str = "all") -> list[tuple[str, list[str]]]:
    """(consumer group, its input topics) of a worker: "sink", "governor" or "all"."""
    topics = Topics(settings.topic_prefix)
    chosen = []
    if which in ("sink", "all"):
        chosen.append((settings.sink_group, list(topics.sink_inputs())))
    if which in ("governor", "all"):
        # The tenant log, and the tenants topic whose profiles it relays into it.
        chosen.append((settings.governor_group, [topics.sessions, topics.tenants]))
    return chosen
