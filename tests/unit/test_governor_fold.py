"""The governor's fold (projections/governor): pure, no Kafka.

Crafted sessions cross budgets at known records; a simulated fleet is folded
again and again (other checkpoint boundaries, an abort, a restore from the
changelog bytes) and must give the same bytes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.models import (
    AdmissionRequested,
    BudgetExceeded,
    ContextCompactionRequested,
    DuplicateSuppressed,
    Event,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    TenantBudgets,
    ToolCallCompleted,
)
from events.signing import verify_decision
from govstream.settings import Settings, governor_config
from govstream.simulate import FleetConfig, simulate
from projections.governor.context import compact_context, tenant_balances
from projections.governor.fold import Folded, policy_chain_ok, step
from projections.governor.state import (
    PartitionState,
    SessionEntry,
    TenantEntry,
    canonical,
    session_key,
)
from projections.pricing import PriceTable
from tests.factories import session_started, tenant_profile, tool_proposal, turn

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CONFIG = governor_config(Settings(home="/nonexistent", compaction_threshold_tokens=2_000))
KEYS = {CONFIG.key_id: CONFIG.signing_key}


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Log:
    """A partition's log in a test: records folded in order, derived events kept."""

    def __init__(self) -> None:
        self.state = PartitionState()
        self.derived: list[SessionEvent] = []
        self.steps: list[Folded] = []

    def fold(self, *events: Event, log_at: datetime | None = None) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        for event in events:
            at = log_at or event.occurred_at
            folded = step(self.state, event, ms(at), CONFIG)
            self.steps.append(folded)
            out += folded.derived
        self.derived += out
        return out

    def session(self, tenant: str, sid: str) -> SessionEntry:
        entry = self.state.peek(session_key(tenant, sid))
        assert isinstance(entry, SessionEntry)
        return entry


def _id() -> str:
    return str(uuid.uuid4())


def profile(tenant: str, at: datetime = T0, **budgets: int) -> Any:
    return tenant_profile(
        tenant_id=tenant, event_id=_id(), occurred_at=at, plan="team",
        budgets=TenantBudgets(**budgets), egress_allowlist=["api.example.com"],
    )  # fmt: skip


def start(tenant: str, sid: str, tier: str = "C", seconds: float = 0, **fields: Any) -> Any:
    return session_started(
        event_id=_id(), tenant_id=tenant, session_id=sid, tier=tier, plan="team",
        occurred_at=T0 + timedelta(seconds=seconds), **fields,
    )  # fmt: skip


def a_turn(tenant: str, sid: str, seconds: float, tokens: int = 300, **fields: Any) -> Any:
    return turn(
        event_id=_id(), tenant_id=tenant, session_id=sid, input_tokens=tokens - 100,
        output_tokens=100, cost_usd_micros=tokens, occurred_at=T0 + timedelta(seconds=seconds),
        **fields,
    )  # fmt: skip


def propose(tenant: str, sid: str, op: str, seconds: float, **fields: Any) -> Any:
    return tool_proposal(
        event_id=_id(), tenant_id=tenant, session_id=sid, operation_key=op,
        occurred_at=T0 + timedelta(seconds=seconds),
        **{"idempotency_key": f"{sid}/{op}", "destination_host": "api.example.com", **fields},
    )  # fmt: skip


def ask_turn(tenant: str, sid: str, seconds: float, tokens: int = 100, **fields: Any) -> Any:
    event_id = _id()
    return AdmissionRequested(
        event_id=event_id, occurred_at=T0 + timedelta(seconds=seconds), tenant_id=tenant,
        session_id=sid, idempotency_key=f"admission/{event_id}", request_kind="turn",
        estimated_tokens=tokens, **{"model": "gpt-4o", **fields},
    )  # fmt: skip


def ask_tool(tenant: str, sid: str, op: str, seconds: float, tool: str = "http_request") -> Any:
    event_id = _id()
    return AdmissionRequested(
        event_id=event_id, occurred_at=T0 + timedelta(seconds=seconds), tenant_id=tenant,
        session_id=sid, idempotency_key=f"admission/{event_id}", request_kind="tool",
        tool=tool, action="fetch", operation_key=op, destination_host="api.example.com",
        method="GET", payload_bytes=100, risk_level="low",
    )  # fmt: skip  # the same call as propose(): one operation, one content


