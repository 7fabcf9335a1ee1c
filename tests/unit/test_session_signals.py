"""Budget signals and admission on the session side, without Kafka.

streams/processors.py: process_signal, budget_inputs, policy_context and
process(profile=, known_decision=); streams/budget.py: PendingReservations;
streams/admission.py: partition_for and the request body parsing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

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
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
)
from govstream.settings import Settings
from projections.policy import PolicyDocument, load_policy
from streams.admission import Admission, Refusal, ToolBody, TurnBody, partition_for
from streams.budget import PendingReservations
from streams.processors import (
    PRODUCER,
    Signing,
    budget_inputs,
    decide_proposal,
    empty_entry,
    policy_context,
    process,
    process_signal,
)
from tests.factories import T0, session_started, tenant_profile, tool_proposal, turn

SETTINGS = Settings()
SIGNING = Signing.from_settings(SETTINGS)
NOW = T0 + timedelta(seconds=30)
WINDOW = 100


@pytest.fixture(scope="module")
def policy() -> PolicyDocument:
    return load_policy(SETTINGS.resolved_policy_path)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ids(event_id: str, when: datetime) -> dict[str, Any]:
    """Envelope of session s-1 (the event id doubles as idempotency key)."""
    return {
        "event_id": event_id,
        "occurred_at": when,
        "tenant_id": "t-001",
        "session_id": "s-1",
        "idempotency_key": event_id,
    }


def proposal(op: str = "op-1", seconds: float = 5, **overrides: Any) -> ToolCallProposed:
    """A GET to api.good.com that the team plan allows (unless the budget says no)."""
    fields = {**ids(f"prop-{op}-{seconds}", at(seconds)), "operation_key": op}
    fields.update({"destination_host": "api.good.com", **overrides})
    return tool_proposal(**fields)


def exceeded(action: str = "suspend", event_id: str = "bx-1", **kw: Any) -> BudgetExceeded:
    fields: dict[str, Any] = {"scope": "session", "scope_key": "s-1", "fallback_model": None}
    fields.update(kw)
    return BudgetExceeded(**ids(event_id, at(4)), limit=1000, used=1000, action=action, **fields)


def step(
    entry: dict[str, Any] | None,
    event: SessionEvent,
    policy: PolicyDocument,
    **kw: Any,
) -> tuple[dict[str, Any], list[SessionEvent]]:
    return process(entry, event, policy=policy, signing=SIGNING, now=NOW, **kw)


def active(policy: PolicyDocument) -> dict[str, Any]:
    """The entry of session s-1 (plan team) after its start and one turn."""
    entry, _ = step(None, session_started(occurred_at=at(0)), policy)
    entry, _ = step(entry, turn(occurred_at=at(1)), policy)
    assert entry["lifecycle"]["status"] == "active"
    return entry


def decisions_of(out: list[SessionEvent]) -> list[tuple[str, str]]:
    return [(e.decision, e.reason_code) for e in out if isinstance(e, PolicyDecided)]


# --- process_signal: BudgetExceeded ------------------------------------------------------


def test_suspend_signal_suspends_an_active_session(policy: PolicyDocument) -> None:
    entry = active(policy)
    snapshot = json.dumps(entry, sort_keys=True)
    signal = exceeded("suspend")
    new, out = process_signal(entry, signal, dedupe_window=WINDOW)
    assert json.dumps(entry, sort_keys=True) == snapshot  # the input is not mutated
    assert new["budget"] == {"action": "suspend", "scope": "session", "fallback_model": None}
    assert new["lifecycle"]["status"] == "suspended"
    assert new["applied"]["bx-1"] == ["bx-1", 1]
    assert [type(e) for e in out] == [BudgetExceeded, SessionSuspended]
    assert out[0] == signal
    suspended = out[1]
    assert isinstance(suspended, SessionSuspended)
    assert (suspended.causation_id, suspended.idempotency_key) == ("bx-1", "budget-suspend/bx-1")
    expected = (at(4), "s-1", PRODUCER)
    assert (suspended.occurred_at, suspended.session_id, suspended.producer) == expected
    assert suspended.reason == "budget exceeded: session s-1"
    # Deterministic: the same signal derives the same event; another signal does not.
    _, again = process_signal(entry, signal, dedupe_window=WINDOW)
    assert again[1].event_id == suspended.event_id != signal.event_id
    _, other = process_signal(entry, exceeded("suspend", "bx-2"), dedupe_window=WINDOW)
    assert other[1].event_id != suspended.event_id


def test_the_same_signal_twice_emits_nothing_the_second_time(policy: PolicyDocument) -> None:
    entry, _ = process_signal(active(policy), exceeded("suspend"), dedupe_window=WINDOW)
    again, out = process_signal(entry, exceeded("suspend"), dedupe_window=WINDOW)
    assert out == []
    assert again == entry


def test_degrade_signal_gates_but_does_not_suspend(policy: PolicyDocument) -> None:
    signal = exceeded("degrade", fallback_model="claude-haiku-4", scope="tenant_day")
    new, out = process_signal(active(policy), signal, dedupe_window=WINDOW)
    assert new["budget"] == {
        "action": "degrade",
        "scope": "tenant_day",
        "fallback_model": "claude-haiku-4",
    }
    assert new["lifecycle"]["status"] == "active"
    assert out == [signal]


def test_suspend_of_a_session_not_yet_active_is_rejected_but_gates(
    policy: PolicyDocument,
) -> None:
    # A tenant over its concurrent sessions: the signal follows SessionStarted.
    created, _ = step(None, session_started(occurred_at=at(0)), policy)
    new, out = process_signal(created, exceeded("suspend"), dedupe_window=WINDOW)
    assert [type(e) for e in out] == [BudgetExceeded, InvalidTransitionRejected]
    assert new["lifecycle"] == created["lifecycle"]
    assert new["budget"]["action"] == "suspend"
    # No session state at all: only the verdict is kept.
    signal = exceeded("suspend", "bx-9")
    bare, out = process_signal(None, signal, dedupe_window=WINDOW)
    assert (bare["lifecycle"], bare["budget"]["action"], out) == (None, "suspend", [signal])


@pytest.mark.parametrize(("action", "fallback"), [("suspend", None), ("degrade", "claude-haiku-4")])
def test_proposals_of_a_gated_session_are_denied(
    policy: PolicyDocument, action: str, fallback: str | None
) -> None:
    entry = active(policy)
    _, out = step(entry, proposal("op-ok"), policy)
    assert decisions_of(out) == [("allow", "ALLOWED")]  # the control
    entry, _ = process_signal(
        entry, exceeded(action, fallback_model=fallback), dedupe_window=WINDOW
    )
    _, out = step(entry, proposal("op-1"), policy)
    (decided,) = (e for e in out if isinstance(e, PolicyDecided))
    expected = ("deny", "BUDGET_EXCEEDED", "budget.exceeded")
    assert (decided.decision, decided.reason_code, decided.rule_id) == expected


def test_resume_clears_the_budget_verdict(policy: PolicyDocument) -> None:
    entry, _ = process_signal(active(policy), exceeded("suspend"), dedupe_window=WINDOW)
    resumed = SessionResumed(**ids("resume-1", at(10)), reason="operator raised the budget")
    entry, out = step(entry, resumed, policy)
    assert out == []
    assert (entry["budget"], entry["lifecycle"]["status"]) == (None, "active")
    _, out = step(entry, proposal("op-2", 11), policy)
    assert decisions_of(out) == [("allow", "ALLOWED")]


def test_rejected_resume_does_not_lift_the_budget_gate(policy: PolicyDocument) -> None:
    # BUG: process() clears entry["budget"] on any SessionResumed whose new_state is
    # not None, and a rejected transition also returns a state: a resume of a
    # degraded (still active) session is rejected by the lifecycle, yet lifts the gate.
    signal = exceeded("degrade", fallback_model="claude-haiku-4")
    entry, _ = process_signal(active(policy), signal, dedupe_window=WINDOW)
    resumed = SessionResumed(**ids("resume-1", at(10)), reason="operator")
    entry, out = step(entry, resumed, policy)
    assert [type(e) for e in out] == [InvalidTransitionRejected]
    verdict = {"action": "degrade", "scope": "session", "fallback_model": "claude-haiku-4"}
    assert entry["budget"] == verdict


# --- process_signal: decisions from the admission API ------------------------------------


def _api_decision(
    policy: PolicyDocument, op: str, entry: dict[str, Any], **overrides: Any
) -> PolicyDecided:
    made = proposal(op, 3, **overrides)
    return decide_proposal(made, entry, "active", policy=policy, signing=SIGNING, now=NOW)


def test_first_decision_per_operation_wins(policy: PolicyDocument) -> None:
    entry = active(policy)
    allow = _api_decision(policy, "op-7", entry)
    deny = _api_decision(policy, "op-7", entry, tool="shell")
    assert (allow.decision, deny.decision) == ("allow", "deny")
    entry, out = process_signal(entry, allow, dedupe_window=WINDOW)
    assert out == [allow]
    assert PolicyDecided.model_validate(entry["decisions"]["op-7"]) == allow
    late = deny.model_copy(update={"idempotency_key": "PolicyDecided/late"})
    after, out = process_signal(entry, late, dedupe_window=WINDOW)
    assert out == []
    assert after["decisions"] == entry["decisions"]
    assert "PolicyDecided/late" in after["applied"]
    # A proposal of that operation gets the stored decision back, bit for bit.
    final, out = step(after, proposal("op-7", 9), policy)
    (again,) = (e for e in out if isinstance(e, PolicyDecided))
    assert again.model_dump_json() == allow.model_dump_json()
    # Its slot was forwarded with the signal already: not a new decision here.
    assert budget_inputs(proposal("op-7", 9), after, final, out) == []


def test_signal_after_the_stream_decided_is_not_stored(policy: PolicyDocument) -> None:
    entry, out = step(active(policy), proposal("op-3"), policy)
    stream_decision = out[-1]
    assert decisions_of(out) == [("allow", "ALLOWED")]
    api = _api_decision(policy, "op-3", active(policy), tool="shell")
    after, out = process_signal(entry, api, dedupe_window=WINDOW)
    assert out == []
    assert after["decisions"]["op-3"] == stream_decision.model_dump(mode="json")


def test_admission_decided_signal_is_recorded_as_it_is() -> None:
    signal = AdmissionDecided(
        **ids("adm-1", at(2)), request_kind="tool", decision="allow", reason_code="ALLOWED"
    )
    entry, out = process_signal(None, signal, dedupe_window=WINDOW)
    assert out == [signal]
    assert entry == {**empty_entry(), "applied": {"adm-1": ["adm-1", 1]}}
    assert process_signal(entry, signal, dedupe_window=WINDOW) == (entry, [])


def test_known_decision_is_used_instead_of_evaluating(policy: PolicyDocument) -> None:
    entry = active(policy)
    known = _api_decision(policy, "op-5", entry, tool="shell")  # a deny the API gave
    asked: list[str] = []

    def lookup(op: str) -> PolicyDecided | None:
        asked.append(op)
        return known if op == "op-5" else None

    entry, out = step(entry, proposal("op-5"), policy, known_decision=lookup)
    assert (known.decision, known.reason_code) == ("deny", "TOOL_NOT_PERMITTED")
    assert out[-1] == known  # the proposal itself would have been allowed
    assert entry["decisions"]["op-5"] == known.model_dump(mode="json")
    _, out = step(entry, proposal("op-6", 6), policy, known_decision=lookup)
    assert decisions_of(out) == [("allow", "ALLOWED")]
    assert asked == ["op-5", "op-6"]


# --- budget_inputs --------------------------------------------------------------------------


def _forwarded(
    policy: PolicyDocument, entry: dict[str, Any] | None, event: SessionEvent
) -> tuple[dict[str, Any], list[SessionEvent]]:
    after, out = step(entry, event, policy)
    return after, budget_inputs(event, entry, after, out)


def test_budget_inputs_forward_budgeted_events_once(policy: PolicyDocument) -> None:
    start = session_started(occurred_at=at(0))
    entry, sent = _forwarded(policy, None, start)
    assert sent == [start]
    assert _forwarded(policy, entry, start)[1] == []  # redelivery
    first = turn(occurred_at=at(1), idempotency_key="turn-1")
    entry, sent = _forwarded(policy, entry, first)
    assert sent == [first]
    assert _forwarded(policy, entry, first)[1] == []
    retry = turn(occurred_at=at(2), idempotency_key="turn-1", attempt=2)
    after, out = step(entry, retry, policy)
    assert [type(e) for e in out] == [DuplicateSuppressed]
    assert budget_inputs(retry, entry, after, out) == []
    entry, sent = _forwarded(policy, entry, proposal("op-1"))
    assert [(type(e), e.decision) for e in sent] == [(PolicyDecided, "allow")]
    done = ToolCallCompleted(
        **ids("done-1", at(6)), operation_key="op-1", status="succeeded", latency_ms=4
    )
    entry, sent = _forwarded(policy, entry, done)
    assert sent == [done]
    closed = SessionClosed(**ids("close-1", at(7)))
    entry, sent = _forwarded(policy, entry, closed)
    assert sent == [closed]
    assert entry["lifecycle"]["status"] == "completed"
    # A turn the lifecycle rejects (after the end) still spent its tokens.
    late = turn(occurred_at=at(8))
    entry, sent = _forwarded(policy, entry, late)
    assert sent == [late]
    assert entry["lifecycle"]["invalid_count_in_window"] == 1


def test_budget_inputs_forward_failures_and_new_allows_only(policy: PolicyDocument) -> None:
    entry = active(policy)
    _, sent = _forwarded(policy, entry, proposal("op-x", tool="shell"))  # denied
    assert sent == []
    entry, sent = _forwarded(policy, entry, proposal("op-1"))
    assert len(sent) == 1
    # The same operation proposed again: the stored decision, not a new slot.
    entry, sent = _forwarded(policy, entry, proposal("op-1", 6))
    assert sent == []
    failed = SessionFailed(**ids("fail-1", at(9)), reason="runtime crashed")
    assert _forwarded(policy, entry, failed)[1] == [failed]


def test_budget_inputs_skip_unbudgeted_events(policy: PolicyDocument) -> None:
    entry, _ = process_signal(active(policy), exceeded("suspend"), dedupe_window=WINDOW)
    resumed = SessionResumed(**ids("resume-1", at(10)), reason="ok")
    assert _forwarded(policy, entry, resumed)[1] == []


# --- policy_context ---------------------------------------------------------------------------


def test_policy_context_prefers_the_tenant_profile() -> None:
    profile = tenant_profile(
        plan="enterprise", egress_allowlist=["api.t.example"], tool_permissions={"shell": "deny"}
    )
    entry = {**empty_entry(), "plan": "team"}
    context = policy_context(entry, "staging", "active", profile)
    expected = ("enterprise", "staging", "active")
    assert (context.plan, context.environment, context.session_status) == expected
    assert context.tenant_egress_allowlist == ("api.t.example",)
    assert dict(context.tenant_tool_permissions) == {"shell": "deny"}
    assert context.budget_exceeded is False
    plain = policy_context(entry, "production", "suspended", None)
    assert (plain.plan, plain.tenant_egress_allowlist) == ("team", ())
    assert dict(plain.tenant_tool_permissions) == {}
    assert policy_context(empty_entry(), "production", "none", None).plan == "free"
    verdicts = [None, {"action": "suspend"}, {"action": "degrade"}, {"action": "deny"}]
    for verdict, gated in zip(verdicts, [False, True, True, False], strict=True):
        context = policy_context({**entry, "budget": verdict}, "production", "active", None)
        assert context.budget_exceeded is gated, verdict


@pytest.mark.parametrize(
    ("overrides", "profile", "expected"),
    [
        ({"tool": "shell"}, None, ("deny", "TOOL_NOT_PERMITTED")),
        ({"tool": "shell"}, {"plan": "enterprise"}, ("allow", "ALLOWED")),
        ({"destination_host": "api.t.example"}, None, ("deny", "EGRESS_NOT_ALLOWED")),
        ({"destination_host": "api.t.example"}, {"egress_allowlist": ["api.t.example"]},
         ("allow", "ALLOWED")),
        ({}, {"tool_permissions": {"http_request": "deny"}}, ("deny", "TENANT_DENIED")),
    ],
)  # fmt: skip
def test_process_decides_with_the_tenant_profile(
    policy: PolicyDocument,
    overrides: dict[str, Any],
    profile: dict[str, Any] | None,
    expected: tuple[str, str],
) -> None:
    tenant: TenantProfileUpdated | None = None
    if profile is not None:
        tenant = tenant_profile(**{"plan": "team", **profile})
    _, out = step(active(policy), proposal("op-1", **overrides), policy, profile=tenant)
    assert decisions_of(out) == [expected]


# --- PendingReservations -------------------------------------------------------------------


def test_pending_reservations_add_and_settle() -> None:
    pending = PendingReservations()
    pending.add("r1", {"a": 100, "b": 60}, T0, "t-1")
    pending.add("r2", {"a": 50}, T0, "t-2")
    assert pending.totals == {"a": 150, "b": 60}
    # Counted per tenant: one tenant never sees another's reservations.
    assert (pending.count_of("t-1"), pending.count_of("t-2"), pending.count_of("t-3")) == (1, 1, 0)
    pending.settle("r1")
    assert (pending.count_of("t-1"), pending.count_of("t-2")) == (0, 1)
    assert pending.totals == {"a": 50}
    for repeat in ("r1", "unknown"):
        pending.settle(repeat)  # settled or never added: nothing changes
        assert pending.totals == {"a": 50}
    pending.settle("r2")
    assert (pending.totals, pending.by_id) == ({}, {})


def test_pending_reservations_forget_strictly_older_entries() -> None:
    pending = PendingReservations()
    for n, seconds in enumerate((0, 30, 60)):
        pending.add(f"r{n}", {"a": 10**n}, at(seconds), "t-1")
    pending.forget_older_than(at(30))
    assert list(pending.by_id) == ["r1", "r2"]
    assert pending.totals == {"a": 110}
    pending.forget_older_than(at(61))
    assert (pending.totals, pending.by_id) == ({}, {})


# --- admission: partitioning and request bodies -----------------------------------------------


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12, 50])
def test_partition_for_matches_the_default_partitioner(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    keys = [f"t-{n:03d}" for n in range(400)] + ["", "tenant/é", "租户", "a" * 200, "s-1"]
    got = [partition_for(key, partitions) for key in keys]
    assert got == [partitioner(key.encode(), every, every) for key in keys]
    assert set(got) == set(every)  # every partition is hit: not a constant


def _refusal(body_type: type[TurnBody | ToolBody], body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(Refusal) as caught:
        Admission._parse(body_type, raw)
    assert caught.value.status == 422
    return str(caught.value)


TURN = {"tenant": "t-001", "session": "s-1", "model": "gpt-4o", "estimated_tokens": 100}
TOOL = {"tenant": "t-001", "session": "s-1", "tool": "http_request", "action": "fetch",
        "operation_key": "op-1", "risk_level": "low"}  # fmt: skip


def test_valid_bodies_parse_with_defaults() -> None:
    body = Admission._parse(TurnBody, json.dumps(TURN).encode())
    assert body == TurnBody(**TURN)
    assert isinstance(body, TurnBody)
    assert (body.workflow, body.environment, body.estimated_tokens) == (None, "production", 100)
    tool = Admission._parse(ToolBody, json.dumps(TOOL).encode())
    assert isinstance(tool, ToolBody)
    assert (tool.method, tool.payload_bytes, tool.destination_host) == ("POST", 0, None)


@pytest.mark.parametrize(
    ("body_type", "body", "message"),
    [
        (TurnBody, {**TURN, "estimated_tokens": -1},
         "estimated_tokens: Input should be greater than or equal to 0"),
        (TurnBody, {**TURN, "estimated_tokens": 10_000_001},
         "estimated_tokens: Input should be less than or equal to 10000000"),
        (TurnBody, {**TURN, "priority": "high"}, "priority: Extra inputs are not permitted"),
        (TurnBody, {**TURN, "tenant": "t 001"}, "tenant: String should match pattern"),
        (TurnBody, {**TURN, "tenant": ""}, "tenant: String should have at least 1 character"),
        (TurnBody, {k: v for k, v in TURN.items() if k != "model"}, "model: Field required"),
        (TurnBody, b"{not json", "body: Invalid JSON"),
        (TurnBody, [TURN], "body: Input should be an object"),
        # Strict types: a number is a JSON number, not a string or a boolean.
        (TurnBody, {**TURN, "estimated_tokens": "100"}, "estimated_tokens: Input should be a"),
        (TurnBody, {**TURN, "estimated_tokens": True}, "estimated_tokens: Input should be a"),
        (TurnBody, {**TURN, "estimated_tokens": 1.5}, "estimated_tokens: Input should be a"),
        # Ids of the events' alphabet: never a path.
        (TurnBody, {**TURN, "session": "../../etc/passwd"}, "session: String should match"),
        (ToolBody, {**TOOL, "session": "s/../x"}, "session: String should match"),
        (ToolBody, {**TOOL, "risk_level": "extreme"}, "risk_level: Input should be 'low'"),
        (ToolBody, {**TOOL, "operation_key": "op 1"}, "operation_key: String should match"),
        (ToolBody, {**TOOL, "payload_bytes": -5}, "payload_bytes: Input should be greater"),
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_with_the_field_named(
    body_type: type[TurnBody | ToolBody], body: Any, message: str
) -> None:
    assert _refusal(body_type, body).startswith(message)


def test_parsed_bodies_are_frozen() -> None:
    body = TurnBody(**TURN)
    with pytest.raises(ValueError, match="frozen"):
        body.estimated_tokens = 5  # type: ignore[misc]
