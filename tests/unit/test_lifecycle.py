"""The session lifecycle state machine (projections/lifecycle.py). Pure: no broker."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import (
    SESSION_EVENTS,
    ApprovalRecorded,
    CheckpointCreated,
    InvalidTransitionRejected,
    PolicyDecided,
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
from govstream.simulate import FleetConfig, simulate
from projections.lifecycle import (
    ALLOWED,
    DUPLICATE_START,
    INVALID_TRANSITION,
    NO_SESSION,
    NON_TERMINAL,
    PRODUCER,
    QUARANTINE_REASON,
    SESSION_TERMINAL,
    TENANT_MISMATCH,
    TERMINAL,
    UNKNOWN_OPERATION,
    Applied,
    LifecyclePolicy,
    Rejected,
    SessionState,
    Status,
    decide,
    evolve,
    fold,
    is_quarantined,
    is_terminal,
    state_from_dict,
    state_to_dict,
    step,
    transition,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)

DEFAULTS: dict[type[SessionEvent], dict[str, Any]] = {
    SessionStarted: {"tier": "A", "plan": "team", "actor_id": "u-1", "policy_version": "v1"},
    TurnCompleted: {
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd_micros": 30,
        "first_token_ms": 100,
        "latency_ms": 400,
        "outcome": "ok",
    },
    ToolCallProposed: {
        "tool": "web.search",
        "action": "query",
        "operation_key": "op-1",
        "payload_bytes": 10,
        "risk_level": "low",
    },
    ApprovalRecorded: {"operation_key": "op-1", "approver": "a-1", "granted": True},
    ToolCallCompleted: {"operation_key": "op-1", "status": "succeeded", "latency_ms": 5},
    TaskSummaryUpdated: {"objective": "do the thing"},
    CheckpointCreated: {"artifact_ref": "s3://bucket/ckpt-1.json"},
    SessionSuspended: {"reason": "operator pause"},
    SessionResumed: {"reason": "operator resumed"},
    SessionClosed: {"reason": "user_closed"},
    SessionFailed: {"reason": "runtime crashed", "error_class": "RuntimeError"},
    SessionQuarantined: {"reason": "runtime fault: sandbox violation"},
}
BY_NAME = {cls.__name__: cls for cls in SESSION_EVENTS}


def ev(
    cls: type[SessionEvent] | str,
    at: datetime | timedelta = T0,
    **overrides: Any,
) -> SessionEvent:
    """A valid event of `cls` for session s-1 of tenant t-1 (fields overridable)."""
    if isinstance(cls, str):
        cls = BY_NAME[cls]
    if isinstance(at, timedelta):
        at = T0 + at
    event_id = overrides.pop("event_id", str(uuid.UUID(int=next(_ids))))
    fields: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": at,
        "tenant_id": "t-1",
        "session_id": "s-1",
        "workflow_id": "wf-1",
        "idempotency_key": f"s-1:{event_id}",
        "correlation_id": "corr-1",
        **DEFAULTS[cls],
        **overrides,
    }
    return cls(**fields)


def state_in(status: Status, pending: frozenset[str] | None = None, **kw: Any) -> SessionState:
    if pending is None:
        pending = frozenset({"op-1"}) if status is Status.WAITING_FOR_TOOL else frozenset()
    return SessionState(
        session_id="s-1",
        tenant_id="t-1",
        status=status,
        last_event_at=T0,
        pending_operations=pending,
        **kw,
    )


def run(events: list[SessionEvent], policy: LifecyclePolicy | None = None) -> list[Any]:
    """Each event's transition, threading the state through."""
    state: SessionState | None = None
    out = []
    for event in events:
        result = transition(state, event) if policy is None else transition(state, event, policy)
        out.append(result)
        state = result.new_state
    return out


# --- the table ----------------------------------------------------------------------

ALLOWED_ROWS = [(status, name, target) for (status, name), target in ALLOWED.items()]