def types(events: list[SessionEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- budgets in log order ----------------------------------------------------------------------


def test_a_turn_crossing_the_session_budget_suspends_before_the_next_record() -> None:
    log = Log()
    log.fold(profile("t-1", tokens_per_session=1_000), start("t-1", "s-1", tier="C"))
    assert types(log.fold(a_turn("t-1", "s-1", 1, tokens=600))) == ["BudgetWarning"]
    crossing = log.fold(a_turn("t-1", "s-1", 2, tokens=600))
    # 80% and 100% warned, exceeded, and the session suspended in the same step.
    assert types(crossing) == [
        "BudgetWarning",
        "BudgetWarning",
        "BudgetExceeded",
        "SessionSuspended",
    ]
    exceeded = crossing[2]
    assert isinstance(exceeded, BudgetExceeded)
    assert (exceeded.scope, exceeded.used, exceeded.limit, exceeded.action) == (
        "session", 1_200, 1_000, "suspend",
    )  # fmt: skip
    assert log.session("t-1", "s-1").status == "suspended"
    # The very next records of the session are refused with the budget reason.
    (decided,) = [
        e for e in log.fold(propose("t-1", "s-1", "op-1", 3)) if isinstance(e, PolicyDecided)
    ]
    assert (decided.decision, decided.reason_code) == ("deny", "BUDGET_EXCEEDED")
    admission = log.fold(ask_turn("t-1", "s-1", 4))
    assert log.steps[-1].answer is not None
    assert log.steps[-1].answer["reason_code"] == "SESSION_SUSPENDED_BY_BUDGET"
    assert types(admission) == ["AdmissionDecided"]


def test_a_degrading_tier_is_gated_and_degraded_not_suspended() -> None:
    log = Log()
    log.fold(profile("t-1", tokens_per_session=1_000), start("t-1", "s-a", tier="A"))
    out = log.fold(a_turn("t-1", "s-a", 1, tokens=1_100, model="gpt-4o"))
    exceeded = next(e for e in out if isinstance(e, BudgetExceeded))
    assert (exceeded.action, exceeded.fallback_model) == ("degrade", "claude-haiku-4")
    assert "SessionSuspended" not in types(out)
    (decided,) = [
        e for e in log.fold(propose("t-1", "s-a", "op-1", 2)) if isinstance(e, PolicyDecided)
    ]
    assert (decided.decision, decided.reason_code) == ("deny", "BUDGET_EXCEEDED")


@pytest.mark.parametrize(
    ("budget", "scope"),
    [
        ({"tokens_per_workflow": 1_000}, "workflow"),
        ({"cost_per_day_usd_micros": 1_000}, "tenant_day"),
        ({"cost_per_month_usd_micros": 1_000}, "tenant_month"),
    ],
)
def test_workflow_and_tenant_budgets_are_crossed_across_sessions(
    budget: dict[str, int], scope: str
) -> None:
    log = Log()
    log.fold(profile("t-1", **budget))
    log.fold(start("t-1", "s-1", workflow_id="w-1"), start("t-1", "s-2", workflow_id="w-1"))
    log.fold(a_turn("t-1", "s-1", 1, tokens=600, workflow_id="w-1"))
    crossing = log.fold(a_turn("t-1", "s-2", 2, tokens=600, workflow_id="w-1"))
    exceeded = [e for e in crossing if isinstance(e, BudgetExceeded)]
    assert [e.scope for e in exceeded] == [scope]
    assert exceeded[0].session_id == "s-2"  # the session whose turn crossed it
    assert log.session("t-1", "s-2").status == "suspended"
    assert log.session("t-1", "s-1").status == "active"


def test_another_tenant_is_not_charged() -> None:
    log = Log()
    log.fold(
        profile("t-1", cost_per_day_usd_micros=1_000), profile("t-2", cost_per_day_usd_micros=1_000)
    )
    log.fold(start("t-1", "s-1"), start("t-2", "s-1"))
    log.fold(a_turn("t-1", "s-1", 1, tokens=900), a_turn("t-2", "s-1", 2, tokens=900))
    assert not any(isinstance(e, BudgetExceeded) for e in log.derived)
    assert tenant_balances(log.state, "t-1", CONFIG)["balances"]["tenant_cost_day"]["used"] == 900


# --- admission ----------------------------------------------------------------------------------


def test_200_turn_requests_against_a_budget_for_50_admit_exactly_50() -> None:
    log = Log()
    log.fold(profile("t-1", tokens_per_session=5_000), start("t-1", "s-1"))
    for n in range(200):
        log.fold(ask_turn("t-1", "s-1", 1 + n / 1000, tokens=100))
    answers = Counter(s.answer["reason_code"] for s in log.steps if s.answer)
    assert answers == {"ADMITTED": 50, "SESSION_TOKENS_EXHAUSTED": 150}


def test_reservations_expire_by_log_time() -> None:
    log = Log()
    log.fold(profile("t-1", tokens_per_session=100), start("t-1", "s-1"))
    log.fold(ask_turn("t-1", "s-1", 1, tokens=100))
    log.fold(ask_turn("t-1", "s-1", 2, tokens=100))
    assert [s.answer["reason_code"] for s in log.steps if s.answer] == [
        "ADMITTED", "SESSION_TOKENS_EXHAUSTED",
    ]  # fmt: skip
    # A minute of log time later the unused reservation no longer counts.
    later = T0 + CONFIG.reservation_timeout + timedelta(seconds=2)
    log.fold(ask_turn("t-1", "s-1", 3, tokens=100), log_at=later)
    assert log.steps[-1].answer is not None
    assert log.steps[-1].answer["reason_code"] == "ADMITTED"


def test_a_reservation_is_priced_at_the_price_in_force_that_day() -> None:
    """A price change mid-month: each admission reserves at its own day's price."""
    prices = PriceTable.from_mapping({"models": {"gpt-4o": [
        {"effective_from": "2026-11-01", "input": "2.50", "output": "10.00"},
        {"effective_from": "2026-11-23", "input": "2.50", "output": "40.00"},
    ]}})  # fmt: skip
    config = replace(CONFIG, prices=prices)
    state = PartitionState()
    for event in (profile("t-1"), start("t-1", "s-1")):
        step(state, event, ms(event.occurred_at), config)
    held = []
    for day in (0, 1):  # T0 is 2026-11-22; a day later the output price is four times
        ask = ask_turn("t-1", "s-1", 86_400 * day + 1, tokens=1_000)
        step(state, ask, ms(ask.occurred_at), config)
        tenant = state.peek("t/t-1")
        assert isinstance(tenant, TenantEntry)
        held.append(max(amount for amount, _ in tenant.month.reserved.values()))
    assert held[0] == 10_000 and held[-1] == 40_000  # 1,000 tokens at $10, then $40 / Mtok


def test_an_unpriced_model_is_refused_or_charged_at_the_fallback_price() -> None:
    state = PartitionState()
    for event in (profile("t-1"), start("t-1", "s-1")):
        step(state, event, ms(event.occurred_at), CONFIG)
    ask = ask_turn("t-1", "s-1", 1, model="gpt-9")
    assert (step(state, ask, ms(T0), CONFIG).answer or {})["reason_code"] == "UNKNOWN_MODEL"
    fallback = PriceTable.from_mapping({"f": {"input": "15", "output": "75"}})["f"]
    lenient = replace(CONFIG, fallback_price=fallback)
    again = ask_turn("t-1", "s-1", 2, model="gpt-9")
    answer = step(state, again, ms(T0), lenient).answer
    assert answer is not None and (answer["decision"], answer["reason_code"]) == (
        "allow", "ADMITTED_AT_FALLBACK_PRICE",
    )  # fmt: skip


def test_a_request_folded_after_a_later_one_is_admitted_not_refused() -> None:
    """Bench, 2,000/s: requests stamped on arrival reach the log slightly out of order;
    one stamped 12:00:59 folded after one of 12:01:01 got UNKNOWN_MODEL (a deny)."""
    log = Log()
    log.fold(profile("t-1"), start("t-1", "s-1"))
    log.fold(ask_turn("t-1", "s-1", 61), ask_turn("t-1", "s-1", 59))
    codes = [s.answer["reason_code"] for s in log.steps if s.answer]
    assert codes == ["ADMITTED", "ADMITTED"]


def test_the_first_decision_for_an_operation_in_log_order_wins() -> None:
    log = Log()
    log.fold(start("t-1", "s-1"))
    log.fold(propose("t-1", "s-1", "op-1", 1))  # the stream decides first
    (first,) = [e for e in log.derived if isinstance(e, PolicyDecided)]
    log.fold(ask_tool("t-1", "s-1", "op-1", 2))  # the API asks later: the same decision
    answer = log.steps[-1].answer
    assert answer is not None and answer["policy_decision"] == first.model_dump(mode="json")
    # The API first, then the stream's proposal: the stream re-emits the API's decision.
    log.fold(ask_tool("t-1", "s-1", "op-2", 3))
    api = log.steps[-1].answer
    assert api is not None
    again = [e for e in log.fold(propose("t-1", "s-1", "op-2", 4)) if isinstance(e, PolicyDecided)]
    assert [e.model_dump(mode="json") for e in again] == [api["policy_decision"]]
    for decided in (e for e in log.derived if isinstance(e, PolicyDecided)):
        verify_decision(decided, KEYS, decided.occurred_at)
        assert decided.evaluation_us == 0  # no measured durations in the log


def test_a_proposal_before_the_session_started_is_refused_and_not_remembered() -> None:
    log = Log()
    log.fold(profile("t-1"))
    early = [e for e in log.fold(propose("t-1", "s-1", "op-1", 1)) if isinstance(e, PolicyDecided)]
    assert [(e.decision, e.reason_code, e.rule_id) for e in early] == [
        ("deny", "SESSION_NOT_STARTED", "session.not_started")
    ]
    verify_decision(early[0], KEYS, early[0].occurred_at)
    log.fold(ask_tool("t-1", "s-1", "op-1", 2))  # the API before the start: refused too
    asked = log.steps[-1].answer
    assert asked is not None and asked["reason_code"] == "SESSION_NOT_STARTED"
    assert log.state.operations == {}
    log.fold(start("t-1", "s-1", seconds=3))
    later = [e for e in log.fold(propose("t-1", "s-1", "op-1", 4)) if isinstance(e, PolicyDecided)]
    assert [(e.decision, e.reason_code) for e in later] == [("allow", "ALLOWED")]
    ids = [e.event_id for e in log.derived if isinstance(e, PolicyDecided)]
    assert len(ids) == len(set(ids)) == 3  # each refusal has an id of its own
    assert set(log.session("t-1", "s-1").decisions) == {"op-1"}


def test_a_tenant_without_a_profile_gets_the_default_limits() -> None:
    log = Log()
    log.fold(start("t-typo", "s-1"))
    limit = CONFIG.default_budgets.tokens_per_session
    assert limit is not None and limit > 0
    log.fold(a_turn("t-typo", "s-1", 1, tokens=limit + 1))
    exceeded = [e for e in log.derived if isinstance(e, BudgetExceeded)]
    assert [(e.scope, e.limit) for e in exceeded] == [("session", limit)]
    shown = tenant_balances(log.state, "t-typo", CONFIG)
    assert shown["plan"] is None
    assert (
        shown["balances"]["tenant_cost_day"]["limit"]
        == CONFIG.default_budgets.cost_per_day_usd_micros
    )
    assert tenant_balances(log.state, "t-never-seen", CONFIG)["gauges"][
        "tenant_concurrent_sessions"
    ] == {"limit": CONFIG.default_budgets.concurrent_sessions, "in_use": 0}


def test_a_deployment_may_refuse_tenants_without_a_profile() -> None:
    strict = replace(CONFIG, refuse_unknown_tenants=True)
    state = PartitionState()
    for event in (start("t-typo", "s-1"), profile("t-1"), start("t-1", "s-1")):
        step(state, event, ms(event.occurred_at), strict)
    turn_ask, tool_ask = ask_turn("t-typo", "s-1", 1), ask_tool("t-typo", "s-1", "op-1", 2)
    answers = [step(state, e, ms(e.occurred_at), strict).answer for e in (turn_ask, tool_ask)]
    assert [(a or {}).get("reason_code") for a in answers] == ["UNKNOWN_TENANT", "UNKNOWN_TENANT"]
    proposal = propose("t-typo", "s-1", "op-2", 3)
    (decided,) = [
        e for e in step(state, proposal, ms(proposal.occurred_at), strict).derived
        if isinstance(e, PolicyDecided)
    ]  # fmt: skip
    assert (decided.decision, decided.rule_id) == ("deny", "tenant.unknown")
    allowed = step(state, ask_turn("t-1", "s-1", 4), ms(T0), strict).answer
    assert allowed is not None and allowed["decision"] == "allow"  # a known tenant


def test_another_call_under_a_decided_operation_key_is_refused() -> None:
    """Issue 12: `s-4:op-20` was allowed for web_search; the same key with tool
    shell, risk critical, destination evil.example.net got the stored allow."""
    log = Log()
    log.fold(profile("t-1"), start("t-1", "s-1"))
    (first,) = [
        e for e in log.fold(propose("t-1", "s-1", "op-1", 1)) if isinstance(e, PolicyDecided)
    ]
    assert first.decision == "allow"
    log.fold(ask_tool("t-1", "s-1", "op-1", 2, tool="shell"))
    answer = log.steps[-1].answer
    assert answer is not None
    assert (answer["decision"], answer["reason_code"]) == ("deny", "OPERATION_KEY_CONFLICT")
    forged = propose(
        "t-1", "s-1", "op-1", 3, tool="shell", risk_level="critical",
        destination_host="evil.example.net", idempotency_key="s-1/op-1/forged",
    )  # fmt: skip
    (refused,) = [e for e in log.fold(forged) if isinstance(e, PolicyDecided)]
    assert (refused.decision, refused.rule_id) == ("deny", "operation_key.conflict")
    assert refused.event_id != first.event_id
    verify_decision(refused, KEYS, refused.occurred_at, proposal=forged)
    # The same call again still gets the first decision, byte for byte.
    retried = propose("t-1", "s-1", "op-1", 4, idempotency_key="s-1/op-1/again")
    again = [e for e in log.fold(retried) if isinstance(e, PolicyDecided)]
    assert [e.model_dump(mode="json") for e in again] == [first.model_dump(mode="json")]
    assert log.session("t-1", "s-1").decisions["op-1"]["decision"] == "allow"


def test_two_tenants_may_share_an_operation_key() -> None:
    log = Log()
    log.fold(start("t-1", "s-1"), start("t-2", "s-1"))
    log.fold(ask_tool("t-2", "s-1", "shared", 1), ask_tool("t-1", "s-1", "shared", 2))
    mine, theirs = (s.answer["policy_decision"] for s in log.steps[-2:] if s.answer)
    assert (mine["tenant_id"], theirs["tenant_id"]) == ("t-2", "t-1")


def test_concurrent_tool_calls_are_refused_at_decision_time() -> None:
    log = Log()
    log.fold(profile("t-1", concurrent_calls_per_tool=1), start("t-1", "s-1"))
    log.fold(a_turn("t-1", "s-1", 0.5))  # active
    log.fold(propose("t-1", "s-1", "op-1", 1), propose("t-1", "s-1", "op-2", 2))
    first, second = (e for e in log.derived if isinstance(e, PolicyDecided))
    assert (first.decision, second.decision, second.reason_code) == (
        "allow", "deny", "CONCURRENT_CALLS_EXHAUSTED",
    )  # fmt: skip
    done = ToolCallCompleted(
        event_id=_id(), occurred_at=T0 + timedelta(seconds=3), tenant_id="t-1", session_id="s-1",
        idempotency_key="done-1", operation_key="op-1", status="succeeded", latency_ms=1,
    )  # fmt: skip
    log.fold(done, propose("t-1", "s-1", "op-3", 4))
    assert [e for e in log.derived if isinstance(e, PolicyDecided)][-1].decision == "allow"


def test_sessions_over_the_tenants_limit_are_gated_from_the_start() -> None:
    log = Log()
    log.fold(profile("t-1", concurrent_sessions=1), start("t-1", "s-1"))
    out = log.fold(start("t-1", "s-2", seconds=1))
    assert types(out) == ["BudgetExceeded"]
    log.fold(ask_turn("t-1", "s-2", 1.5))
    assert log.steps[-1].answer is not None
    assert log.steps[-1].answer["reason_code"] == "SESSION_SUSPENDED_BY_BUDGET"
    closed = SessionClosed(
        event_id=_id(), occurred_at=T0 + timedelta(seconds=2), tenant_id="t-1", session_id="s-1",
        idempotency_key="close-1",
    )  # fmt: skip
    log.fold(closed)
    assert types(log.fold(start("t-1", "s-3", seconds=3))) == []


# --- dedupe ---------------------------------------------------------------------------------------


def test_a_redelivery_does_nothing_and_a_retry_is_suppressed() -> None:
    log = Log()
    log.fold(profile("t-1", tokens_per_session=10_000), start("t-1", "s-1"))
    first = a_turn("t-1", "s-1", 1, tokens=500, idempotency_key="turn-1")
    log.fold(first)
    assert log.fold(first) == []  # the same record again
    retry = first.model_copy(update={"event_id": _id(), "attempt": 2})
    (suppressed,) = log.fold(retry)
    assert isinstance(suppressed, DuplicateSuppressed)
    assert (suppressed.original_event_id, suppressed.duplicate_attempt) == (first.event_id, 2)
    assert log.session("t-1", "s-1").tokens.used == 500
    assert [s.applied for s in log.steps[-3:]] == [True, False, False]


# --- memory ---------------------------------------------------------------------------------------


def test_memory_compaction_once_and_a_verified_policy_chain() -> None:
    log = Log()
    log.fold(profile("t-1"), start("t-1", "s-1"))
    out = [log.fold(a_turn("t-1", "s-1", n, tokens=800, content=f"turn {n}")) for n in range(1, 5)]
    requested = [
        e for step_out in out for e in step_out if isinstance(e, ContextCompactionRequested)
    ]
    assert len(requested) == 1 and requested[0].turn_tokens == 2_400
    log.fold(propose("t-1", "s-1", "op-1", 6), propose("t-1", "s-1", "op-2", 7, tool="shell"))
    session = log.session("t-1", "s-1")
    assert len(session.policy) == 2 and policy_chain_ok(session) is None
    context = compact_context(session, None, token_budget=1_000)
    assert [t["content"] for t in context["recent_turns"]] == ["turn 4"]
    assert context["compaction_requested"] is True
    assert [d["operation_key"] for d in context["recent_denials"]] == ["op-2"]


# --- determinism ---------------------------------------------------------------------------


def _fleet() -> list[tuple[int, Event]]:
    sim = simulate(
        FleetConfig(seed=11, tenants=4, sessions=120, start=T0, duplicate_rate=0.05, retries=2)
    )
    return [(ms(r.event.occurred_at), r.event) for r in sim.records if r.event is not None]


def _step_bytes(state: PartitionState, log_ms: int, event: Event) -> list[bytes]:
    derived = step(state, event, log_ms, CONFIG).derived
    return [canonical(e.model_dump(mode="json")) for e in derived]


def _fold_all(
    records: list[tuple[int, Event]], every: int, abort_at: int | None = None
) -> tuple[dict[str, bytes], list[bytes]]:
    state = PartitionState()
    derived: list[bytes] = []
    pending: list[bytes] = []
    n = 0
    while n < len(records):
        pending += _step_bytes(state, *records[n])
        n += 1
        if abort_at is not None and n == abort_at:
            # An aborted checkpoint: the overlay is dropped and the records since
            # the last commit are folded again.
            state.abort()
            pending.clear()
            n -= n % every
            abort_at = None
        elif n % every == 0:
            state.commit()
            derived += pending
            pending.clear()
    state.commit()
    return state.snapshot(), derived + pending


def test_the_fold_gives_the_same_bytes_whatever_the_checkpoints() -> None:
    records = _fleet()
    base_state, base_derived = _fold_all(records, every=len(records) + 1)
    assert len(records) > 2_000 and len(base_derived) > 100
    for every, abort_at in ((1, None), (97, None), (500, 730)):
        state, derived = _fold_all(records, every, abort_at)
        assert state == base_state
        assert derived == base_derived


def _fold_pipelined(
    records: list[tuple[int, Event]],
    every: int,
    lag: int,
    abort_at: int | None = None,
    drop_at: int | None = None,
) -> tuple[dict[str, bytes], list[bytes]]:
    """As the adapter does: an interval is sealed and its transaction commits `lag`
    records later, while the fold goes on into a new overlay. `abort_at`: that
    transaction fails (both overlays dropped, read again from the commit);
    `drop_at`: the fold fails (the new overlay dropped, the sealed one commits)."""
    state = PartitionState()
    derived: list[bytes] = []
    pending: list[bytes] = []
    sealed: tuple[dict[str, Any], list[bytes], int] | None = None
    committed_at = n = 0
    while n < len(records):
        pending += _step_bytes(state, *records[n])
        n += 1
        if sealed is not None and n == abort_at:
            state.abort()
            pending, sealed, n, abort_at = [], None, committed_at, None
            continue
        if sealed is not None and n == drop_at:
            state.drop_dirty()
            pending, n, drop_at = [], sealed[2], None
            continue
        if sealed is not None and n >= sealed[2] + lag:
            state.commit_sealed(sealed[0])
            derived += sealed[1]
            committed_at, sealed = sealed[2], None
        if sealed is None and n % every == 0:
            sealed, pending = (state.seal(), pending, n), []
    if sealed is not None:
        state.commit_sealed(sealed[0])
        derived += sealed[1]
    state.commit()
    return state.snapshot(), derived + pending


def test_pipelined_checkpoints_give_the_same_bytes() -> None:
    records = _fleet()
    base_state, base_derived = _fold_all(records, every=len(records) + 1)
    # (seal every, commit after, a transaction fails at, a fold fails at)
    runs = ((1, 1, None, None), (97, 40, None, None), (500, 300, 730, None))
    runs += ((500, 300, None, 1_130),)
    for every, lag, abort_at, drop_at in runs:
        state, derived = _fold_pipelined(records, every, lag, abort_at, drop_at)
        assert state == base_state
        assert derived == base_derived


def test_a_sealed_entry_is_never_changed_by_later_writes() -> None:
    records = _fleet()
    state = PartitionState()
    for log_ms, event in records[:300]:
        step(state, event, log_ms, CONFIG)
    sealed = state.seal()
    frozen = {k: None if e is None else canonical(e.to_json()) for k, e in sealed.items()}
    for log_ms, event in records[300:900]:
        step(state, event, log_ms, CONFIG)
    assert {k: None if e is None else canonical(e.to_json()) for k, e in sealed.items()} == frozen
    with pytest.raises(RuntimeError):
        state.seal()  # one transaction in flight at a time
    state.drop_dirty()
    assert state.dirty == {}
    state.commit_sealed(sealed)
    assert state.sealed == {}
    assert {k: canonical(state.committed[k].to_json()) for k in frozen if frozen[k]} == {
        k: v for k, v in frozen.items() if v
    }


def test_a_restore_from_the_changelog_bytes_continues_identically() -> None:
    records = _fleet()
    half = len(records) // 2
    whole, _ = _fold_all(records, every=100)
    first = PartitionState()
    for log_ms, event in records[:half]:
        step(first, event, log_ms, CONFIG)
    restored = PartitionState()
    for key, entry in first.commit().items():
        restored.restore(key, None if entry is None else canonical(entry.to_json()))
    restored.reindex()
    # Restored entries stay parsed JSON until read: the same digest, the same index.
    assert restored.digest() == first.digest()
    assert restored.operations == first.operations
    for log_ms, event in records[half:]:
        step(restored, event, log_ms, CONFIG)
    restored.commit()
    assert restored.snapshot() == whole
    built = PartitionState()
    for key, value in restored.snapshot().items():
        built.restore(key, value)
    assert built.digest() == restored.digest()  # parsed JSON and built entries hash alike
