"""Backlog age: the worker samples its consumer lag into ClickHouse.

Every `interval` seconds, for each consumer group of this worker: committed
offset and log end per partition, and for a partition that lags, the
timestamp of the oldest record not yet consumed (the one at the committed
offset). Rows go to `consumer_backlog` (sql/migrations/0004) through the
ClickHouse executor, off the event loop. The dashboards read backlog age from
there: lag in records says little, age says how late the answers are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from events import kafka_security
from sql.client import ClickHouse
from streams.admin import PartitionLag, group_lag

log = logging.getLogger(__name__)

COLUMNS = (
    "recorded_at", "consumer_group", "topic", "partition", "committed", "end_offset", "lag",
    "oldest_unprocessed_at", "age_seconds",
)  # fmt: skip


async def oldest_unprocessed(
    bootstrap: str, lagging: Sequence[PartitionLag], timeout: float = 5.0
) -> dict[tuple[str, int], datetime]:
    """(topic, partition) -> timestamp of the record at the committed offset."""
    if not lagging:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_security.current().client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = {TopicPartition(p.topic, p.partition): p for p in lagging}
        consumer.assign(list(tps))
        for tp, p in tps.items():
            consumer.seek(tp, max(p.committed, 0))
        found: dict[tuple[str, int], datetime] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < len(tps) and asyncio.get_running_loop().time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                if records and (tp.topic, tp.partition) not in found:
                    found[(tp.topic, tp.partition)] = datetime.fromtimestamp(
                        records[0].timestamp / 1000, UTC
                    )
                    consumer.pause(tp)
        return found
    finally:
        await consumer.stop()


async def sample(
    bootstrap: str, groups: Sequence[tuple[str, list[str]]], now: datetime
) -> list[tuple[Any, ...]]:
    """One row per (group, topic, partition): lag and the oldest unprocessed record's age."""
    rows = []
    for group, topics in groups:
        lags = await group_lag(bootstrap, group, topics)
        oldest = await oldest_unprocessed(bootstrap, [p for p in lags if p.lag > 0])
        for p in lags:
            at = oldest.get((p.topic, p.partition))
            age = max(0.0, (now - at).total_seconds()) if at is not None else None
            rows.append((now, group, p.topic, p.partition, p.committed, p.end, p.lag, at, age))
    return rows


class BacklogRecorder(Service):
    def __init__(
        self,
        *,
        bootstrap: str,
        groups: Sequence[tuple[str, list[str]]],
        clickhouse: ClickHouse,
        executor: Executor,
        interval: float,
    ) -> None:
        super().__init__()
        self.bootstrap, self.groups, self.interval = bootstrap, list(groups), interval
        self.clickhouse, self.executor = clickhouse, executor
        self.samples = 0

    async def record(self) -> int:
        rows = await sample(self.bootstrap, self.groups, datetime.now(UTC))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self.executor, self.clickhouse.insert, "consumer_backlog", rows, COLUMNS
        )
        self.samples += 1
        return len(rows)

    @Service.task
    async def _every_interval(self) -> None:
        while not self.should_stop:
            await self.sleep(self.interval)
            if self.should_stop:
                break
            try:
                await self.record()
            except Exception as exc:  # a sample lost is not worth stopping the worker
                log.warning("backlog sample failed: %s", exc)