@pytest.mark.parametrize(
    ("status", "event_type", "target"),
    ALLOWED_ROWS,
    ids=[f"{s}-{n}" for s, n, _ in ALLOWED_ROWS],
)
def test_every_allowed_row_applies(status: Status | None, event_type: str, target: Status) -> None:
    state = None if status is None else state_in(status)
    result = transition(state, ev(event_type, timedelta(seconds=1)))
    assert isinstance(result, Applied), result
    assert result.new_state is not None
    assert result.new_state.status is target
    assert result.new_state.last_event_at == T0 + timedelta(seconds=1)


INVALID_ROWS = [
    (status, name)
    for status in NON_TERMINAL
    for name in BY_NAME
    if name != "SessionStarted" and (status, name) not in ALLOWED
]


@pytest.mark.parametrize(
    ("status", "event_type"), INVALID_ROWS, ids=[f"{s}-{n}" for s, n in INVALID_ROWS]
)
def test_every_missing_edge_is_an_invalid_transition(status: Status, event_type: str) -> None:
    state = state_in(status)
    at = T0 + timedelta(seconds=5)
    result = transition(state, ev(event_type, at))
    assert isinstance(result, Rejected)
    assert result.reason_code == INVALID_TRANSITION
    assert result.from_state == status
    assert result.new_state is not None
    assert result.new_state.status is status  # not applied
    assert result.new_state.invalid_times == (at,)  # but recorded
    assert result.new_state.invalid_count_in_window == 1
    assert result.new_state.last_event_at == T0
    assert not result.quarantined


def test_important_invalid_edges_are_in_the_complement() -> None:
    invalid = set(INVALID_ROWS)
    for row in [
        (Status.CREATED, "ToolCallProposed"),  # a tool call before any turn
        (Status.WAITING_FOR_TOOL, "TurnCompleted"),  # a turn while a tool is pending
        (Status.WAITING_FOR_TOOL, "SessionClosed"),  # closing with a tool in flight
        (Status.SUSPENDED, "TurnCompleted"),  # working while suspended
        (Status.SUSPENDED, "SessionClosed"),
        (Status.ACTIVE, "SessionResumed"),  # resuming what is not paused
        (Status.CHECKPOINTED, "CheckpointCreated"),
        (Status.QUARANTINED, "TurnCompleted"),
        (Status.QUARANTINED, "SessionSuspended"),
        (Status.ACTIVE, "ToolCallCompleted"),
        (Status.ACTIVE, "ApprovalRecorded"),
    ]:
        assert row in invalid, row


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("event_type", sorted(BY_NAME))
def test_terminal_states_reject_everything(status: Status, event_type: str) -> None:
    state = state_in(status)
    result = transition(state, ev(event_type, timedelta(seconds=1)))
    assert isinstance(result, Rejected)
    expected = DUPLICATE_START if event_type == "SessionStarted" else SESSION_TERMINAL
    assert result.reason_code == expected
    assert result.new_state is not None
    assert result.new_state.status is status
    assert not result.quarantined


def test_terminal_states_never_quarantine_on_repeated_rejections() -> None:
    state: SessionState | None = state_in(Status.COMPLETED)
    for i in range(10):
        result = transition(state, ev(TurnCompleted, timedelta(seconds=i)))
        assert isinstance(result, Rejected) and not result.quarantined
        state = result.new_state
    assert state is not None and state.status is Status.COMPLETED
    assert state.invalid_count_in_window == 3  # bounded to quarantine_after


@pytest.mark.parametrize("event_type", sorted(set(BY_NAME) - {"SessionStarted"}))
def test_events_before_session_started_are_no_session(event_type: str) -> None:
    result = transition(None, ev(event_type))
    assert isinstance(result, Rejected)
    assert result.reason_code == NO_SESSION
    assert result.new_state is None
    assert result.from_state == "none"
    [derived] = decide(None, ev(event_type, event_id="e-before"))
    assert isinstance(derived, InvalidTransitionRejected)
    assert derived.from_state == "none"
    assert derived.reason.startswith(f"{NO_SESSION}: ")


