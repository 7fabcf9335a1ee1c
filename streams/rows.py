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

The analytics facts (migration 0003): tool proposals and completions, policy
and admission decisions, session transitions (runtime lifecycle events, the
processors' suspensions and quarantines, rejected transitions), budget events
and suppressed duplicates. Rows of the derived topic say so in
session_transitions.source; every record, derived ones too, is archived with
its topic/partition/offset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    CheckpointCreated,
    DuplicateSuppressed,
    Event,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.topics import is_derived_topic
from projections.free_text import redact_event
from projections.governor.fold import NOT_AN_OPERATION_DECISION
from projections.redaction import DEFAULT_REDACTOR, Redactor
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
    "schema_id", "raw_preview", "raw_sha256", "raw_bytes",
)  # fmt: skip
# Characters of a dead letter's raw value ClickHouse keeps, redacted.
DEAD_LETTER_PREVIEW_CHARS = 512

TOOL_PROPOSAL_COLUMNS = (
    "tenant_id", "operation_key", "session_id", "workflow_id", "environment", "event_id",
    "proposed_at", "tool", "action", "destination_host", "method", "payload_bytes",
    "risk_level", "attempt",
)  # fmt: skip
TOOL_COMPLETION_COLUMNS = (
    "tenant_id", "operation_key", "session_id", "event_id", "completed_at", "status",
    "latency_ms", "result_ref", "attempt",
)  # fmt: skip
POLICY_DECISION_COLUMNS = (
    "tenant_id", "operation_key", "session_id", "workflow_id", "environment", "event_id",
    "decided_at", "tool", "action", "decision", "reason_code", "rule_id", "policy_version",
    "evaluation_us", "key_id", "expires_at", "destination_host", "destination_port", "method",
    "payload_bytes", "risk_level", "proposal_digest",
)  # fmt: skip

ADMISSION_DECISION_COLUMNS = (
    "tenant_id", "decided_at", "event_id", "session_id", "workflow_id", "environment",
    "request_kind", "decision", "reason_code", "model", "estimated_tokens",
    "remaining_tokens", "reservation_id",
)  # fmt: skip
SESSION_TRANSITION_COLUMNS = (
    "tenant_id", "session_id", "idempotency_key", "event_id", "occurred_at", "workflow_id",
    "environment", "event_type", "outcome", "source", "from_state", "reason", "error_class",
    "causation_id", "attempt",
)  # fmt: skip
BUDGET_EVENT_COLUMNS = (
    "tenant_id", "occurred_at", "event_id", "session_id", "workflow_id", "environment",
    "event_type", "scope", "scope_key", "budget_limit", "used", "threshold_pct", "action",
    "fallback_model",
)  # fmt: skip
DUPLICATE_SUPPRESSED_COLUMNS = (
    "tenant_id", "occurred_at", "event_id", "session_id", "workflow_id", "environment",
    "duplicate_event_id", "original_event_id", "duplicate_attempt", "original_attempt",
    "suppressed_by",
)  # fmt: skip

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events_archive": ARCHIVE_COLUMNS,
    "sessions": SESSION_COLUMNS,
    "turns": TURN_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
    "tool_proposals": TOOL_PROPOSAL_COLUMNS,
    "tool_completions": TOOL_COMPLETION_COLUMNS,
    "policy_decisions": POLICY_DECISION_COLUMNS,
    "admission_decisions": ADMISSION_DECISION_COLUMNS,
    "session_transitions": SESSION_TRANSITION_COLUMNS,
    "budget_events": BUDGET_EVENT_COLUMNS,
    "duplicates_suppressed": DUPLICATE_SUPPRESSED_COLUMNS,
}

# Lifecycle facts: each one is a row of session_transitions (outcome "applied").
LIFECYCLE_EVENTS: tuple[type[SessionEvent], ...] = (
    SessionStarted,
    CheckpointCreated,
    SessionSuspended,
    SessionResumed,
    SessionClosed,
    SessionFailed,
    SessionQuarantined,
)


