"""Backlog samples: lag and the oldest unprocessed record's age, into ClickHouse."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.emitter import Emitter
from events.topics import Topics
from sql.client import open_clickhouse
from sql.migrate import apply_migrations
from streams.admin import ensure_topics, worker_groups
from streams.backlog import BacklogRecorder, sample
from tests.conftest import isolated_settings
from tests.factories import turn

pytestmark = pytest.mark.integration


async def _commit_everything(bootstrap: str, group: str, topics: list[str]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(3)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: end for tp, end in ends.items() if end > 0})
    finally:
        await consumer.stop()


def test_samples_show_lag_and_age_until_consumed(local_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap)
    topics = Topics(settings.topic_prefix)
    groups = worker_groups(settings, "sink")
    asyncio.run(ensure_topics(local_bootstrap, topics, 3))
    sent_at = datetime.now(UTC)

    async def send() -> None:
        async with Emitter(local_bootstrap, topics=topics) as emitter:
            await emitter.emit_many([turn(session_id=f"s-{n}") for n in range(5)])

    asyncio.run(send())
    time.sleep(1.0)  # an age of about a second

    rows = asyncio.run(sample(local_bootstrap, groups, datetime.now(UTC)))
    lagging = [r for r in rows if r[6] > 0]
    assert sum(r[6] for r in rows) == 5  # nobody consumed the 5 records
    assert {r[2] for r in lagging} == {topics.sessions}
    for row in lagging:
        oldest, age = row[7], row[8]
        assert abs((oldest - sent_at).total_seconds()) < 5
        assert 0.9 <= age < 30
    assert all(r[7] is None and r[8] is None for r in rows if r[6] == 0)

    # Into ClickHouse through the recorder, as the worker does every interval.
    executor = ThreadPoolExecutor(max_workers=1)
    with open_clickhouse(settings, role="owner") as clickhouse:
        apply_migrations(clickhouse)
        recorder = BacklogRecorder(
            bootstrap=local_bootstrap,
            groups=groups,
            clickhouse=clickhouse,
            executor=executor,
            interval=60,
        )
        written = asyncio.run(recorder.record())
        assert written == 9  # sessions, tenants and derived: 3 partitions each
        lag, aged = clickhouse.query(
            "SELECT sum(lag), countIf(age_seconds IS NOT NULL) FROM consumer_backlog"
        ).rows[0]
        assert (lag, aged) == (5, len(lagging))

        asyncio.run(_commit_everything(local_bootstrap, settings.sink_group, [topics.sessions]))
        asyncio.run(recorder.record())
        latest = clickhouse.query(
            "SELECT sum(lag), max(age_seconds) FROM consumer_backlog"
            " WHERE recorded_at = (SELECT max(recorded_at) FROM consumer_backlog)"
        ).rows[0]
        assert latest == (0, None)
    executor.shutdown()