def test_second_session_started_is_a_duplicate_start() -> None:
    first, second = run([ev(SessionStarted), ev(SessionStarted, timedelta(seconds=1))])
    assert isinstance(first, Applied)
    assert first.new_state.status is Status.CREATED
    assert first.new_state.tenant_id == "t-1"
    assert isinstance(second, Rejected)
    assert second.reason_code == DUPLICATE_START
    assert second.new_state is not None and second.new_state.status is Status.CREATED


def test_event_from_another_tenant_is_rejected() -> None:
    result = transition(state_in(Status.ACTIVE), ev(TurnCompleted, tenant_id="t-evil"))
    assert isinstance(result, Rejected)
    assert result.reason_code == TENANT_MISMATCH
    assert result.new_state is not None and result.new_state.status is Status.ACTIVE


# --- tools ----------------------------------------------------------------------------


def test_pending_operations_wait_for_every_tool_call() -> None:
    events = [
        ev(SessionStarted),
        ev(TurnCompleted, timedelta(seconds=1)),
        ev(ToolCallProposed, timedelta(seconds=2), operation_key="op-a"),
        ev(ToolCallProposed, timedelta(seconds=3), operation_key="op-b"),
        ev(ApprovalRecorded, timedelta(seconds=4), operation_key="op-b"),
        ev(ToolCallCompleted, timedelta(seconds=5), operation_key="op-a"),
        ev(ToolCallCompleted, timedelta(seconds=6), operation_key="op-b"),
    ]
    results = run(events)
    assert all(isinstance(r, Applied) for r in results)
    seen = [(r.new_state.status, r.new_state.pending_operations) for r in results[2:]]
    assert seen == [
        (Status.WAITING_FOR_TOOL, frozenset({"op-a"})),
        (Status.WAITING_FOR_TOOL, frozenset({"op-a", "op-b"})),
        (Status.WAITING_FOR_TOOL, frozenset({"op-a", "op-b"})),
        (Status.WAITING_FOR_TOOL, frozenset({"op-b"})),
        (Status.ACTIVE, frozenset()),
    ]


@pytest.mark.parametrize("event_cls", [ApprovalRecorded, ToolCallCompleted])
def test_unknown_operation_key_is_rejected(event_cls: type[SessionEvent]) -> None:
    state = state_in(Status.WAITING_FOR_TOOL, frozenset({"op-1"}))
    result = transition(state, ev(event_cls, operation_key="op-404"))
    assert isinstance(result, Rejected)
    assert result.reason_code == UNKNOWN_OPERATION
    assert result.new_state is not None
    assert result.new_state.status is Status.WAITING_FOR_TOOL
    assert result.new_state.pending_operations == frozenset({"op-1"})


def test_completed_operation_cannot_complete_twice() -> None:
    results = run(
        [
            ev(SessionStarted),
            ev(TurnCompleted),
            ev(ToolCallProposed, operation_key="op-1"),
            ev(ToolCallProposed, operation_key="op-2"),
            ev(ToolCallCompleted, operation_key="op-1"),
            ev(ToolCallCompleted, operation_key="op-1"),  # a new event, same key
        ]
    )
    last = results[-1]
    assert isinstance(last, Rejected) and last.reason_code == UNKNOWN_OPERATION


def test_suspension_while_waiting_resumes_to_waiting_for_tool() -> None:
    results = run(
        [
            ev(SessionStarted),
            ev(TurnCompleted),
            ev(ToolCallProposed, operation_key="op-1"),
            ev(SessionSuspended),
            ev(SessionResumed),
            ev(ToolCallCompleted, operation_key="op-1"),
        ]
    )
    assert all(isinstance(r, Applied) for r in results)
    statuses = [r.new_state.status for r in results[3:]]
    assert statuses == [Status.SUSPENDED, Status.WAITING_FOR_TOOL, Status.ACTIVE]
    assert results[3].new_state.pending_operations == frozenset({"op-1"})


