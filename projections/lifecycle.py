"""The session lifecycle state machine. Pure: no I/O, no clock reads.

The shape is the eventsourcing "aggregate6" one (see STYLE.md):

    evolve(state, event) -> state           fold one session event into the state
    decide(state, event) -> [derived]       the derived facts the processor emits
    fold(events) -> state                   rebuild a session from its log

`transition(state, event)` does the work for both and says what happened:
`Applied(new_state)` or `Rejected(reason_code, reason, new_state)`. An invalid
transition is rejected with a reason and not applied: the status stays, but the
rejection time is recorded, and when `policy.quarantine_after` rejections fall
within `policy.within` (by the events' own `occurred_at`), the machine moves the
session to `quarantined` itself. The processor then emits what `decide` returns:
one InvalidTransitionRejected per rejection and, when the quarantine triggers,
a SessionQuarantined notice, all with deterministic ids.

Every rule lives in `ALLOWED` below; the code consults the table and handles
three special cases explicitly: SessionClosed's reason (completed vs closed),
the pending tool operations (ToolCallProposed / ApprovalRecorded /
ToolCallCompleted), and where SessionResumed returns to (waiting_for_tool when
tool calls are still pending).

Idempotency is not the machine's: the caller deduplicates before calling it.
The governor's fold (projections/governor/fold.py `step`) drops a redelivery and
suppresses a retry against the session's applied idempotency keys, one bounded
window, so every event that reaches `transition` is new. Handed the same event
twice, the machine applies (or rejects) it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from events.models import (
    SESSION_EVENTS,
    ApprovalRecorded,
    CheckpointCreated,
    InvalidTransitionRejected,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TaskSummaryUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)

__all__ = [
    "ALLOWED",
    "DEFAULT_POLICY",
    "DUPLICATE_START",
    "INVALID_TRANSITION",
    "LIFECYCLE_EVENTS",
    "NON_TERMINAL",
    "NO_SESSION",
    "PRODUCER",
    "QUARANTINE_REASON",
    "REASON_CODES",
    "SESSION_TERMINAL",
    "SPECIAL_CASES",
    "STATE_VERSION",
    "TENANT_MISMATCH",
    "TERMINAL",
    "UNKNOWN_OPERATION",
    "Applied",
    "LifecyclePolicy",
    "Rejected",
    "SessionState",
    "Status",
    "Transition",
    "decide",
    "derived_events",
    "evolve",
    "fold",
    "is_quarantined",
    "is_terminal",
    "state_from_dict",
    "state_to_dict",
    "step",
    "transition",
]

PRODUCER = "govstream-lifecycle/0.1"
STATE_VERSION = 1
QUARANTINE_REASON = "repeated invalid transitions"
# Derived event ids are uuid5(namespace, f"{causing event_id}:{suffix}").
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:lifecycle")


class Status(StrEnum):
    CREATED = "created"
    ACTIVE = "active"
    WAITING_FOR_TOOL = "waiting_for_tool"
    CHECKPOINTED = "checkpointed"
    SUSPENDED = "suspended"
    QUARANTINED = "quarantined"
    CLOSED = "closed"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL: frozenset[Status] = frozenset({Status.CLOSED, Status.COMPLETED, Status.FAILED})
NON_TERMINAL: tuple[Status, ...] = tuple(s for s in Status if s not in TERMINAL)

# --- reason codes of a rejection ------------------------------------------------

INVALID_TRANSITION = "invalid_transition"  # no edge for (status, event type)
UNKNOWN_OPERATION = "unknown_operation"  # approval/completion for a key not pending
SESSION_TERMINAL = "session_terminal"  # any event after closed/completed/failed
DUPLICATE_START = "duplicate_start"  # SessionStarted for a session that exists
NO_SESSION = "no_session"  # an event before the session's SessionStarted
TENANT_MISMATCH = "tenant_mismatch"  # an event claims another tenant's session
REASON_CODES: tuple[str, ...] = (
    INVALID_TRANSITION,
    UNKNOWN_OPERATION,
    SESSION_TERMINAL,
    DUPLICATE_START,
    NO_SESSION,
    TENANT_MISMATCH,
)

# --- the rules --------------------------------------------------------------------

S = Status
_STARTED = SessionStarted.__name__
_TURN = TurnCompleted.__name__
_PROPOSED = ToolCallProposed.__name__
_APPROVAL = ApprovalRecorded.__name__
_TOOL_DONE = ToolCallCompleted.__name__
_CHECKPOINT = CheckpointCreated.__name__
_SUSPENDED = SessionSuspended.__name__
_RESUMED = SessionResumed.__name__
_CLOSED = SessionClosed.__name__
_FAILED = SessionFailed.__name__
_QUARANTINED = SessionQuarantined.__name__
_SUMMARY = TaskSummaryUpdated.__name__

# The edges `transition` handles beyond the table (marked (*) in it; docs/lifecycle.md
# lists them from here).
SPECIAL_CASES: dict[str, str] = {
    _CLOSED: 'goes to `completed` when reason is "completed", else to `closed`.',
    _APPROVAL: "must name a pending operation_key, else it is rejected (unknown_operation).",
    _TOOL_DONE: "must name a pending operation_key (unknown_operation otherwise); it stays "
    "in `waiting_for_tool` while other operations are still pending. A denied proposal "
    "is still pending: send ToolCallCompleted status=rejected for it before closing.",
    _RESUMED: "returns to `waiting_for_tool` when operations are pending (the session was "
    "suspended or quarantined while waiting on a tool).",
}

# (status before, event type) -> status after. `None` is "no session yet".
ALLOWED: dict[tuple[Status | None, str], Status] = {
    (None, _STARTED): S.CREATED,
    # turns: a turn after a checkpoint resumes work
    (S.CREATED, _TURN): S.ACTIVE,
    (S.ACTIVE, _TURN): S.ACTIVE,
    (S.CHECKPOINTED, _TURN): S.ACTIVE,
    # tools: several calls may be in flight; the session waits on all of them
    (S.ACTIVE, _PROPOSED): S.WAITING_FOR_TOOL,
    (S.WAITING_FOR_TOOL, _PROPOSED): S.WAITING_FOR_TOOL,
    (S.WAITING_FOR_TOOL, _APPROVAL): S.WAITING_FOR_TOOL,  # (*)
    (S.WAITING_FOR_TOOL, _TOOL_DONE): S.ACTIVE,  # (*)
    # checkpoints
    (S.ACTIVE, _CHECKPOINT): S.CHECKPOINTED,
    # suspension and resumption (resume from quarantine is the operator's action)
    (S.ACTIVE, _SUSPENDED): S.SUSPENDED,
    (S.CHECKPOINTED, _SUSPENDED): S.SUSPENDED,
    (S.WAITING_FOR_TOOL, _SUSPENDED): S.SUSPENDED,
    (S.SUSPENDED, _RESUMED): S.ACTIVE,  # (*)
    (S.QUARANTINED, _RESUMED): S.ACTIVE,  # (*)
    # normal end
    (S.CREATED, _CLOSED): S.CLOSED,  # (*)
    (S.ACTIVE, _CLOSED): S.CLOSED,  # (*)
    (S.CHECKPOINTED, _CLOSED): S.CLOSED,  # (*)
    # from any non-terminal state
    **{(s, _FAILED): S.FAILED for s in NON_TERMINAL},
    **{(s, _QUARANTINED): S.QUARANTINED for s in NON_TERMINAL},
    **{(s, _SUMMARY): s for s in NON_TERMINAL},
}
del S

# The event types the machine consumes: the producer session events.
LIFECYCLE_EVENTS: frozenset[str] = frozenset(cls.__name__ for cls in SESSION_EVENTS)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """When repeated invalid transitions quarantine a session."""

    quarantine_after: int = 3
    within: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.quarantine_after < 1:
            raise ValueError(f"quarantine_after must be >= 1, got {self.quarantine_after}")
        if self.within < timedelta(0):
            raise ValueError(f"within must not be negative, got {self.within}")


DEFAULT_POLICY = LifecyclePolicy()


@dataclass(frozen=True, slots=True)
class SessionState:
    """One session's lifecycle state (the value of the lifecycle table)."""

    session_id: str
    tenant_id: str
    status: Status
    last_event_at: datetime
    pending_operations: frozenset[str] = frozenset()
    invalid_count_in_window: int = 0
    # Rejection times within `policy.within` of the latest rejection, oldest
    # first, at most `policy.quarantine_after` of them.
    invalid_times: tuple[datetime, ...] = ()
    quarantine_reason: str | None = None
    version: int = STATE_VERSION


