"""The session processor: dedupe -> lifecycle -> policy, one Faust agent.

The agent is a thin adapter (DESIGN "Rules of the house"): it decodes a record
from the sessions topic, loads the session's table entry, calls the pure
function `process`, stores the new entry and sends the derived events. All
decision logic lives in `process` and the pure modules it calls
(projections.lifecycle, projections.policy, events.signing).

Table entry (JSON, one per session_id; the applied idempotency keys live in the
same entry as the state they protect, DESIGN pitfalls):

    {"version":   ENTRY_VERSION,
     "lifecycle": state_to_dict(state) | None,
     "applied":   {idempotency_key: [event_id, attempt]},   # FIFO, <= dedupe_window
     "decisions": {operation_key: PolicyDecided.model_dump(mode="json")},
     "plan":      plan of the SessionStarted | None,
     "budget":    the gating BudgetExceeded verdict | None}

Entries are versioned: `read_entry` migrates a stored older layout when it is
read (version 1, without "version", held each decision as a JSON string).

Outputs: every derived event to the derived topic, keyed by session_id, Avro
with Confluent framing. Denied PolicyDecided events also go to
`<prefix>.review` (Topics.review).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from events.codec import Codec
from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.signing import build_policy_decided
from events.topics import Topics
from govstream.settings import Settings
from projections.lifecycle import LIFECYCLE_EVENTS, state_from_dict, state_to_dict, step
from projections.policy import PolicyContext, PolicyDocument, evaluate, load_policy
from streams.forwarder import Forwarder, SourcePosition
from streams.ingest import Ingested, InputRules, ingest, source_record
from streams.profiles import TenantProfiles
from streams.stats import AgentStats

__all__ = [
    "ENTRY_VERSION",
    "PRODUCER",
    "SUPPRESSED_BY",
    "SessionRuntime",
    "Signing",
    "budget_inputs",
    "decide_proposal",
    "empty_entry",
    "policy_context",
    "process",
    "process_signal",
    "read_entry",
    "register_processors",
]

log = logging.getLogger(__name__)

PRODUCER = "govstream-session-processor/0.1"
SUPPRESSED_BY = "session-processor"
DEFAULT_PLAN = "free"
TABLE_NAME = "session-state"
_DUPLICATE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:DuplicateSuppressed")
_SUSPENDED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:BudgetSuspension")
# Session events the budget processor folds (sent to it keyed by tenant).
# What the session-signals topic carries (never producer input).
SIGNALS = (BudgetExceeded, PolicyDecided, AdmissionDecided)
BUDGETED_EVENTS = (SessionStarted, TurnCompleted, ToolCallCompleted, SessionClosed, SessionFailed)


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


ENTRY_VERSION = 2


def empty_entry() -> dict[str, Any]:
    return {
        "version": ENTRY_VERSION,
        "lifecycle": None,
        "applied": {},
        "decisions": {},
        "plan": None,
        "budget": None,
    }


def _entry_v1_to_v2(entry: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored each decision as a JSON string inside the JSON entry."""
    decisions = {
        key: json.loads(value) if isinstance(value, str) else value
        for key, value in (entry.get("decisions") or {}).items()
    }
    return {**empty_entry(), **entry, "decisions": decisions, "version": 2}


ENTRY_MIGRATIONS = {1: _entry_v1_to_v2}