# --- ends ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("completed", Status.COMPLETED),
        ("user_closed", Status.CLOSED),
        ("idle_timeout", Status.CLOSED),
        ("Completed", Status.CLOSED),  # exact match only
    ],
)
@pytest.mark.parametrize("status", [Status.CREATED, Status.ACTIVE, Status.CHECKPOINTED])
def test_closed_vs_completed(status: Status, reason: str, expected: Status) -> None:
    result = transition(state_in(status), ev(SessionClosed, reason=reason))
    assert isinstance(result, Applied)
    assert result.new_state.status is expected
    assert is_terminal(result.new_state)


def test_session_closed_default_reason_completes() -> None:
    event = SessionClosed(
        event_id="e-1",
        occurred_at=T0,
        tenant_id="t-1",
        session_id="s-1",
        idempotency_key="k-1",
    )
    assert evolve(state_in(Status.ACTIVE), event).status is Status.COMPLETED  # type: ignore[union-attr]


# --- quarantine ------------------------------------------------------------------------


def test_repeated_invalid_transitions_quarantine_exactly_at_the_threshold() -> None:
    state: SessionState | None = state_in(Status.ACTIVE)
    policy = LifecyclePolicy(quarantine_after=3, within=timedelta(minutes=10))
    seen = []
    for minute in (0, 4, 8):
        result = transition(state, ev(SessionResumed, timedelta(minutes=minute)), policy)
        assert isinstance(result, Rejected)
        seen.append((result.quarantined, result.new_state.status))  # type: ignore[union-attr]
        state = result.new_state
    assert seen == [
        (False, Status.ACTIVE),
        (False, Status.ACTIVE),
        (True, Status.QUARANTINED),
    ]
    assert is_quarantined(state)
    assert state is not None and state.quarantine_reason == QUARANTINE_REASON
    assert state.invalid_count_in_window == 3


def test_rejections_spread_beyond_the_window_do_not_quarantine() -> None:
    state: SessionState | None = state_in(Status.ACTIVE)
    for minute in (0, 6, 12, 18, 24, 30):
        result = transition(state, ev(SessionResumed, timedelta(minutes=minute)))
        assert isinstance(result, Rejected) and not result.quarantined
        state = result.new_state
    assert state is not None and state.status is Status.ACTIVE
    assert state.invalid_count_in_window == 2  # the ones at 24 and 30 minutes


def test_window_is_inclusive_and_measured_in_event_time() -> None:
    # Rejections exactly `within` apart still count; the wall clock plays no part.
    state: SessionState | None = state_in(Status.ACTIVE)
    for minute in (0, 5, 10):
        result = transition(state, ev(SessionResumed, timedelta(minutes=minute)))
        state = result.new_state
    assert is_quarantined(state)


def test_quarantine_threshold_is_configurable() -> None:
    policy = LifecyclePolicy(quarantine_after=1, within=timedelta(0))
    result = transition(state_in(Status.CHECKPOINTED), ev(CheckpointCreated), policy)
    assert isinstance(result, Rejected) and result.quarantined
    assert is_quarantined(result.new_state)


def test_quarantine_trigger_derives_rejection_and_quarantine_notice() -> None:
    state: SessionState | None = state_in(Status.ACTIVE)
    for minute in (0, 1):
        state = evolve(state, ev(SessionResumed, timedelta(minutes=minute)))
    cause = ev(SessionResumed, timedelta(minutes=2), event_id="cause-3")
    new_state, derived = step(state, cause)
    assert is_quarantined(new_state)
    assert [type(d) for d in derived] == [InvalidTransitionRejected, SessionQuarantined]
    rejected, quarantined = derived
    assert isinstance(rejected, InvalidTransitionRejected)
    assert rejected.from_state == "active"
    assert rejected.attempted == "SessionResumed"
    assert rejected.reason.startswith(f"{INVALID_TRANSITION}: ")
    assert isinstance(quarantined, SessionQuarantined)
    assert quarantined.reason == QUARANTINE_REASON
    for d in derived:
        assert d.causation_id == "cause-3"
        assert d.occurred_at == cause.occurred_at
        assert (d.tenant_id, d.session_id, d.workflow_id) == ("t-1", "s-1", "wf-1")
        assert d.correlation_id == "corr-1"
        assert d.producer == PRODUCER
        assert d.event_id != cause.event_id
    assert rejected.event_id != quarantined.event_id
    assert rejected.idempotency_key != quarantined.idempotency_key