@dataclass(frozen=True, slots=True)
class Applied:
    """The event moved the session."""

    new_state: SessionState


@dataclass(frozen=True, slots=True)
class Rejected:
    """The event was not applied. `new_state` keeps the status but records the
    rejection; `quarantined` says this rejection moved the session to
    quarantined. `new_state` is None only for NO_SESSION."""

    reason_code: str
    reason: str
    new_state: SessionState | None
    from_state: str
    quarantined: bool = False


Transition = Applied | Rejected


def is_terminal(state: SessionState | None) -> bool:
    return state is not None and state.status in TERMINAL


def is_quarantined(state: SessionState | None) -> bool:
    return state is not None and state.status is Status.QUARANTINED


# --- the machine ------------------------------------------------------------------


def _reject(
    state: SessionState | None,
    event: SessionEvent,
    code: str,
    reason: str,
    policy: LifecyclePolicy,
) -> Rejected:
    if state is None:
        return Rejected(code, reason, None, "none")
    at = event.occurred_at
    window_start = at - policy.within
    times = tuple(t for t in (*state.invalid_times, at) if t >= window_start)
    times = times[-policy.quarantine_after :]
    trigger = (
        len(times) >= policy.quarantine_after
        and state.status not in TERMINAL
        and state.status is not Status.QUARANTINED
    )
    new_state = replace(state, invalid_times=times, invalid_count_in_window=len(times))
    if trigger:
        new_state = replace(
            new_state, status=Status.QUARANTINED, quarantine_reason=QUARANTINE_REASON
        )
    return Rejected(code, reason, new_state, str(state.status), quarantined=trigger)


