"""Ingested records -> ClickHouse rows (pure; the sink only inserts them).

Column lists are the single place the sink's view of each table is spelled;
a test checks them against the tables the migrations create. The archive's
payload is the event's JSON as an orjson.Fragment: inserted as JSON rows, it
travels as a document rather than as a string escaped a second time.

Turns carry their idempotency_key: the table deduplicates by (tenant_id,
idempotency_key), so a runtime's retry (new event_id, same key) is one row.
Turns and sessions carry their attempt: of the rows of one key, the lowest
attempt stays (migration 0002), so a retried SessionStarted leaves the
original's row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.models import Event, SessionEvent, SessionStarted, TurnCompleted
from streams.ingest import Ingested, Rejected

ARCHIVE_COLUMNS = (
    "topic", "partition", "offset", "event_id", "event_type", "schema_id",
    "tenant_id", "session_id", "occurred_at", "payload",
)  # fmt: skip
SESSION_COLUMNS = (
    "session_id", "tenant_id", "workflow_id", "tier", "plan", "actor_id",
    "policy_version", "environment", "started_at", "event_id", "attempt",
)  # fmt: skip
TURN_COLUMNS = (
    "event_id", "occurred_at", "tenant_id", "session_id", "workflow_id", "environment",
    "model", "prompt_version", "input_tokens", "output_tokens", "cost_usd_micros",
    "first_token_ms", "latency_ms", "outcome", "error_class", "attempt", "idempotency_key",
)  # fmt: skip
DEAD_LETTER_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "reason_code", "reason",
    "schema_id", "raw_value",
)  # fmt: skip

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events_archive": ARCHIVE_COLUMNS,
    "sessions": SESSION_COLUMNS,
    "turns": TURN_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
}


@dataclass
class Batch:
    """Rows per table for one insert round."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in TABLE_COLUMNS}
    )


def _archive_row(item: Ingested) -> tuple[Any, ...]:
    event = item.decoded.event
    assert isinstance(event, Event)
    session_id = event.session_id if isinstance(event, SessionEvent) else ""
    return (
        item.source.topic, item.source.partition, item.source.offset, event.event_id,
        item.decoded.event_type, item.decoded.schema_id, event.tenant_id, session_id,
        event.occurred_at, orjson.Fragment(event.model_dump_json()),
    )  # fmt: skip


def _session_row(e: SessionStarted) -> tuple[Any, ...]:
    return (
        e.session_id, e.tenant_id, e.workflow_id, e.tier, e.plan, e.actor_id,
        e.policy_version, e.environment, e.occurred_at, e.event_id, e.attempt,
    )  # fmt: skip


def _turn_row(e: TurnCompleted) -> tuple[Any, ...]:
    return (
        e.event_id, e.occurred_at, e.tenant_id, e.session_id, e.workflow_id, e.environment,
        e.model, e.prompt_version, e.input_tokens, e.output_tokens, e.cost_usd_micros,
        e.first_token_ms, e.latency_ms, e.outcome, e.error_class, e.attempt, e.idempotency_key,
    )  # fmt: skip


def _dead_letter_row(item: Rejected) -> tuple[Any, ...]:
    d = item.dead_letter
    return (
        d.source_topic, d.source_partition, d.source_offset, d.reason_code, d.reason,
        d.schema_id, d.raw_value,
    )  # fmt: skip


def build_batch(items: Iterable[Ingested | Rejected]) -> Batch:
    batch = Batch()
    rows = batch.rows
    for item in items:
        if isinstance(item, Rejected):
            rows["dead_letters"].append(_dead_letter_row(item))
            continue
        rows["events_archive"].append(_archive_row(item))
        event = item.decoded.event
        if isinstance(event, TurnCompleted):
            rows["turns"].append(_turn_row(event))
        elif isinstance(event, SessionStarted):
            rows["sessions"].append(_session_row(event))
    return batch