def test_already_quarantined_session_is_not_quarantined_again() -> None:
    state: SessionState | None = state_in(Status.QUARANTINED, quarantine_reason="egress")
    for minute in range(5):
        event = ev(TurnCompleted, timedelta(minutes=minute))
        derived = decide(state, event)
        assert [type(d) for d in derived] == [InvalidTransitionRejected]
        state = evolve(state, event)
    assert state is not None and state.quarantine_reason == "egress"


def test_resume_from_quarantine_clears_the_invalid_history() -> None:
    state: SessionState | None = state_in(Status.ACTIVE)
    for minute in (0, 1, 2):
        state = evolve(state, ev(SessionResumed, timedelta(minutes=minute)))
    assert is_quarantined(state)
    result = transition(state, ev(SessionResumed, timedelta(minutes=3)))
    assert isinstance(result, Applied)
    resumed = result.new_state
    assert resumed.status is Status.ACTIVE
    assert resumed.quarantine_reason is None
    assert resumed.invalid_times == () and resumed.invalid_count_in_window == 0
    # one more mistake right after the release does not re-quarantine at once
    again = transition(resumed, ev(CheckpointCreated, timedelta(minutes=3)))
    assert isinstance(again, Applied)
    again = transition(again.new_state, ev(CheckpointCreated, timedelta(minutes=4)))
    assert isinstance(again, Rejected) and not again.quarantined


def test_producer_quarantine_records_its_reason() -> None:
    result = transition(state_in(Status.WAITING_FOR_TOOL), ev(SessionQuarantined, reason="egress"))
    assert isinstance(result, Applied)
    assert result.new_state.status is Status.QUARANTINED
    assert result.new_state.quarantine_reason == "egress"
    assert result.new_state.pending_operations == frozenset({"op-1"})


# --- idempotency is the caller's ------------------------------------------------------------


def test_the_machine_does_not_deduplicate() -> None:
    # The governor's fold drops a redelivery before it reaches the machine; handed
    # the same event twice, the machine folds it twice.
    state = fold([ev(SessionStarted), ev(TurnCompleted)])
    proposal = ev(ToolCallProposed, operation_key="op-1")
    done = ev(ToolCallCompleted, operation_key="op-1")
    after = evolve(evolve(state, proposal), done)
    again = transition(after, done)
    assert isinstance(again, Rejected) and again.reason_code == INVALID_TRANSITION
    bad = ev(SessionResumed)
    twice = evolve(evolve(state_in(Status.ACTIVE), bad), bad)
    assert twice is not None and twice.invalid_count_in_window == 2


# --- fold, determinism, persistence ---------------------------------------------------------


def _sessions(seed: int, sessions: int) -> dict[str, list[SessionEvent]]:
    by_session: dict[str, list[SessionEvent]] = {}
    for event in simulate(FleetConfig(seed=seed, sessions=sessions)).unique_events():
        if isinstance(event, SessionEvent):
            by_session.setdefault(event.session_id, []).append(event)
    return by_session


@pytest.fixture(scope="module")
def fleet() -> dict[str, list[SessionEvent]]:
    return _sessions(seed=7, sessions=2000)


