"""Tenant profiles, read from the compacted tenants topic into memory on every worker.

A plain aiokafka consumer without a group: every worker reads every partition
from the beginning and keeps the latest TenantProfileUpdated per tenant (a
small table; the topic is compacted). The processors join against it at
processing time, as a Kafka Streams GlobalKTable would: a decision uses the
profile known when it is made, and decisions are stored, so a replay re-emits
them instead of re-deciding under a newer profile.

`ready` is set once the reader has caught up with the end offsets it saw at
start, so the first decisions after a restart already know every plan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from events.codec import Codec, DecodeError
from events.models import TenantBudgets, TenantProfileUpdated
from streams.admin import partitions_of

log = logging.getLogger(__name__)

NO_BUDGETS = TenantBudgets()


class TenantProfiles(Service):
    """Latest TenantProfileUpdated per tenant_id, kept current in the background."""

    def __init__(self, *, bootstrap: str, topic: str, codec: Codec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bootstrap, self.topic, self.codec = bootstrap, topic, codec
        self.profiles: dict[str, TenantProfileUpdated] = {}
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    def get(self, tenant_id: str) -> TenantProfileUpdated | None:
        return self.profiles.get(tenant_id)

    def budgets(self, tenant_id: str) -> TenantBudgets:
        profile = self.profiles.get(tenant_id)
        return profile.budgets if profile is not None else NO_BUDGETS

    def apply(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone for a key we never keyed by (profiles are never deleted)
        try:
            event = self.codec.decode(value).event
        except DecodeError as exc:
            log.warning("tenant profiles: skipping an undecodable record (%s)", exc)
            return
        if isinstance(event, TenantProfileUpdated):
            current = self.profiles.get(event.tenant_id)
            if current is None or current.occurred_at <= event.occurred_at:
                self.profiles[event.tenant_id] = event

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
        ends = await consumer.end_offsets(partitions)
        while not self.should_stop:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    self.apply(record.value)
            if not self.ready.is_set() and await self._caught_up(consumer, ends):
                self.ready.set()
                log.info("tenant profiles: %d loaded", len(self.profiles))

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[Any, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
