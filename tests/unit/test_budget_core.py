"""The budget processor's pure core (projections/budget.py): admission and apply, no Kafka.

A "table" is a plain dict standing in for the Faust table: `run` applies steps
in order and merges their changes (None deletes), as streams/budget.py does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    TenantBudgets,
    ToolCallCompleted,
)
from projections import ledger
from projections.budget import (
    ADMISSION_REASONS,
    BudgetConfig,
    BudgetStep,
    TurnAdmission,
    TurnRequest,
    admission_event,
    admit_turn,
    apply,
    balance_key,
    gauge_key,
    reservation_amounts,
    session_key,
)
from projections.pricing import DEFAULT_PRICES
from streams.budget import PendingReservations
from tests.factories import T0, session_started, turn

TENANT = "t-001"
CONFIG = BudgetConfig(prices=DEFAULT_PRICES)
NO_LIMITS = TenantBudgets()
# Keys of session s-1 / workflow w-1 at T0 (2026-11-22 12:00 UTC), partition 0.
SESSION = "b|t-001|session_tokens|s-1|"
WORKFLOW = "b|t-001|workflow_tokens|w-1|"
DAY = "b|t-001|tenant_cost_day|t-001|2026-11-22"
MONTH = "b|t-001|tenant_cost_month|t-001|2026-11"
MINUTE = "b|*|global_tokens_minute|p0|2026-11-22T12:00"
META = "s|t-001|s-1"
SESSIONS_GAUGE = "g|t-001|tenant_concurrent_sessions|t-001"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(
    table: dict[str, Any],
    events: Iterable[SessionEvent],
    budgets: TenantBudgets = NO_LIMITS,
    config: BudgetConfig = CONFIG,
    partition: int = 0,
) -> list[BudgetStep]:
    """Apply events in order, merging each step's changes into `table` (None deletes)."""
    steps = []
    for event in events:
        step = apply(table, event, budgets, partition, config)
        for key, value in step.changes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        steps.append(step)
    return steps


def snapshot(table: dict[str, Any]) -> str:
    return json.dumps(table, sort_keys=True)


def request(model: str = "gpt-4o-mini", tokens: int = 100, **kw: Any) -> TurnRequest:
    fields: dict[str, Any] = {"tenant_id": TENANT, "session_id": "s-1", "workflow_id": None}
    fields.update(kw)
    return TurnRequest(model=model, estimated_tokens=tokens, **fields)


def admit(
    table: dict[str, Any],
    req: TurnRequest,
    budgets: TenantBudgets = NO_LIMITS,
    *,
    now: datetime = T0,
    config: BudgetConfig = CONFIG,
    partition: int = 0,
    pending: dict[str, int] | None = None,
) -> TurnAdmission:
    return admit_turn(table, req, budgets, partition, config, pending or {}, now)


def ids(event_id: str, when: datetime, session: str = "s-1") -> dict[str, Any]:
    """Envelope fields (the event id doubles as idempotency key)."""
    keys = ("event_id", "occurred_at", "tenant_id", "session_id", "idempotency_key")
    return dict(zip(keys, (event_id, when, TENANT, session, event_id), strict=True))


def decided(rid: str, when: datetime, *, tokens: int = 100, model: str = "gpt-4o-mini") -> Any:
    """An AdmissionDecided carrying a turn reservation (as the admission API writes it)."""
    return AdmissionDecided(
        **ids(f"adm-{rid}", when), request_kind="turn", decision="allow", reason_code="ADMITTED",
        model=model, estimated_tokens=tokens, reservation_id=rid,
    )  # fmt: skip


def ended(kind: type[SessionClosed | SessionFailed], session: str, when: datetime) -> Any:
    return kind(**ids(f"end-{session}", when, session), reason="boom")


def tool_allowed(op: str, when: datetime, tool: str = "http_request") -> PolicyDecided:
    return PolicyDecided(
        **ids(f"pd-{op}", when), operation_key=op, tool=tool, action="fetch", decision="allow",
        reason_code="ALLOWED", policy_version="v1", rule_id="default.allow", evaluation_us=3,
        key_id="k1", signature="00", expires_at=when + timedelta(minutes=5),
    )  # fmt: skip