def test_fold_equals_step_by_step_evolve(fleet: dict[str, list[SessionEvent]]) -> None:
    mixed = [
        ev(SessionStarted),
        ev(TurnCompleted),
        ev(SessionResumed),  # rejected
        ev(ToolCallProposed),
        ev(TurnCompleted),  # rejected
        ev(ToolCallCompleted),
        ev(CheckpointCreated),
        ev(SessionClosed, reason="completed"),
    ]
    for events in [mixed, *itertools.islice(fleet.values(), 50)]:
        state: SessionState | None = None
        for event in events:
            state = evolve(state, event)
        assert fold(events) == state
        # folding can resume from a snapshot
        assert fold(events[3:], state=fold(events[:3])) == state


def test_fold_skips_derived_events() -> None:
    started = ev(SessionStarted)
    turn = ev(TurnCompleted)
    derived = decide(evolve(None, started), ev(SessionResumed))
    assert fold([started, *derived, turn]) == fold([started, turn])


def test_derived_events_are_deterministic() -> None:
    state = state_in(Status.ACTIVE, invalid_times=(T0, T0), invalid_count_in_window=2)
    cause = ev(SessionResumed, event_id="fixed-id", idempotency_key="x" * 200)
    first = decide(state, cause)
    second = decide(state_from_dict(state_to_dict(state)), cause.model_copy())
    assert len(first) == 2
    assert [d.model_dump_json() for d in first] == [d.model_dump_json() for d in second]
    other = decide(state, ev(SessionResumed, event_id="other-id"))
    assert {d.event_id for d in first}.isdisjoint(d.event_id for d in other)
    for d in first:
        assert uuid.UUID(d.event_id).version == 5
        assert len(d.idempotency_key) <= 200


def test_state_round_trips_through_a_dict() -> None:
    state = fold(
        [
            ev(SessionStarted),
            ev(TurnCompleted),
            ev(ToolCallProposed, operation_key="op-9"),
            ev(SessionSuspended),
            ev(TurnCompleted, timedelta(seconds=3)),  # rejected: recorded
        ]
    )
    assert state is not None
    data = state_to_dict(state)
    assert data["version"] == 1 and data["status"] == "suspended"
    assert state_from_dict(data) == state
    assert "recent_event_ids" not in data
    with pytest.raises(ValueError, match="version"):
        state_from_dict({**data, "version": 2})


def test_state_from_dict_ignores_the_recent_event_ids_of_older_versions() -> None:
    state = fold([ev(SessionStarted), ev(TurnCompleted)])
    assert state is not None
    older = {**state_to_dict(state), "recent_event_ids": ["e-1", "e-2"]}
    assert state_from_dict(older) == state


def test_misrouted_and_foreign_events_raise() -> None:
    state = state_in(Status.ACTIVE)
    with pytest.raises(ValueError, match="session"):
        transition(state, ev(TurnCompleted, session_id="s-2"))
    decision = PolicyDecided(
        event_id="p-1",
        occurred_at=T0,
        tenant_id="t-1",
        session_id="s-1",
        idempotency_key="k",
        operation_key="op-1",
        tool="web.search",
        action="query",
        decision="allow",
        reason_code="ok",
        policy_version="v1",
        rule_id="r-1",
        evaluation_us=1,
        key_id="k1",
        signature="00",
        expires_at=T0,
    )
    with pytest.raises(TypeError):
        transition(state, decision)


def test_policy_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        LifecyclePolicy(quarantine_after=0)
    with pytest.raises(ValueError):
        LifecyclePolicy(within=timedelta(seconds=-1))


# --- the simulated fleet ----------------------------------------------------------------------


def test_simulated_fleet_folds_with_zero_rejections(fleet: dict[str, list[SessionEvent]]) -> None:
    assert len(fleet) == 2000
    rejections: Counter[tuple[str, str, str]] = Counter()
    finals: Counter[Status] = Counter()
    for events in fleet.values():
        state: SessionState | None = None
        for event in events:
            result = transition(state, event)
            if isinstance(result, Rejected):
                rejections[(result.from_state, type(event).__name__, result.reason_code)] += 1
            state = result.new_state
        assert state is not None
        finals[state.status] += 1
    assert rejections == Counter()
    # every session ends; quarantined is the simulator's third ending
    assert set(finals) <= {Status.COMPLETED, Status.CLOSED, Status.FAILED, Status.QUARANTINED}
    assert finals[Status.COMPLETED] > 0 and finals[Status.CLOSED] > 0