def read_entry(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored table entry in the current layout (older versions migrated)."""
    if stored is None:
        return None
    version = int(stored.get("version", 1))
    if version > ENTRY_VERSION:
        raise ValueError(f"session entry version {version} is newer than this code's")
    entry = stored
    while version < ENTRY_VERSION:
        entry = ENTRY_MIGRATIONS[version](entry)
        version = int(entry["version"])
    return entry


# --- the pure part ------------------------------------------------------------------


def _remember(
    applied: dict[str, list[Any]], key: str, record: list[Any], window: int
) -> dict[str, list[Any]]:
    new = dict(applied)
    new[key] = record
    while len(new) > window:
        del new[next(iter(new))]  # FIFO: the oldest key goes first
    return new


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


def budget_exceeded(entry: dict[str, Any]) -> bool:
    """Has the budget processor reported an exceeded budget that gates this session?"""
    verdict = entry.get("budget")
    return verdict is not None and verdict["action"] in ("suspend", "degrade")


def policy_context(
    entry: dict[str, Any],
    environment: str,
    status: str,
    profile: TenantProfileUpdated | None,
) -> PolicyContext:
    """The session's side of a policy evaluation: plan, state, budget, tenant profile.

    The tenant's current plan wins over the plan the session started with (an
    upgrade applies at once).
    """
    plan = (profile.plan if profile is not None else None) or entry.get("plan") or DEFAULT_PLAN
    return PolicyContext(
        plan=plan,
        environment=environment,
        session_status=status,
        budget_exceeded=budget_exceeded(entry),
        tenant_egress_allowlist=tuple(profile.egress_allowlist) if profile else (),
        tenant_tool_permissions=dict(profile.tool_permissions) if profile else {},
    )


def decide_proposal(
    event: ToolCallProposed,
    entry: dict[str, Any],
    status_before: str,
    *,
    policy: PolicyDocument,
    signing: Signing,
    now: datetime,
    profile: TenantProfileUpdated | None = None,
) -> PolicyDecided:
    """Evaluate and sign one proposal (the stream and the admission API share it)."""
    context = policy_context(entry, event.environment, status_before, profile)
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
    profile: TenantProfileUpdated | None = None,
    known_decision: Callable[[str], PolicyDecided | None] | None = None,
) -> tuple[dict[str, Any], list[SessionEvent]]:
    """Fold one session event into the session's table entry.

    `profile` is the tenant's profile (plan, allowlist, tool permissions);
    `known_decision(operation_key)` returns a decision the admission API
    already gave but whose signal has not arrived yet, so both agree.

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
    decisions: dict[str, Any] = dict(entry.get("decisions") or {})

    # 3. policy (ToolCallProposed only): the first decision per operation_key is kept
    if isinstance(event, ToolCallProposed):
        stored = decisions.get(event.operation_key)
        if stored is not None:
            out.append(PolicyDecided.model_validate(stored))
        else:
            decided = (known_decision(event.operation_key) if known_decision else None) or (
                decide_proposal(
                    event,
                    {**entry, "plan": plan},
                    status_before,
                    policy=policy,
                    signing=signing,
                    now=now,
                    profile=profile,
                )
            )
            decisions[event.operation_key] = decided.model_dump(mode="json")
            out.append(decided)

    new_applied = _remember(
        applied, event.idempotency_key, [event.event_id, event.attempt], signing.dedupe_window
    )

    new_entry = {
        **entry,
        "lifecycle": state_to_dict(new_state) if new_state is not None else None,
        "applied": new_applied,
        "decisions": decisions,
        "plan": plan,
    }
    resumed = not any(isinstance(d, InvalidTransitionRejected) for d in derived)
    if isinstance(event, SessionResumed) and resumed:
        # The operator's resume lifts a budget suspension; admission still
        # refuses turns while the budget itself has no room.
        new_entry["budget"] = None
    return new_entry, out


def budget_inputs(
    event: SessionEvent,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    derived: list[SessionEvent],
) -> list[SessionEvent]:
    """What the budget processor must see of this step (sent keyed by tenant).

    Only applied events (a duplicate leaves the entry as it was): starts and
    ends of sessions, turns (charged even when the lifecycle rejected them:
    the tokens were spent), completed tool calls, and new allow decisions
    (a tool call slot).
    """
    if after is before or (before is not None and after["applied"] == before["applied"]):
        return []
    out: list[SessionEvent] = []
    if isinstance(event, BUDGETED_EVENTS):
        out.append(event)
    old = (before or {}).get("decisions") or {}
    for decided in derived:
        new = isinstance(decided, PolicyDecided) and decided.operation_key not in old
        if new and decided.decision == "allow":
            out.append(decided)
    return out


def process_signal(
    entry: dict[str, Any] | None, signal: SessionEvent, *, dedupe_window: int
) -> tuple[dict[str, Any], list[SessionEvent]]:
    """Apply what another component told this session's owner.

    - BudgetExceeded (budget processor): gate the session's proposals; a
      "suspend" action also suspends it (a derived SessionSuspended).
    - PolicyDecided (admission API): the operation's decision, kept if the
      stream has not decided it yet.
    - AdmissionDecided (admission API, tools): recorded as it is.
    Returns (new entry, events for the derived topic). Idempotent.
    """
    entry = entry if entry is not None else empty_entry()
    applied: dict[str, list[Any]] = entry.get("applied") or {}
    if signal.idempotency_key in applied:
        return entry, []
    out: list[SessionEvent] = []
    remembered = _remember(applied, signal.idempotency_key, [signal.event_id, 1], dedupe_window)
    new_entry = {**entry, "applied": remembered}
    if isinstance(signal, BudgetExceeded):
        out.append(signal)
        if signal.action in ("suspend", "degrade"):
            new_entry["budget"] = {
                "action": signal.action,
                "scope": signal.scope,
                "fallback_model": signal.fallback_model,
            }
        raw_state = entry.get("lifecycle")
        if signal.action == "suspend" and raw_state is not None:
            suspended = SessionSuspended(
                **signal.envelope_for_derived(
                    str(uuid.uuid5(_SUSPENDED_NAMESPACE, signal.event_id)),
                    f"budget-suspend/{signal.event_id}",
                    PRODUCER,
                ),
                reason=f"budget exceeded: {signal.scope} {signal.scope_key}"[:500],
            )
            state = state_from_dict(raw_state)
            new_state, derived = step(state, suspended)
            if new_state is not None and str(new_state.status) == "suspended":
                new_entry["lifecycle"] = state_to_dict(new_state)
                out.append(suspended)
            else:
                out += derived  # not suspendable from here: the rejection says why
    elif isinstance(signal, PolicyDecided):
        decisions = dict(entry.get("decisions") or {})
        if signal.operation_key not in decisions:
            decisions[signal.operation_key] = signal.model_dump(mode="json")
            out.append(signal)
        new_entry["decisions"] = decisions
    elif isinstance(signal, AdmissionDecided):
        out.append(signal)
    return new_entry, out


