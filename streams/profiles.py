"""Tenant profiles, read from the compacted tenants topic into memory on every worker.

A plain aiokafka consumer without a group: every worker reads every partition
from the beginning and keeps the recent TenantProfileUpdated versions per
tenant (a small table; the topic is compacted).

The processors join against it by log time, so the result does not depend on
how fast each topic happened to be read:

- `get(tenant, as_of_ms)` is the newest profile whose record was appended to
  the tenants topic at or before `as_of_ms` (the record timestamp of the event
  being processed);
- `wait_fresh(ts_ms)` holds an event back until this reader has read every
  profile record that was in the topic at `ts_ms` (it snapshots the end
  offsets with the wall clock, reads up to them, and then counts as fresh up
  to that snapshot time).

A backlog is never held back (its timestamps are in the past); a live event
waits at most one refresh (about 0.1 s). A producer clock running ahead is
capped at the time the event is seen, so it cannot stall a processor.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from events.codec import Codec
from events.models import TenantBudgets, TenantProfileUpdated
from streams.admin import partitions_of
from streams.ingest import InputRules, Rejected, SourceRecord, ingest
from streams.log_reader import log_record

log = logging.getLogger(__name__)

NO_BUDGETS = TenantBudgets()
VERSIONS_KEPT = 16  # per tenant: enough for any backlog a worker catches up on
REFRESH_MS = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


class TenantProfiles(Service):
    """Profile versions per tenant_id, kept current in the background."""

    def __init__(
        self, *, bootstrap: str, topic: str, codec: Codec, rules: InputRules, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap, self.topic, self.codec, self.rules = bootstrap, topic, codec, rules
        # tenant -> [(record timestamp ms, profile)], oldest first
        self.versions: dict[str, list[tuple[int, TenantProfileUpdated]]] = {}
        self.fresh_until_ms = -1  # every profile appended up to this time has been read
        self.ready = asyncio.Event()  # caught up once since start
        self._fresher = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    # --- reads ----------------------------------------------------------------------

    def get(self, tenant_id: str, as_of_ms: int | None = None) -> TenantProfileUpdated | None:
        versions = self.versions.get(tenant_id)
        if not versions:
            return None
        if as_of_ms is None:
            return versions[-1][1]
        index = bisect.bisect_right(versions, as_of_ms, key=lambda v: v[0])
        return versions[index - 1][1] if index else None

    def budgets(self, tenant_id: str, as_of_ms: int | None = None) -> TenantBudgets:
        profile = self.get(tenant_id, as_of_ms)
        return profile.budgets if profile is not None else NO_BUDGETS

    async def wait_fresh(self, ts_ms: int) -> None:
        """Until every profile appended up to `ts_ms` (capped at now) has been read."""
        target = min(ts_ms, _now_ms())
        while self.fresh_until_ms < target:
            await self._fresher.wait()

    # --- the reader -----------------------------------------------------------------

    def apply(self, record: SourceRecord) -> None:
        if not record.value:
            return  # a tombstone: profiles are never deleted
        item = ingest(self.codec, record, self.rules)
        if isinstance(item, Rejected):  # the sink dead-letters it with the reason
            log.warning("tenant profiles: skipping a record (%s)", item.dead_letter.reason)
            return
        event, timestamp_ms = item.event, record.timestamp_ms
        if isinstance(event, TenantProfileUpdated):
            versions = self.versions.setdefault(event.tenant_id, [])
            bisect.insort(versions, (timestamp_ms, event), key=lambda v: v[0])
            del versions[:-VERSIONS_KEPT]

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await self._consumer.start()

    @Service.task
    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        partitions = await partitions_of(self.bootstrap, [self.topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not self.should_stop:
            snapshot_ms = _now_ms()
            ends = await consumer.end_offsets(partitions)
            while not await self._reached(consumer, ends):
                await self._read(consumer, REFRESH_MS)
            self.fresh_until_ms = snapshot_ms
            if not self.ready.is_set():
                self.ready.set()
                log.info("tenant profiles: %d tenants loaded", len(self.versions))
            self._fresher.set()  # wake the waiters, then arm a new event
            self._fresher = asyncio.Event()
            await self._read(consumer, REFRESH_MS)

    async def _read(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        for records in (await consumer.getmany(timeout_ms=timeout_ms)).values():
            for record in records:
                self.apply(log_record(record))

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, ends: dict[Any, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