@dataclass
class Batch:
    """Rows per table for one insert round."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in TABLE_COLUMNS}
    )


def _archive_row(item: Ingested, event: Event, redaction: dict[str, Any] | None) -> tuple[Any, ...]:
    session_id = event.session_id if isinstance(event, SessionEvent) else ""
    return (
        item.source.topic, item.source.partition, item.source.offset, event.event_id,
        item.event_type, item.schema_id, event.tenant_id, session_id,
        event.occurred_at, _payload(event, redaction),
    )  # fmt: skip


_redactor: Redactor = DEFAULT_REDACTOR


def use_redactor(redactor: Redactor) -> None:
    """The rules archived payloads are redacted with (the settings' extra patterns)."""
    global _redactor
    _redactor = redactor


def redacted(event: Event) -> tuple[Event, dict[str, Any] | None]:
    """The event with its free-text fields redacted, and what was redacted (or None).

    Turn content, task summaries, checkpoint summaries, reasons and result
    references can carry what a user typed: emails, card numbers, keys. Every
    row built from an event (the archive and the typed tables) is built from
    this copy, so ClickHouse never sees the raw text; the archive records what
    was redacted (counts per kind and a hash of the original text), never the
    values.
    """
    found = redact_event(event, _redactor)
    if found is None:
        return event, None
    update = {name: found.data[name] for name in found.records}
    return event.model_copy(update=update), found.records


def _payload(event: Event, redaction: dict[str, Any] | None) -> orjson.Fragment:
    if redaction is None:
        return orjson.Fragment(event.model_dump_json())
    return orjson.Fragment(orjson.dumps({**event.model_dump(mode="json"), "redaction": redaction}))


def archived_payload(event: Event) -> orjson.Fragment:
    """The event's JSON for the archive, its free-text fields redacted."""
    return _payload(*redacted(event))


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


def _tool_proposal_row(e: ToolCallProposed) -> tuple[Any, ...]:
    return (
        e.tenant_id, e.operation_key, e.session_id, e.workflow_id, e.environment, e.event_id,
        e.occurred_at, e.tool, e.action, e.destination_host, e.method, e.payload_bytes,
        e.risk_level, e.attempt,
    )  # fmt: skip


def _tool_completion_row(e: ToolCallCompleted) -> tuple[Any, ...]:
    return (
        e.tenant_id, e.operation_key, e.session_id, e.event_id, e.occurred_at, e.status,
        e.latency_ms, e.result_ref, e.attempt,
    )  # fmt: skip


def _policy_decision_row(e: PolicyDecided) -> tuple[Any, ...]:
    return (
        e.tenant_id, e.operation_key, e.session_id, e.workflow_id, e.environment, e.event_id,
        e.occurred_at, e.tool, e.action, e.decision, e.reason_code, e.rule_id,
        e.policy_version, e.evaluation_us, e.key_id, e.expires_at, e.destination_host,
        e.destination_port, e.method, e.payload_bytes, e.risk_level, e.proposal_digest,
    )  # fmt: skip


def _admission_decision_row(e: AdmissionDecided) -> tuple[Any, ...]:
    return (
        e.tenant_id, e.occurred_at, e.event_id, e.session_id, e.workflow_id, e.environment,
        e.request_kind, e.decision, e.reason_code, e.model, e.estimated_tokens,
        e.remaining_tokens, e.reservation_id,
    )  # fmt: skip


def _transition_row(e: SessionEvent, source: str) -> tuple[Any, ...]:
    """A lifecycle fact (applied) or an InvalidTransitionRejected (rejected)."""
    if isinstance(e, InvalidTransitionRejected):
        event_type, outcome, from_state, reason = e.attempted, "rejected", e.from_state, e.reason
    else:
        event_type, outcome, from_state = e.event_type(), "applied", ""
        reason = getattr(e, "reason", "")
    return (
        e.tenant_id, e.session_id, e.idempotency_key, e.event_id, e.occurred_at, e.workflow_id,
        e.environment, event_type, outcome, source, from_state, reason,
        getattr(e, "error_class", None), e.causation_id, e.attempt,
    )  # fmt: skip


def _budget_event_row(e: BudgetWarning | BudgetExceeded) -> tuple[Any, ...]:
    warning = isinstance(e, BudgetWarning)
    return (
        e.tenant_id, e.occurred_at, e.event_id, e.session_id, e.workflow_id, e.environment,
        e.event_type(), e.scope, e.scope_key, e.limit, e.used,
        e.threshold_pct if warning else None,
        None if warning else e.action,
        None if warning else e.fallback_model,
    )  # fmt: skip


def _duplicate_suppressed_row(e: DuplicateSuppressed) -> tuple[Any, ...]:
    return (
        e.tenant_id, e.occurred_at, e.event_id, e.session_id, e.workflow_id, e.environment,
        e.duplicate_event_id, e.original_event_id, e.duplicate_attempt, e.original_attempt,
        e.suppressed_by,
    )  # fmt: skip


def raw_preview(raw: bytes, redactor: Redactor) -> str:
    """Printable, redacted text of a raw record's first bytes (for humans; no secrets).

    Redacted before it is cut, so a secret is never split by the cut; bytes
    that are not printable UTF-8 become "." (Avro framing, lengths, binary).
    """
    text = raw[: 16 * DEAD_LETTER_PREVIEW_CHARS].decode("utf-8", "replace")
    printable = "".join(ch if ch.isprintable() and ch != "\ufffd" else "." for ch in text)
    return redactor.redact(printable).text[:DEAD_LETTER_PREVIEW_CHARS]


def _dead_letter_row(item: Rejected) -> tuple[Any, ...]:
    d = item.dead_letter
    raw = d.raw_value
    return (
        d.source_topic, d.source_partition, d.source_offset, d.reason_code, d.reason,
        d.schema_id, raw_preview(raw, _redactor), hashlib.sha256(raw).hexdigest(), len(raw),
    )  # fmt: skip


def build_batch(items: Iterable[Ingested | Rejected]) -> Batch:
    batch = Batch()
    rows = batch.rows
    for item in items:
        if isinstance(item, Rejected):
            rows["dead_letters"].append(_dead_letter_row(item))
            continue
        event, redaction = redacted(item.event)
        rows["events_archive"].append(_archive_row(item, event, redaction))
        if isinstance(event, TurnCompleted):
            rows["turns"].append(_turn_row(event))
        elif isinstance(event, ToolCallProposed):
            rows["tool_proposals"].append(_tool_proposal_row(event))
        elif isinstance(event, ToolCallCompleted):
            rows["tool_completions"].append(_tool_completion_row(event))
        elif isinstance(event, PolicyDecided):
            # policy_decisions keeps one row per (tenant, operation key), the operation's
            # decision: refusals that decide none stay in the archive only.
            if event.reason_code not in NOT_AN_OPERATION_DECISION:
                rows["policy_decisions"].append(_policy_decision_row(event))
        elif isinstance(event, AdmissionDecided):
            rows["admission_decisions"].append(_admission_decision_row(event))
        elif isinstance(event, BudgetWarning | BudgetExceeded):
            rows["budget_events"].append(_budget_event_row(event))
        elif isinstance(event, DuplicateSuppressed):
            rows["duplicates_suppressed"].append(_duplicate_suppressed_row(event))
        elif isinstance(event, (*LIFECYCLE_EVENTS, InvalidTransitionRejected)):
            source = "processor" if is_derived_topic(item.source.topic) else "runtime"
            rows["session_transitions"].append(_transition_row(event, source))
            if isinstance(event, SessionStarted):
                rows["sessions"].append(_session_row(event))
    return batch