def test_simulated_fleet_endings_match_the_ground_truth() -> None:
    sim = simulate(FleetConfig(seed=11, sessions=500))
    truth = sim.truth["sessions_by_end"]
    states: dict[str, SessionState | None] = {}
    for event in sim.unique_events():
        if isinstance(event, SessionEvent):
            states[event.session_id] = evolve(states.get(event.session_id), event)
    finals = Counter(s.status for s in states.values() if s is not None)
    assert finals[Status.COMPLETED] + finals[Status.CLOSED] == truth["closed"]
    assert finals[Status.FAILED] == truth["failed"]
    assert finals[Status.QUARANTINED] == truth["quarantined"]


# --- property: random sequences ---------------------------------------------------------------

_KINDS = sorted(BY_NAME)
_step = st.tuples(
    st.sampled_from(_KINDS),
    st.sampled_from(["op-a", "op-b", "op-c"]),  # operation key
    st.sampled_from(["completed", "user_closed"]),  # close reason
    st.integers(min_value=-30, max_value=400),  # seconds since the previous event
    st.one_of(st.none(), st.integers(min_value=0, max_value=50)),  # reuse an earlier id
    st.sampled_from(["t-1", "t-1", "t-1", "t-2"]),  # tenant
)


def _build(kind: str, op: str, reason: str, at: datetime, event_id: str, tenant: str) -> Any:
    extra: dict[str, Any] = {"event_id": event_id, "tenant_id": tenant}
    if kind in ("ToolCallProposed", "ApprovalRecorded", "ToolCallCompleted"):
        extra["operation_key"] = op
    if kind == "SessionClosed":
        extra["reason"] = reason
    return ev(kind, at, **extra)


def _check_invariants(state: SessionState, policy: LifecyclePolicy) -> None:
    if state.status is Status.WAITING_FOR_TOOL:
        assert state.pending_operations
    if state.status in (Status.CREATED, Status.ACTIVE, Status.CHECKPOINTED):
        assert not state.pending_operations
    assert state.invalid_count_in_window == len(state.invalid_times)
    assert len(state.invalid_times) <= policy.quarantine_after
    if state.quarantine_reason is not None:
        assert state.status is Status.QUARANTINED or state.status in TERMINAL


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(_step, max_size=60),
    start_first=st.booleans(),
    quarantine_after=st.integers(min_value=1, max_value=4),
)
def test_random_sequences_never_raise_nor_leave_a_terminal_state(
    steps: list[tuple[str, str, str, int, int | None, str]],
    start_first: bool,
    quarantine_after: int,
) -> None:
    policy = LifecyclePolicy(quarantine_after=quarantine_after, within=timedelta(minutes=10))
    events: list[SessionEvent] = []
    if start_first:
        events.append(ev(SessionStarted, T0, event_id="e-start"))
    at = T0
    for i, (kind, op, reason, dt, reuse, tenant) in enumerate(steps):
        at += timedelta(seconds=dt)
        event_id = f"e-{i}"
        if reuse is not None and events:
            event_id = events[reuse % len(events)].event_id
        events.append(_build(kind, op, reason, at, event_id, tenant))

    state: SessionState | None = None
    for event in events:
        before = state
        result = transition(before, event, policy)
        derived = decide(before, event, policy)
        state = result.new_state
        if before is not None:
            assert state is not None
        if before is not None and before.status in TERMINAL:
            assert state is not None and state.status is before.status
        if isinstance(result, Rejected):
            assert len(derived) == 1 + result.quarantined
            if state is not None and before is not None:
                expected = Status.QUARANTINED if result.quarantined else before.status
                assert state.status is expected
        else:
            assert derived == []
        if state is not None:
            _check_invariants(state, policy)
    assert fold(events, policy) == state
