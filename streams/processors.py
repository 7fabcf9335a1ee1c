"""The session processor: dedupe -> lifecycle -> policy, one Faust agent.

The agent is a thin adapter (DESIGN "Rules of the house"): it decodes a record
from the sessions topic, loads the session's table entry, calls the pure
function `process`, stores the new entry and sends the derived events. All
decision logic lives in `process` and the pure modules it calls
(projections.lifecycle, projections.policy, events.signing).

Table entry (JSON, one per session_id; the applied idempotency keys live in the
same entry as the state they protect, DESIGN pitfalls):

    {"lifecycle": state_to_dict(state) | None,
     "applied":   {idempotency_key: [event_id, attempt]},   # FIFO, <= dedupe_window
     "decisions": {operation_key: PolicyDecided.model_dump_json()},
     "plan":      plan of the SessionStarted | None}

Outputs: every derived event to the derived topic, keyed by session_id, Avro
with Confluent framing. Denied PolicyDecided events also go to
`<prefix>.review` (Topics.review).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from events.codec import Codec, DecodeError
from events.models import (
    DuplicateSuppressed,
    PolicyDecided,
    SessionEvent,
    SessionStarted,
    ToolCallProposed,
)
from events.signing import build_policy_decided
from events.topics import Topics
from govstream.settings import Settings
from projections.lifecycle import LIFECYCLE_EVENTS, state_from_dict, state_to_dict, step
from projections.policy import PolicyContext, PolicyDocument, evaluate, load_policy

__all__ = [
    "PRODUCER",
    "SUPPRESSED_BY",
    "Signing",
    "empty_entry",
    "process",
    "register_processors",
]

log = logging.getLogger(__name__)

PRODUCER = "govstream-session-processor/0.1"
SUPPRESSED_BY = "session-processor"
DEFAULT_PLAN = "free"
TABLE_NAME = "session-state"
_DUPLICATE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:DuplicateSuppressed")


@dataclass(frozen=True)
class Signing:
    """How PolicyDecided events are signed, and how many idempotency keys are kept."""

    key: bytes
    key_id: str
    ttl: timedelta
    dedupe_window: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Signing:
        return cls(
            key=settings.policy_signing_key.encode(),
            key_id=settings.policy_key_id,
            ttl=timedelta(seconds=settings.policy_decision_ttl_seconds),
            dedupe_window=settings.dedupe_window,
        )


def empty_entry() -> dict[str, Any]:
    return {"lifecycle": None, "applied": {}, "decisions": {}, "plan": None}


# --- the pure part ------------------------------------------------------------------


def _duplicate_suppressed(
    event: SessionEvent, original_event_id: str, original_attempt: int
) -> DuplicateSuppressed:
    event_id = str(uuid.uuid5(_DUPLICATE_NAMESPACE, f"{original_event_id}:{event.event_id}"))
    return DuplicateSuppressed(
        event_id=event_id,
        occurred_at=event.occurred_at,
        tenant_id=event.tenant_id,
        session_id=event.session_id,
        workflow_id=event.workflow_id,
        idempotency_key=f"DuplicateSuppressed/{event_id}",
        attempt=1,
        causation_id=event.event_id,
        correlation_id=event.correlation_id,
        environment=event.environment,
        producer=PRODUCER,
        duplicate_event_id=event.event_id,
        original_event_id=original_event_id,
        duplicate_attempt=event.attempt,
        original_attempt=original_attempt,
        suppressed_by=SUPPRESSED_BY,
    )


def _decide(
    event: ToolCallProposed,
    entry: dict[str, Any],
    status_before: str,
    *,
    policy: PolicyDocument,
    signing: Signing,
    now: datetime,
) -> PolicyDecided:
    context = PolicyContext(
        plan=entry.get("plan") or DEFAULT_PLAN,
        environment=event.environment,
        session_status=status_before,
        budget_exceeded=False,  # TODO: from the budget processor's table
    )
    started = time.perf_counter_ns()
    decision = evaluate(policy, event, context, now)
    evaluation_us = (time.perf_counter_ns() - started) // 1000
    return build_policy_decided(
        event,
        decision,
        key=signing.key,
        key_id=signing.key_id,
        evaluation_us=evaluation_us,
        ttl=signing.ttl,
        now=event.occurred_at,
    )


def process(
    entry: dict[str, Any] | None,
    event: SessionEvent,
    *,
    policy: PolicyDocument,
    signing: Signing,
    now: datetime,
) -> tuple[dict[str, Any], list[SessionEvent]]:
    """Fold one session event into the session's table entry.

    Returns (new entry, derived events to emit). Never mutates `entry`.
    Pure apart from evaluation_us (a measurement of the policy evaluation,
    stored with the decision and re-emitted, never re-measured). `now` is the
    clock reading passed to `evaluate` (no current rule depends on it);
    decisions take their times from the proposal.
    """
    entry = entry if entry is not None else empty_entry()
    if type(event).__name__ not in LIFECYCLE_EVENTS:
        return entry, []  # derived facts on the sessions topic are not ours to apply
    applied: dict[str, list[Any]] = entry.get("applied") or {}

    # 1. dedupe by idempotency key (a redelivery of the same event is a no-op)
    seen = applied.get(event.idempotency_key)
    if seen is not None:
        original_event_id, original_attempt = seen[0], int(seen[1])
        if original_event_id == event.event_id:
            return entry, []
        return entry, [_duplicate_suppressed(event, original_event_id, original_attempt)]

    # 2. lifecycle
    raw_state = entry.get("lifecycle")
    state = state_from_dict(raw_state) if raw_state is not None else None
    status_before = str(state.status) if state is not None else "none"
    new_state, derived = step(state, event)
    out: list[SessionEvent] = list(derived)

    plan = entry.get("plan")
    if isinstance(event, SessionStarted) and state is None and new_state is not None:
        plan = event.plan
    decisions: dict[str, str] = dict(entry.get("decisions") or {})

    # 3. policy (ToolCallProposed only): the first decision per operation_key is kept
    if isinstance(event, ToolCallProposed):
        stored = decisions.get(event.operation_key)
        if stored is not None:
            out.append(PolicyDecided.model_validate_json(stored))
        else:
            decided = _decide(
                event,
                {**entry, "plan": plan},
                status_before,
                policy=policy,
                signing=signing,
                now=now,
            )
            decisions[event.operation_key] = decided.model_dump_json()
            out.append(decided)

    new_applied = dict(applied)
    new_applied[event.idempotency_key] = [event.event_id, event.attempt]
    while len(new_applied) > signing.dedupe_window:
        del new_applied[next(iter(new_applied))]  # FIFO: the oldest key goes first

    new_entry = {
        "lifecycle": state_to_dict(new_state) if new_state is not None else None,
        "applied": new_applied,
        "decisions": decisions,
        "plan": plan,
    }
    return new_entry, out


# --- the Faust adapter ----------------------------------------------------------------


@dataclass
class ProcessorStats:
    processed: int = 0
    skipped: int = 0
    derived: int = 0


def register_processors(
    app: faust.App, *, settings: Settings, topics: Topics, codec: Codec
) -> ProcessorStats:
    """Register the session processor agent (and its table) on `app`."""
    policy = load_policy(settings.resolved_policy_path)
    signing = Signing.from_settings(settings)
    stats = ProcessorStats()

    source = app.topic(topics.sessions, key_serializer="raw", value_serializer="raw")
    derived_topic = app.topic(topics.derived, key_serializer="raw", value_serializer="raw")
    review_topic = app.topic(
        topics.review,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=1,
    )
    table = app.Table(
        TABLE_NAME,
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=settings.topic_partitions,
    )

    @app.agent(source, concurrency=1, name="session-processor")
    async def session_processor(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                event = codec.decode(value).event
            except DecodeError as exc:
                stats.skipped += 1  # the sink dead-letters it
                log.debug("session processor skips an undecodable record: %s", exc)
                continue
            if type(event).__name__ not in LIFECYCLE_EVENTS:
                stats.skipped += 1  # tenant profiles or derived facts: not session input
                continue
            assert isinstance(event, SessionEvent)
            entry = table.get(event.session_id)
            new_entry, out = process(
                entry, event, policy=policy, signing=signing, now=datetime.now(UTC)
            )
            if new_entry is not entry:
                table[event.session_id] = new_entry
            key = event.session_id.encode()
            for derived in out:
                data = codec.encode(derived)
                await derived_topic.send(key=key, value=data)
                if isinstance(derived, PolicyDecided) and derived.decision == "deny":
                    await review_topic.send(key=key, value=data)
            stats.processed += 1
            stats.derived += len(out)

    return stats