# --- the Faust adapter ----------------------------------------------------------------


@dataclass
class SessionRuntime:
    """What the session processor shares with the admission API on the same worker."""

    table: Any  # faust Table: session_key(tenant, session) -> entry
    policy: PolicyDocument
    signing: Signing
    profiles: TenantProfiles
    # Decisions the admission API gave whose signal the agent has not applied
    # yet, by (tenant, operation_key): the agent consults them, so stream and
    # API agree per operation. Scoped by tenant: operation keys are chosen by
    # producers, and two tenants may pick the same one.
    pending_decisions: dict[tuple[str, str], PolicyDecided] = field(default_factory=dict)
    stats: AgentStats = field(default_factory=AgentStats)


def register_processors(
    app: faust.App,
    *,
    settings: Settings,
    topics: Topics,
    codec: Codec,
    rules: InputRules,
    profiles: TenantProfiles,
    forwarder: Forwarder,
) -> SessionRuntime:
    """Register the session processor agent (and its table) on `app`."""
    table = app.Table(
        TABLE_NAME,
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=settings.topic_partitions,
    )
    runtime = SessionRuntime(
        table=table,
        policy=load_policy(settings.resolved_policy_path),
        signing=Signing.from_settings(settings),
        profiles=profiles,
    )
    stats, policy, signing = runtime.stats, runtime.policy, runtime.signing
    pending = runtime.pending_decisions
    signer = rules.signer

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            replicas=1,
        )

    # Both inputs are keyed by session_id with the same partition count, so
    # Faust assigns them co-partitioned: one owner per session.
    source = app.topic(
        topics.sessions, topics.session_signals, key_serializer="raw", value_serializer="raw"
    )
    derived_topic = raw_topic(topics.derived)
    review_topic = raw_topic(topics.review)

    async def emit(key: bytes, events: list[SessionEvent]) -> None:
        for derived in events:
            data = codec.encode(derived)
            headers = [signer.header(key, data)]
            await derived_topic.send(key=key, value=data, headers=headers)
            if isinstance(derived, PolicyDecided) and derived.decision == "deny":
                await review_topic.send(key=key, value=data, headers=headers)

    @app.agent(source, concurrency=1, name="session-processor")
    async def session_processor(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            value = record.value
            # Record time of the event: the profile join is by log time (streams/profiles.py).
            ts_ms = int(record.message.timestamp * 1000)
            if profiles.fresh_until_ms < ts_ms:
                await profiles.wait_fresh(ts_ms)
            item = ingest(codec, source_record(record), rules)
            if not isinstance(item, Ingested) or not isinstance(item.event, SessionEvent):
                stats.record(skipped=True)  # the sink dead-letters it with the reason
                continue
            event = item.event
            state_key = event.session_key
            entry = read_entry(table.get(state_key))
            key = event.session_id.encode()
            from_signals = record.message.topic == topics.session_signals
            if from_signals and isinstance(event, SIGNALS):
                new_entry, out = process_signal(entry, event, dedupe_window=signing.dedupe_window)
                if isinstance(event, PolicyDecided):
                    pending.pop((event.tenant_id, event.operation_key), None)
                # An allowed call admitted by the API takes its tool slot now.
                forward: list[SessionEvent] = [
                    e for e in out if isinstance(e, PolicyDecided) and e.decision == "allow"
                ]
            elif not from_signals and type(event).__name__ in LIFECYCLE_EVENTS:
                tenant = event.tenant_id
                new_entry, out = process(
                    entry,
                    event,
                    policy=policy,
                    signing=signing,
                    now=datetime.now(UTC),
                    profile=profiles.get(tenant, ts_ms),
                    known_decision=lambda op, tenant=tenant: pending.get((tenant, op)),
                )
                forward = budget_inputs(event, entry, new_entry, out)
            else:
                stats.record(skipped=True)
                continue
            if new_entry is not entry:
                table[state_key] = new_entry
            await emit(key, out)
            tenant_key = event.tenant_id.encode()
            message = record.message
            for index, item_out in enumerate(forward):
                data = value if item_out is event else codec.encode(item_out)
                position = SourcePosition(message.partition, message.offset, index)
                await forwarder.enqueue(topics.budget_input, tenant_key, data, ts_ms, position)
            stats.record(len(out) + len(forward))

    return runtime