def tool_done(op: str, when: datetime) -> ToolCallCompleted:
    return ToolCallCompleted(
        **ids(f"done-{op}", when), operation_key=op, status="succeeded", latency_ms=5
    )


# --- keys and amounts ---------------------------------------------------------------


def test_table_key_formats() -> None:
    assert balance_key(TENANT, ledger.session_scope("s-1"), 0) == SESSION
    assert balance_key(TENANT, ledger.workflow_scope("w-1"), 0) == WORKFLOW
    assert balance_key(TENANT, ledger.tenant_day_scope(TENANT, T0), 0) == DAY
    assert balance_key(TENANT, ledger.tenant_month_scope(TENANT, T0), 0) == MONTH
    # The global envelope is per partition, not per tenant.
    minute = balance_key("other", ledger.global_minute_scope(T0), 5)
    assert minute == "b|*|global_tokens_minute|p5|2026-11-22T12:00"
    assert gauge_key(TENANT, ledger.tenant_sessions_scope(TENANT)) == SESSIONS_GAUGE
    tool = gauge_key(TENANT, ledger.tool_calls_scope("shell"))
    assert tool == "g|t-001|tool_concurrent_calls|shell"
    assert session_key(TENANT, "s-1") == META


def test_reservation_amounts_price_every_token_as_output() -> None:
    amounts = reservation_amounts(CONFIG, TENANT, "s-1", "w-1", "gpt-4o", 1000, T0, 0)
    # gpt-4o output is 10.00 USD/Mtok: 1000 tokens -> 10_000 micro-dollars.
    assert amounts == {SESSION: 1000, WORKFLOW: 1000, DAY: 10_000, MONTH: 10_000, MINUTE: 1000}
    no_workflow = reservation_amounts(CONFIG, TENANT, "s-1", None, "gpt-4o-mini", 100, T0, 0)
    assert no_workflow == {SESSION: 100, DAY: 60, MONTH: 60, MINUTE: 100}


# --- admission ----------------------------------------------------------------------

BUDGETS = TenantBudgets(
    tokens_per_session=5000,
    tokens_per_workflow=20_000,
    cost_per_day_usd_micros=1_000_000,
    cost_per_month_usd_micros=5_000_000,
)


def test_allow_reserves_every_scope_and_reports_what_remains() -> None:
    config = BudgetConfig(DEFAULT_PRICES, global_tokens_per_minute=60_000, partitions=3)
    table: dict[str, Any] = {}
    # 1500 tokens and 360 micro-dollars already used by this session.
    run(table, [turn(workflow_id="w-1")], BUDGETS, config, partition=2)
    req = request("gpt-4o", 1000, workflow_id="w-1")
    result = admit(table, req, BUDGETS, config=config, partition=2, now=at(30))
    assert (result.decision, result.reason_code, result.model) == ("allow", "ADMITTED", "gpt-4o")
    assert result.reserves
    p2 = "b|*|global_tokens_minute|p2|2026-11-22T12:00"
    assert result.amounts == {SESSION: 1000, WORKFLOW: 1000, DAY: 10_000, MONTH: 10_000, p2: 1000}
    assert result.remaining == {
        "session_tokens": 5000 - 1500 - 1000,
        "workflow_tokens": 20_000 - 1500 - 1000,
        "tenant_cost_day": 1_000_000 - 360 - 10_000,
        "tenant_cost_month": 5_000_000 - 360 - 10_000,
        "global_tokens_minute": 20_000 - 1500 - 1000,
    }
    e = admission_event(req, result, "r-1", at(30), "staging")
    assert (e.decision, e.reason_code, e.model) == ("allow", "ADMITTED", "gpt-4o")
    assert (e.reservation_id, e.estimated_tokens, e.environment) == ("r-1", 1000, "staging")
    assert (e.occurred_at, e.request_kind) == (at(30), "turn")
    assert e.remaining_tokens == 2500  # the tightest token scope
    assert set(ADMISSION_REASONS) >= {result.reason_code, "UNKNOWN_MODEL"}