def transition(
    state: SessionState | None,
    event: SessionEvent,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> Transition:
    """Apply one session event to a session's state, or reject it with a reason.

    Raises TypeError for an event type the machine does not consume and
    ValueError for an event of another session (routing bugs, not transitions).
    """
    event_type = type(event).__name__
    if event_type not in LIFECYCLE_EVENTS:
        raise TypeError(f"{event_type} is not a session lifecycle event")
    if state is not None and event.session_id != state.session_id:
        raise ValueError(
            f"event {event.event_id} is for session {event.session_id!r}, not {state.session_id!r}"
        )

    if state is None:
        if isinstance(event, SessionStarted):
            return Applied(
                SessionState(
                    session_id=event.session_id,
                    tenant_id=event.tenant_id,
                    status=ALLOWED[(None, event_type)],
                    last_event_at=event.occurred_at,
                )
            )
        return _reject(state, event, NO_SESSION, f"{event_type} before SessionStarted", policy)

    status = state.status
    if event.tenant_id != state.tenant_id:
        return _reject(
            state,
            event,
            TENANT_MISMATCH,
            f"{event_type} from tenant {event.tenant_id!r} for a session of "
            f"tenant {state.tenant_id!r}",
            policy,
        )
    if isinstance(event, SessionStarted):
        return _reject(
            state, event, DUPLICATE_START, f"session already started (status {status})", policy
        )
    if status in TERMINAL:
        return _reject(state, event, SESSION_TERMINAL, f"{event_type} after {status}", policy)
    target = ALLOWED.get((status, event_type))
    if target is None:
        return _reject(
            state, event, INVALID_TRANSITION, f"no transition from {status} on {event_type}", policy
        )

    pending = state.pending_operations
    quarantine_reason = state.quarantine_reason
    if isinstance(event, ToolCallProposed):
        pending = pending | {event.operation_key}
    elif isinstance(event, ApprovalRecorded | ToolCallCompleted):
        if event.operation_key not in pending:
            return _reject(
                state,
                event,
                UNKNOWN_OPERATION,
                f"{event_type} for operation {event.operation_key!r}, which is not pending",
                policy,
            )
        if isinstance(event, ToolCallCompleted):
            pending = pending - {event.operation_key}
            if pending:
                target = Status.WAITING_FOR_TOOL  # (*) still waiting on the others
    elif isinstance(event, SessionResumed):
        quarantine_reason = None
        if pending:
            target = Status.WAITING_FOR_TOOL  # (*)
    elif isinstance(event, SessionClosed):
        target = Status.COMPLETED if event.reason == "completed" else Status.CLOSED  # (*)
    elif isinstance(event, SessionQuarantined):
        quarantine_reason = event.reason

    new_state = replace(
        state,
        status=target,
        pending_operations=pending,
        quarantine_reason=quarantine_reason,
        last_event_at=max(state.last_event_at, event.occurred_at),
    )
    if isinstance(event, SessionResumed) and status is Status.QUARANTINED:
        # The operator released the session: its earlier offences are forgiven.
        new_state = replace(new_state, invalid_times=(), invalid_count_in_window=0)
    return Applied(new_state)


def evolve(
    state: SessionState | None,
    event: SessionEvent,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> SessionState | None:
    """The state after `event` (a rejected event only records the rejection)."""
    return transition(state, event, policy).new_state


def fold(
    events: Iterable[SessionEvent],
    policy: LifecyclePolicy = DEFAULT_POLICY,
    state: SessionState | None = None,
) -> SessionState | None:
    """Rebuild a session's state from its events, in log order, starting from
    `state` (None: from the beginning). Event types the machine does not consume
    (derived facts in a mixed archive) are skipped."""
    for event in events:
        if type(event).__name__ in LIFECYCLE_EVENTS:
            state = evolve(state, event, policy)
    return state


# --- derived events ---------------------------------------------------------------


def _derived_envelope(event: SessionEvent, suffix: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid5(_NAMESPACE, f"{event.event_id}:{suffix}")),
        "occurred_at": event.occurred_at,
        "tenant_id": event.tenant_id,
        "session_id": event.session_id,
        "workflow_id": event.workflow_id,
        # Same operation (idempotency key) -> same key: a producer retry that got
        # past dedupe derives a notice the sink can deduplicate.
        "idempotency_key": f"lifecycle:{suffix}:"
        + str(uuid.uuid5(_NAMESPACE, event.idempotency_key)),
        "attempt": 1,
        "causation_id": event.event_id,
        "correlation_id": event.correlation_id,
        "environment": event.environment,
        "producer": PRODUCER,
    }


def derived_events(event: SessionEvent, result: Transition) -> list[SessionEvent]:
    """What the processor emits for `result`, the transition of `event`."""
    if isinstance(result, Applied):
        return []
    out: list[SessionEvent] = [
        InvalidTransitionRejected(
            **_derived_envelope(event, "rejected"),
            from_state=result.from_state,
            attempted=type(event).__name__,
            reason=f"{result.reason_code}: {result.reason}"[:500],
        )
    ]
    if result.quarantined:
        out.append(
            SessionQuarantined(**_derived_envelope(event, "quarantined"), reason=QUARANTINE_REASON)
        )
    return out


def step(
    state: SessionState | None,
    event: SessionEvent,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> tuple[SessionState | None, list[SessionEvent]]:
    """evolve and decide in one pass: (new state, derived events to emit)."""
    result = transition(state, event, policy)
    return result.new_state, derived_events(event, result)


def decide(
    state: SessionState | None,
    event: SessionEvent,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> list[SessionEvent]:
    """The derived events `event` causes: [] when applied;
    [InvalidTransitionRejected] when rejected; plus a SessionQuarantined notice
    when that rejection quarantines the session. Deterministic in the inputs."""
    return derived_events(event, transition(state, event, policy))


# --- persistence (Faust table values, replay snapshots) ------------------------------


def state_to_dict(state: SessionState) -> dict[str, Any]:
    """A JSON-ready dict of the state (timestamps as ISO-8601, sets sorted)."""
    return {
        "version": state.version,
        "session_id": state.session_id,
        "tenant_id": state.tenant_id,
        "status": str(state.status),
        "last_event_at": state.last_event_at.isoformat(),
        "pending_operations": sorted(state.pending_operations),
        "invalid_count_in_window": state.invalid_count_in_window,
        "invalid_times": [t.isoformat() for t in state.invalid_times],
        "quarantine_reason": state.quarantine_reason,
    }


def state_from_dict(data: Mapping[str, Any]) -> SessionState:
    """The state `state_to_dict` wrote. Keys it no longer writes are ignored: state
    written by an older version carries "recent_event_ids", the machine's own
    redelivery window before the governor's fold became the one dedupe."""
    version = int(data.get("version", 1))
    if version != STATE_VERSION:
        raise ValueError(f"unsupported SessionState version {version}")
    return SessionState(
        session_id=data["session_id"],
        tenant_id=data["tenant_id"],
        status=Status(data["status"]),
        last_event_at=datetime.fromisoformat(data["last_event_at"]),
        pending_operations=frozenset(data.get("pending_operations", ())),
        invalid_count_in_window=int(data.get("invalid_count_in_window", 0)),
        invalid_times=tuple(datetime.fromisoformat(t) for t in data.get("invalid_times", ())),
        quarantine_reason=data.get("quarantine_reason"),
        version=version,
    )
