"""The budget processor: a Faust agent over the budget-input topic, keyed by tenant.

A thin adapter around projections.budget (pure): it decodes a record, hands
the tenant's table entries to `apply`, writes back what changed and sends the
derived events. It shares its table and the pending-reservation overlay with
the admission API of the same worker (streams/admission.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import faust

from events.codec import Codec
from events.models import AdmissionDecided, SessionEvent
from events.topics import Topics
from govstream.settings import Settings
from projections.budget import BudgetConfig, apply
from projections.pricing import DEFAULT_PRICES
from streams.forwarder import Forwarder, SourcePosition
from streams.ingest import Ingested, InputRules, Rejected, ingest, source_record
from streams.profiles import TenantProfiles
from streams.stats import AgentStats

log = logging.getLogger(__name__)

TABLE_NAME = "budget-ledger"


@dataclass
class PendingReservations:
    """Reservations answered by the API but not yet applied by the agent, per balance key.

    Lives in the worker's memory only: after a crash the AdmissionDecided
    records are still in the topic, and the agent applies them.
    """

    by_id: dict[str, tuple[datetime, dict[str, int]]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    tenant_of: dict[str, str] = field(default_factory=dict)  # reservation id -> tenant

    def add(self, reservation_id: str, amounts: dict[str, int], at: datetime, tenant: str) -> None:
        self.by_id[reservation_id] = (at, amounts)
        self.tenant_of[reservation_id] = tenant
        for key, amount in amounts.items():
            self.totals[key] = self.totals.get(key, 0) + amount

    def settle(self, reservation_id: str) -> None:
        held = self.by_id.pop(reservation_id, None)
        self.tenant_of.pop(reservation_id, None)
        if held is None:
            return
        for key, amount in held[1].items():
            left = self.totals.get(key, 0) - amount
            if left > 0:
                self.totals[key] = left
            else:
                self.totals.pop(key, None)

    def count_of(self, tenant: str) -> int:
        """Reservations of `tenant` answered but not yet applied."""
        return sum(1 for owner in self.tenant_of.values() if owner == tenant)

    def forget_older_than(self, cutoff: datetime) -> None:
        """Drop entries whose record never came back (a revoked partition, say)."""
        for rid in [rid for rid, (at, _) in self.by_id.items() if at < cutoff]:
            self.settle(rid)


@dataclass
class BudgetRuntime:
    table: Any  # faust Table: string keys (see projections.budget)
    config: BudgetConfig
    profiles: TenantProfiles
    pending: PendingReservations = field(default_factory=PendingReservations)
    stats: AgentStats = field(default_factory=AgentStats)


def budget_config(settings: Settings) -> BudgetConfig:
    return BudgetConfig(
        prices=DEFAULT_PRICES,
        global_tokens_per_minute=settings.global_tokens_per_minute,
        partitions=settings.topic_partitions,
        reservation_timeout=timedelta(seconds=settings.reservation_timeout_seconds),
        key_bound=settings.budget_key_bound,
    )


def register_budget(
    app: faust.App,
    *,
    settings: Settings,
    topics: Topics,
    codec: Codec,
    rules: InputRules,
    profiles: TenantProfiles,
    forwarder: Forwarder,
) -> BudgetRuntime:
    table = app.Table(
        TABLE_NAME,
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=settings.topic_partitions,
    )
    runtime = BudgetRuntime(table=table, config=budget_config(settings), profiles=profiles)
    stats, config, pending = runtime.stats, runtime.config, runtime.pending

    source = app.topic(topics.budget_input, key_serializer="raw", value_serializer="raw")

    @app.agent(source, concurrency=1, name="budget-processor")
    async def budget_processor(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            ts_ms = int(record.message.timestamp * 1000)  # the forwarded event's log time
            if profiles.fresh_until_ms < ts_ms:
                await profiles.wait_fresh(ts_ms)
            item = ingest(codec, source_record(record), rules)
            if not isinstance(item, Ingested) or not isinstance(item.event, SessionEvent):
                # Only workers write here, signed: anything else is forged or broken.
                stats.record(skipped=True)
                if isinstance(item, Rejected):
                    log.error("budget processor skips a record: %s", item.dead_letter.reason)
                continue
            event = item.event
            partition = record.message.partition
            source = SourcePosition.from_headers(record.message.headers)
            if source is not None:
                # A re-forward after the session processor crashed: applied already.
                mark = f"w|{partition}|{source.partition}"
                last = table.get(mark)
                if last is not None and source <= SourcePosition(*last):
                    stats.record(skipped=True)
                    continue
                table[mark] = [source.partition, source.offset, source.index]
            budgets = profiles.budgets(event.tenant_id, ts_ms)
            step = apply(table, event, budgets, partition, config)
            for key, value in step.changes.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
            if isinstance(event, AdmissionDecided) and event.reservation_id is not None:
                pending.settle(event.reservation_id)
            session_key = event.session_id.encode()
            # Keyed by session, so mostly another partition than this tenant's:
            # through the forwarder, like the signals (a transactional send
            # needs this worker to own that partition; see streams/forwarder.py).
            for derived in step.derived:
                await forwarder.enqueue(topics.derived, session_key, codec.encode(derived))
            for signal in step.signals:
                await forwarder.enqueue(topics.session_signals, session_key, codec.encode(signal))
            stats.record(len(step.derived) + len(step.signals))

    return runtime