def test_unlimited_scopes_remain_none() -> None:
    result = admit({}, request(), TenantBudgets(tokens_per_session=1000))
    assert result.decision == "allow"
    assert result.remaining == {
        "session_tokens": 900,
        "tenant_cost_day": None,
        "tenant_cost_month": None,
        "global_tokens_minute": None,
    }
    assert admission_event(request(), result, "r", T0, "production").remaining_tokens == 900


def test_pending_overlay_admits_exactly_what_fits() -> None:
    budgets = TenantBudgets(tokens_per_session=5000)
    table: dict[str, Any] = {}
    pending = PendingReservations()
    answers: list[tuple[str, str]] = []
    events: list[AdmissionDecided] = []
    for n in range(200):
        req = request(tokens=100)
        result = admit_turn(table, req, budgets, 0, CONFIG, pending.totals, at(n / 10))
        answers.append((result.decision, result.reason_code))
        if result.reserves:
            pending.add(f"r{n}", result.amounts, at(n / 10), "t-1")
            events.append(admission_event(req, result, f"r{n}", at(n / 10), "production"))
    assert answers == [("allow", "ADMITTED")] * 50 + [("deny", "SESSION_TOKENS_EXHAUSTED")] * 150
    assert pending.totals[SESSION] == 5000
    # The agent applies the reservations and settles the overlay: still full.
    run(table, events, budgets)
    for event in events:
        pending.settle(event.reservation_id or "")
    assert pending.totals == {}
    assert len(table[META]["reservations"]) == 50
    assert admit(table, request(), budgets, now=at(30)).reason_code == "SESSION_TOKENS_EXHAUSTED"
    # Reservations time out 60 s after they were made: the first one at 60 s, all by 64.9 s.
    first_free = admit(table, request(), budgets, now=at(60))
    assert (first_free.decision, first_free.remaining["session_tokens"]) == ("allow", 0)
    later = admit(table, request(), budgets, now=at(64.9))
    assert (later.decision, later.remaining["session_tokens"]) == ("allow", 4900)


