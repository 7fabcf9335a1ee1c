"""Reading the log back: whole topics for rebuilds, exact positions for one session.

The log is the source of truth (DESIGN "Projections"): replay, rebuild,
backtest and reprice all read Kafka, never ClickHouse, for the events
themselves. Two shapes:

- `read_topics`: every committed record of some topics, from the beginning
  up to the end offsets seen at the start (or to `stop_at`), in batches.
  Within a partition records come in offset order; partitions interleave.
- `read_positions`: exactly the records at the given (topic, partition,
  offset) positions (the archive tells us where a session's records are),
  read with one seek per run of nearby offsets, never a scan of the topic.

Both read with isolation_level=read_committed, like every downstream consumer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from events import kafka_security
from events.evidence import LogRecord
from govstream.errors import GovstreamError
from streams.admin import partitions_of

__all__ = ["GAP", "LogRecord", "end_offsets", "log_record", "read_positions", "read_topics"]

# Offsets closer than this share one seek: reading a few foreign records is
# cheaper than another fetch round trip.
GAP = 500
_FETCH_BYTES = 8 * 1024 * 1024


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_bytes=4 * _FETCH_BYTES,
        max_poll_records=10_000,
    )


def log_record(message: object) -> LogRecord:
    """An aiokafka ConsumerRecord as a LogRecord (headers included)."""
    return LogRecord(
        topic=message.topic,  # type: ignore[attr-defined]
        partition=message.partition,  # type: ignore[attr-defined]
        offset=message.offset,  # type: ignore[attr-defined]
        timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
        value=message.value,  # type: ignore[attr-defined]
        key=message.key,  # type: ignore[attr-defined]
        headers=tuple(message.headers or ()),  # type: ignore[attr-defined]
    )


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The last stable offset + 1 of every partition of `topics` (read_committed)."""
    tps = await partitions_of(bootstrap, list(topics))
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    stop_at: Mapping[TopicPartition, int] | None = None,
    since_ms: int | None = None,
    partitions: Collection[int] | None = None,
) -> AsyncIterator[list[LogRecord]]:
    """Yield batches of every committed record of `topics` before `stop_at`.

    `stop_at` maps a partition to the first offset not to read (default: the
    end offsets when the read starts; a partition missing from it is read to
    that end too). `since_ms` starts each partition at the first record with
    a timestamp at or after it (Kafka's time index, not a scan). `partitions`
    reads only those partition numbers of every topic.
    """
    tps = await partitions_of(bootstrap, list(topics))
    if not tps:
        raise GovstreamError(f"no such topic: {', '.join(topics)}")
    if partitions is not None:
        tps = [tp for tp in tps if tp.partition in partitions]
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = dict(await consumer.end_offsets(tps))
        if stop_at is not None:
            ends.update({tp: min(off, ends.get(tp, off)) for tp, off in stop_at.items()})
        starts = dict(await consumer.beginning_offsets(tps))
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                starts[tp] = hit.offset if hit is not None else ends[tp]
        remaining = set()
        for tp in tps:
            if starts[tp] < ends[tp]:
                consumer.seek(tp, starts[tp])
                remaining.add(tp)
        consumer.pause(*(tp for tp in tps if tp not in remaining))
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            out: list[LogRecord] = []
            for tp, messages in batch.items():
                end = ends[tp]
                for message in messages:
                    if message.offset < end:
                        out.append(log_record(message))
                if await consumer.position(tp) >= end:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if not batch:
                # Transaction markers and aborted records take offsets but
                # yield nothing: the position is what tells us we are done.
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                        consumer.pause(tp)
            if out:
                yield out
    finally:
        await consumer.stop()


def _runs(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets -> (first, last) runs whose gaps are under GAP."""
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and offset - runs[-1][1] <= GAP:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


async def read_positions(
    bootstrap: str, positions: Iterable[tuple[str, int, int]], *, timeout: float = 30.0
) -> list[LogRecord]:
    """The records at exactly these (topic, partition, offset) positions.

    Returned in the order the positions were given. A position with no
    committed record (deleted by retention, aborted) raises GovstreamError
    naming it, because a forensic timeline must not silently skip an event.
    """
    wanted = list(dict.fromkeys(positions))
    if not wanted:
        return []
    by_tp: dict[TopicPartition, list[int]] = defaultdict(list)
    for topic, partition, offset in wanted:
        by_tp[TopicPartition(topic, partition)].append(offset)
    found: dict[tuple[str, int, int], LogRecord] = {}
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        consumer.assign(list(by_tp))
        consumer.pause(*by_tp)
        for tp, offsets in by_tp.items():
            wanted_here = set(offsets)
            consumer.resume(tp)
            for first, last in _runs(sorted(wanted_here)):
                consumer.seek(tp, first)
                while await consumer.position(tp) <= last:
                    batch = await consumer.getmany(tp, timeout_ms=int(timeout * 1000))
                    messages = batch.get(tp, [])
                    if not messages and await consumer.position(tp) <= last:
                        raise GovstreamError(
                            f"log read timed out at {tp.topic}[{tp.partition}]"
                            f"@{await consumer.position(tp)}"
                        )
                    for message in messages:
                        if message.offset in wanted_here and message.offset <= last:
                            found[(tp.topic, tp.partition, message.offset)] = log_record(message)
            consumer.pause(tp)
    finally:
        await consumer.stop()
    missing = [p for p in wanted if p not in found]
    if missing:
        topic, partition, offset = missing[0]
        raise GovstreamError(
            f"{len(missing)} record(s) not in the log, first {topic}[{partition}]@{offset} "
            "(removed by retention, or never committed)"
        )
    return [found[p] for p in wanted]