def _cost_table(tier: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    run(table, [session_started(tier=tier)])
    return table


def test_degrading_tiers_get_the_next_cheaper_model_that_fits_the_day() -> None:
    budgets = TenantBudgets(cost_per_day_usd_micros=1000)
    assert ledger.fallback_chain(DEFAULT_PRICES, "gpt-4o")[0] == "claude-haiku-4"
    for tier in ("A", "B"):
        # gpt-4o: 200 * 10.00 = 2000 > 1000; claude-haiku-4: 200 * 4.00 = 800 fits.
        result = admit(_cost_table(tier), request("gpt-4o", 200), budgets)
        assert (result.decision, result.reason_code) == ("degrade", "DEGRADED_TO_CHEAPER_MODEL")
        assert result.model == "claude-haiku-4"
        assert result.amounts[DAY] == 800 and result.amounts[SESSION] == 200
        assert result.remaining["tenant_cost_day"] == 200


def test_degrade_skips_models_that_still_do_not_fit() -> None:
    # 1000 tokens: sonnet 15000, gpt-4o 10000, haiku 4000, llama 600 micro-dollars.
    table = _cost_table("A")
    month = TenantBudgets(cost_per_month_usd_micros=1000)
    result = admit(table, request("claude-sonnet-4", 1000), month)
    expected = ("degrade", "llama-3.1-70b", 600)
    assert (result.decision, result.model, result.amounts[MONTH]) == expected
    # When no model fits (the cheapest cost 0.60 * 200 = 120 > 100), a tier A is denied.
    result = admit(table, request("gpt-4o", 200), TenantBudgets(cost_per_day_usd_micros=100))
    assert (result.decision, result.reason_code) == ("deny", "TENANT_DAY_COST_EXHAUSTED")


def test_suspending_tier_is_denied_on_cost() -> None:
    table = _cost_table("C")
    day = admit(table, request("gpt-4o", 200), TenantBudgets(cost_per_day_usd_micros=1000))
    assert day == TurnAdmission("deny", "TENANT_DAY_COST_EXHAUSTED", None, {}, {})
    month = admit(table, request("gpt-4o", 200), TenantBudgets(cost_per_month_usd_micros=1000))
    assert (month.decision, month.reason_code) == ("deny", "TENANT_MONTH_COST_EXHAUSTED")
    # A session the processor has not seen started counts as tier C.
    unknown = admit({}, request("gpt-4o", 200), TenantBudgets(cost_per_day_usd_micros=1000))
    assert unknown.reason_code == "TENANT_DAY_COST_EXHAUSTED"


def test_token_exhaustion_is_not_degraded() -> None:
    # A cheaper model needs as many tokens: tier A is denied, not degraded.
    table = _cost_table("A")
    session = admit(table, request("gpt-4o", 600), TenantBudgets(tokens_per_session=500))
    assert (session.decision, session.reason_code) == ("deny", "SESSION_TOKENS_EXHAUSTED")
    req = request("gpt-4o", 600, workflow_id="w-1")
    workflow = admit(table, req, TenantBudgets(tokens_per_workflow=500))
    assert (workflow.decision, workflow.reason_code) == ("deny", "WORKFLOW_TOKENS_EXHAUSTED")


def test_global_envelope_defers_per_partition_share() -> None:
    shares = [
        BudgetConfig(DEFAULT_PRICES, global_tokens_per_minute=g, partitions=p).global_share
        for g, p in [(1000, 4), (1000, 3), (2, 5), (None, 4)]
    ]
    assert shares == [250, 333, 1, None]
    config = BudgetConfig(DEFAULT_PRICES, global_tokens_per_minute=1000, partitions=4)
    pending = PendingReservations()
    first = admit({}, request(tokens=200), config=config, partition=1, pending=pending.totals)
    assert (first.decision, first.remaining["global_tokens_minute"]) == ("allow", 50)
    pending.add("r1", first.amounts, T0, "t-1")
    second = admit({}, request(tokens=100), config=config, partition=1, pending=pending.totals)
    assert (second.decision, second.reason_code, second.amounts) == (
        "defer",
        "GLOBAL_RATE_LIMITED",
        {},
    )
    assert second.model is None and second.remaining["global_tokens_minute"] == -50
    # Another partition has its own share; the next minute is a new envelope.
    other = admit({}, request(tokens=100), config=config, partition=3, pending=pending.totals)
    assert other.decision == "allow"
    later = admit(
        {}, request(tokens=100), config=config, partition=1, pending=pending.totals, now=at(60)
    )
    assert (later.decision, later.remaining["global_tokens_minute"]) == ("allow", 150)


def test_unknown_model_and_budget_suspended_session_are_denied() -> None:
    result = admit({}, request("gpt-9"), BUDGETS)
    assert result == TurnAdmission("deny", "UNKNOWN_MODEL", None, {}, {})
    assert not result.reserves
    table = _cost_table("A")
    table[META] = {**table[META], "verdict": {"action": "suspend", "scope": "session"}}
    result = admit(table, request(), NO_LIMITS)
    assert result == TurnAdmission("deny", "SESSION_SUSPENDED_BY_BUDGET", None, {}, {})


def test_degraded_session_keeps_to_its_fallback_model() -> None:
    verdict = {"action": "degrade", "scope": "session", "fallback_model": "claude-haiku-4"}
    table = _cost_table("A")
    table[META] = {**table[META], "verdict": verdict}
    for asked in ("gpt-4o", "claude-sonnet-4"):
        result = admit(table, request(asked, 100), NO_LIMITS)
        expected = ("degrade", "DEGRADED_TO_CHEAPER_MODEL", "claude-haiku-4")
        assert (result.decision, result.reason_code, result.model) == expected
        assert result.amounts[DAY] == 400  # priced at haiku: 100 * 4.00
    cheaper = admit(table, request("gpt-4o-mini", 100), NO_LIMITS)
    assert (cheaper.decision, cheaper.model) == ("allow", "gpt-4o-mini")


def test_expired_reservations_do_not_count_against_headroom() -> None:
    budgets = TenantBudgets(tokens_per_session=1000)
    table: dict[str, Any] = {}
    run(table, [session_started(), decided("r1", T0, tokens=900)], budgets)
    assert table[SESSION]["reserved"] == {"r1": [900, T0.isoformat()]}
    early = admit(table, request(tokens=200), budgets, now=at(59))
    assert early.reason_code == "SESSION_TOKENS_EXHAUSTED"
    result = admit(table, request(tokens=200), budgets, now=at(60))  # the timeout is 60 s
    assert (result.decision, result.remaining["session_tokens"]) == ("allow", 800)
    # The session's next event releases it from the table as well.
    run(table, [turn(occurred_at=at(61), input_tokens=10, output_tokens=0)], budgets)
    assert table[SESSION]["reserved"] == {} and "r:r1" in table[SESSION]["applied_keys"]
    assert table[META]["reservations"] == []
    assert table[SESSION]["used"] == 10


# --- apply: sessions ----------------------------------------------------------------


def test_concurrent_sessions_over_the_limit_are_suspended() -> None:
    budgets = TenantBudgets(concurrent_sessions=2)
    table: dict[str, Any] = {}
    starts = [session_started(session_id=f"s-{n}", occurred_at=at(n)) for n in (1, 2, 3)]
    steps = run(table, starts, budgets)
    assert [s.signals for s in steps[:2]] == [[], []]
    assert table[SESSIONS_GAUGE]["holders"] == {"s-1": at(1).isoformat(), "s-2": at(2).isoformat()}
    assert table[SESSIONS_GAUGE]["limit"] == 2
    (signal,) = steps[2].signals
    assert steps[2].derived == []
    assert isinstance(signal, BudgetExceeded)
    expected = ("tenant_sessions", TENANT, "suspend", None)
    assert (signal.scope, signal.scope_key, signal.action, signal.fallback_model) == expected
    assert (signal.limit, signal.used, signal.session_id) == (2, 3, "s-3")
    assert signal.causation_id == starts[2].event_id
    assert table["s|t-001|s-3"]["verdict"]["action"] == "suspend"
    req = request(session_id="s-3")
    assert admit(table, req, budgets).reason_code == "SESSION_SUSPENDED_BY_BUDGET"
    # A redelivered start does not take a second slot.
    run(table, [starts[0]], budgets)
    assert len(table[SESSIONS_GAUGE]["holders"]) == 2


def test_session_end_releases_slot_meta_and_session_balance() -> None:
    budgets = TenantBudgets(concurrent_sessions=1)
    for kind in (SessionClosed, SessionFailed):
        table: dict[str, Any] = {}
        run(table, [session_started(), turn(), decided("r1", at(2))], budgets)
        assert SESSION in table and META in table and table[DAY]["reserved"]
        run(table, [ended(kind, "s-1", at(3))], budgets)
        assert table[SESSIONS_GAUGE]["holders"] == {}
        assert SESSION not in table and META not in table
        assert table[DAY]["reserved"] == {} and table[DAY]["used"] == 360  # released, kept
        (signal,) = run(table, [session_started(session_id="s-2", occurred_at=at(4))], budgets)
        assert signal.signals == []  # the slot is free again
        # A start redelivered after the end does not take the slot back.
        run(table, [session_started()], budgets)
        assert list(table[SESSIONS_GAUGE]["holders"]) == ["s-2"]


# --- apply: turns ---------------------------------------------------------------------


def test_turn_commits_to_every_scope_once() -> None:
    config = BudgetConfig(DEFAULT_PRICES, global_tokens_per_minute=12_000, partitions=3)
    table: dict[str, Any] = {}
    once = turn(workflow_id="w-1", cost_usd_micros=360)
    steps = run(table, [once], BUDGETS, config)
    assert steps[0].derived == steps[0].signals == []
    used = {k: table[k]["used"] for k in (SESSION, WORKFLOW, DAY, MONTH, MINUTE)}
    assert used == {SESSION: 1500, WORKFLOW: 1500, DAY: 360, MONTH: 360, MINUTE: 1500}
    assert (table[SESSION]["limit"], table[MINUTE]["limit"]) == (5000, 4000)
    # Applying the same TurnCompleted again changes nothing and emits nothing.
    before = snapshot(table)
    (again,) = run(table, [once], BUDGETS, config)
    assert snapshot(table) == before
    assert again.derived == again.signals == []


def _exceed(tier: str, model: str) -> tuple[list[BudgetStep], dict[str, Any]]:
    table: dict[str, Any] = {}
    budgets = TenantBudgets(tokens_per_session=1000)
    events = [
        session_started(tier=tier),
        turn(occurred_at=at(1), model=model, input_tokens=400, output_tokens=100),
        turn(occurred_at=at(2), model=model, input_tokens=300, output_tokens=0),
        turn(occurred_at=at(3), model=model, input_tokens=200, output_tokens=0),
    ]
    return run(table, events, budgets), table


def test_turns_warn_at_50_80_100_and_exceed_with_the_tier_action() -> None:
    steps, table = _exceed("A", "gpt-4o")
    warned = [[(w.scope, w.threshold_pct, w.used, w.limit) for w in s.derived] for s in steps[1:]]
    assert warned == [
        [("session", 50, 500, 1000)],
        [("session", 80, 800, 1000)],
        [("session", 100, 1000, 1000)],
    ]
    assert all(isinstance(w, BudgetWarning) for s in steps for w in s.derived)
    assert [s.signals for s in steps[1:3]] == [[], []]
    (exceeded,) = steps[3].signals
    assert isinstance(exceeded, BudgetExceeded)
    expected = ("degrade", "claude-haiku-4", "s-1")
    assert (exceeded.action, exceeded.fallback_model, exceeded.scope_key) == expected
    assert table[META]["verdict"] == {
        "action": "degrade",
        "scope": "session",
        "fallback_model": "claude-haiku-4",
    }


def test_exceeded_action_follows_tier_and_model() -> None:
    cases = {
        ("B", "gpt-4o"): ("degrade", "claude-haiku-4"),
        ("C", "gpt-4o"): ("suspend", None),
        ("A", "gpt-4o-mini"): ("suspend", None),  # nothing cheaper to degrade to
    }
    for (tier, model), expected in cases.items():
        steps, table = _exceed(tier, model)
        (exceeded,) = steps[3].signals
        assert (exceeded.action, exceeded.fallback_model) == expected, (tier, model)
        assert table[META]["verdict"]["action"] == expected[0]


def test_a_turn_settles_the_oldest_open_reservation() -> None:
    table: dict[str, Any] = {}
    run(table, [session_started(), decided("r1", at(1)), decided("r2", at(2))])
    assert set(table[SESSION]["reserved"]) == {"r1", "r2"}
    run(table, [turn(occurred_at=at(3))])
    assert [r[0] for r in table[META]["reservations"]] == ["r2"]
    for key in (SESSION, DAY, MONTH, MINUTE):
        assert list(table[key]["reserved"]) == ["r2"], key
        assert "r:r1" in table[key]["applied_keys"]


def test_redelivered_turn_leaves_later_reservations_alone() -> None:
    # BUG: a duplicate TurnCompleted drops the next open reservation from the
    # session meta (budget.py apply, TurnCompleted branch) while the balances
    # keep holding it: it is never settled by its own turn nor at session end.
    table: dict[str, Any] = {}
    first = turn(occurred_at=at(3))
    run(table, [session_started(), decided("r1", at(1)), decided("r2", at(2)), first])
    before = snapshot(table)
    run(table, [first])
    assert [r[0] for r in table[META]["reservations"]] == ["r2"]
    assert snapshot(table) == before


# --- apply: reservations ----------------------------------------------------------------


def test_admission_decided_holds_without_a_limit_check() -> None:
    budgets = TenantBudgets(tokens_per_session=50, cost_per_day_usd_micros=10)
    table: dict[str, Any] = {}
    event = decided("r1", at(5), tokens=100)
    (step,) = run(table, [event], budgets)
    assert step.derived == [event] and step.signals == []
    for key, amount in {SESSION: 100, DAY: 60, MONTH: 60, MINUTE: 100}.items():
        assert table[key]["reserved"] == {"r1": [amount, at(5).isoformat()]}
        assert table[key]["used"] == 0
    assert table[META]["reservations"] == [
        ["r1", at(5).isoformat(), {SESSION: 100, DAY: 60, MONTH: 60, MINUTE: 100}]
    ]
    before = snapshot(table)
    run(table, [event], budgets)
    assert snapshot(table) == before


def test_settled_reservation_is_not_held_again_on_redelivery() -> None:
    table: dict[str, Any] = {}
    event = decided("r1", at(5))
    run(table, [event, turn(occurred_at=at(7))])
    before = snapshot(table)
    run(table, [event])
    assert snapshot(table) == before
    assert table[META]["reservations"] == []


def test_settled_reservation_is_not_held_again_after_its_minute_rolled() -> None:
    # BUG: `fresh` in apply (AdmissionDecided branch) is true when any key lacks
    # the reservation; a minute balance dropped by _roll is such a key, so the
    # settled reservation is recorded again and the next turn settles it
    # instead of its own.
    table: dict[str, Any] = {}
    event = decided("r1", at(50))
    run(table, [event, turn(session_id="s-2", occurred_at=at(55)), turn(occurred_at=at(70))])
    assert table[META]["reservations"] == []
    run(table, [event])
    assert table[META]["reservations"] == []


# --- apply: tool calls -------------------------------------------------------------------


def test_tool_slots_per_tenant_and_tool() -> None:
    budgets = TenantBudgets(concurrent_calls_per_tool=1)
    table: dict[str, Any] = {}
    gauge = "g|t-001|tool_concurrent_calls|http_request"
    steps = run(table, [tool_allowed("op-1", at(1)), tool_allowed("op-2", at(2))], budgets)
    assert steps[0].derived == [] and table[gauge]["holders"] == {"op-1": at(1).isoformat()}
    (over,) = steps[1].derived
    assert isinstance(over, BudgetExceeded) and steps[1].signals == []
    expected = ("deny", "tool_calls", "http_request", 1, 2)
    assert (over.action, over.scope, over.scope_key, over.limit, over.used) == expected
    # Another tool has its own gauge.
    run(table, [tool_allowed("op-3", at(3), tool="web_search")], budgets)
    assert list(table["g|t-001|tool_concurrent_calls|web_search"]["holders"]) == ["op-3"]
    run(table, [tool_done("op-1", at(4))], budgets)
    assert table[gauge]["holders"] == {}
    assert "op-1" not in table[META]["tools"]
    (step,) = run(table, [tool_allowed("op-4", at(5))], budgets)
    assert step.derived == [] and list(table[gauge]["holders"]) == ["op-4"]
    # The session's end releases the slots its calls still hold.
    run(table, [ended(SessionClosed, "s-1", at(6))], budgets)
    assert table[gauge]["holders"] == {}
    assert table["g|t-001|tool_concurrent_calls|web_search"]["holders"] == {}


def test_released_gauge_keeps_its_limit() -> None:
    # BUG: release paths rebuild the gauge with limit=None (budget.py, `_gauge(view,
    # gkey, None, config)` for ToolCallCompleted and session ends) and store it,
    # so GET /v1/budgets reports a limited gauge as unlimited after a release.
    budgets = TenantBudgets(concurrent_sessions=3)
    table: dict[str, Any] = {}
    run(table, [session_started(), ended(SessionClosed, "s-1", at(1))], budgets)
    assert table[SESSIONS_GAUGE]["limit"] == 3


# --- periods roll ----------------------------------------------------------------------


def test_roll_drops_the_previous_minute_and_day() -> None:
    table: dict[str, Any] = {}
    run(table, [turn(occurred_at=at(10)), turn(occurred_at=at(70))])
    next_minute = "b|*|global_tokens_minute|p0|2026-11-22T12:01"
    assert MINUTE not in table and table[next_minute]["used"] == 1500
    assert table["m|b|*|global_tokens_minute|p0"] == next_minute
    run(table, [turn(occurred_at=at(86_400))])
    next_day = "b|t-001|tenant_cost_day|t-001|2026-11-23"
    assert DAY not in table and table["m|b|t-001|tenant_cost_day|t-001"] == next_day
    assert table[MONTH]["used"] == 3 * 360  # the month is kept
    assert sum(k.startswith("b|*|global_tokens_minute") for k in table) == 1


def test_rolled_minutes_do_not_come_back() -> None:
    # BUG: _roll only drops the key its marker points at. A turn stamped in an
    # older minute (arriving after a newer one) re-creates that minute's
    # balance, and a minute balance created by an AdmissionDecided hold in a
    # minute no turn was charged in is never the marker: both stay forever.
    late: dict[str, Any] = {}
    run(late, [turn(occurred_at=at(10)), turn(occurred_at=at(61)), turn(occurred_at=at(59))])
    held: dict[str, Any] = {}
    run(held, [decided("r1", at(59)), turn(occurred_at=at(61)), turn(occurred_at=at(125))])
    minutes = [[k.rsplit("|", 1)[1] for k in t if k.startswith("b|*|")] for t in (late, held)]
    assert minutes == [["2026-11-22T12:01"], ["2026-11-22T12:02"]]


# --- property: interleaved sessions -----------------------------------------------------

turn_spec = st.tuples(
    st.integers(0, 3),  # session
    st.integers(0, 2 * 86_400),  # seconds after T0 (two days, one month)
    st.integers(0, 2_000),  # input tokens
    st.integers(0, 2_000),  # output tokens
    st.integers(0, 5_000),  # cost (micro-dollars)
)


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(turn_spec, max_size=20), tiers=st.lists(st.sampled_from("ABC"), min_size=4))
def test_property_interleaved_turns_sum_and_replay_to_the_same_table(
    specs: list[tuple[int, int, int, int, int]], tiers: list[str]
) -> None:
    budgets = TenantBudgets(
        tokens_per_session=6000, cost_per_day_usd_micros=20_000, cost_per_month_usd_micros=40_000
    )
    config = BudgetConfig(DEFAULT_PRICES, global_tokens_per_minute=8000, partitions=2)
    starts = [
        session_started(session_id=f"s-{n}", tier=tiers[n], event_id=f"st-{n}") for n in range(4)
    ]
    turns = [
        turn(
            event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, str(n))),
            session_id=f"s-{s}",
            occurred_at=at(sec),
            input_tokens=i,
            output_tokens=o,
            cost_usd_micros=c,
        )
        for n, (s, sec, i, o, c) in enumerate(specs)
    ]
    events = [*starts, *turns]
    once: dict[str, Any] = {}
    run(once, events, budgets, config)
    month = once.get(MONTH, {"used": 0})
    assert month["used"] == sum(c for *_, c in specs)
    for n in range(4):
        key = f"b|t-001|session_tokens|s-{n}|"
        assert once.get(key, {"used": 0})["used"] == sum(i + o for s, _, i, o, _ in specs if s == n)

    twice: dict[str, Any] = {}
    for event in events:
        run(twice, [event], budgets, config)
        (redelivered,) = run(twice, [event], budgets, config)
        assert redelivered.derived == redelivered.signals == []
    assert snapshot(twice) == snapshot(once)
