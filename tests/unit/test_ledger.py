"""Budget ledger: reserve/commit/release arithmetic, thresholds, periods, fallback, events.

The hypothesis properties are the acceptance criteria of the ledger:
charges sum to consumption, nothing goes negative, replays change nothing,
session interleaving does not change totals, reservations never overspend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from events.models import BudgetExceeded, BudgetWarning, TenantBudgets, TurnCompleted
from projections.ledger import (
    DEFAULT_POLICY,
    PRODUCER,
    Acquired,
    Balance,
    BudgetPolicy,
    Committed,
    Duplicate,
    Exceeded,
    Gauge,
    Ledger,
    Refused,
    Released,
    Reservation,
    Reserved,
    Scope,
    ScopedOutcome,
    ThresholdCrossed,
    acquire,
    budget_events,
    charge_turn,
    charge_turn_delta,
    commit,
    day_period,
    decide_action,
    derived_event_id,
    expire_reservations,
    expire_slots,
    fallback_chain,
    fallback_model,
    global_minute_scope,
    minute_period,
    month_period,
    release,
    release_slot,
    reserve,
    session_scope,
    set_limit,
    tenant_day_scope,
    tenant_month_scope,
    turn_charges,
    workflow_scope,
)
from projections.pricing import DEFAULT_PRICES, PriceTable
from tests.factories import turn

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=200, deadline=None)

# --- reserve ------------------------------------------------------------------------


def test_reserve_within_limit() -> None:
    balance, out = reserve(Balance(limit=10_000), "r1", 4_000, T0)
    assert out == [Reserved("r1", 4_000, available=6_000)]
    assert balance.reserved == {"r1": Reservation(4_000, T0)}
    assert balance.used == 0


def test_reserve_over_limit_is_refused_and_changes_nothing() -> None:
    start = Balance(limit=10_000, used=7_000)
    balance, out = reserve(start, "r1", 4_000, T0)
    assert out == [Refused("r1", "insufficient_budget", requested=4_000, available=3_000)]
    assert balance is start


def test_reserve_counts_outstanding_reservations() -> None:
    balance, _ = reserve(Balance(limit=10_000), "r1", 6_000, T0)
    balance, out = reserve(balance, "r2", 5_000, T0)
    assert isinstance(out[0], Refused)
    balance, out = reserve(balance, "r2", 4_000, T0)
    assert out == [Reserved("r2", 4_000, available=0)]
    _, out = reserve(balance, "r3", 1, T0)
    assert out == [Refused("r3", "budget_exhausted", requested=1, available=0)]


def test_reserve_exactly_the_limit_is_allowed() -> None:
    _, out = reserve(Balance(limit=100), "r1", 100, T0)
    assert out == [Reserved("r1", 100, available=0)]


def test_zero_limit_refuses_everything_but_zero() -> None:
    _, out = reserve(Balance(limit=0), "r1", 1, T0)
    assert out == [Refused("r1", "budget_exhausted", 1, 0)]
    _, out = reserve(Balance(limit=0), "r1", 0, T0)
    assert isinstance(out[0], Reserved)


def test_over_the_limit_even_a_zero_reservation_is_refused() -> None:
    _, out = reserve(Balance(limit=10, used=11), "r1", 0, T0)
    assert out == [Refused("r1", "budget_exhausted", 0, 0)]


def test_unlimited_budget_reserves_and_commits_anything_without_warnings() -> None:
    balance, out = reserve(Balance(), "r1", 10**15, T0)
    assert out == [Reserved("r1", 10**15, available=None)]
    balance, out = commit(balance, "k1", 10**15, "r1")
    assert out == [Committed("k1", 10**15, used=10**15, released="r1")]
    assert balance.thresholds_emitted == frozenset()
    assert balance.available is None


def test_reserve_is_idempotent_per_reservation_id() -> None:
    balance, _ = reserve(Balance(limit=10_000), "r1", 4_000, T0)
    again, out = reserve(balance, "r1", 4_000, T0 + timedelta(seconds=5))
    assert again is balance
    assert out == [Reserved("r1", 4_000, available=6_000, duplicate=True)]


def test_reserve_after_the_reservation_was_settled_is_a_duplicate() -> None:
    # A retried admission request whose turn already ran must not hold budget again.
    balance, _ = reserve(Balance(limit=10_000), "r1", 4_000, T0)
    balance, _ = commit(balance, "k1", 3_000, "r1")
    again, out = reserve(balance, "r1", 4_000, T0)
    assert out == [Duplicate("r1")]
    assert again is balance


def test_negative_amounts_are_rejected() -> None:
    with pytest.raises(ValueError, match="amount"):
        reserve(Balance(limit=10), "r1", -1, T0)
    with pytest.raises(ValueError, match="amount"):
        commit(Balance(limit=10), "k1", -1)
    with pytest.raises(ValueError, match="used"):
        Balance(used=-1)


# --- commit / release -----------------------------------------------------------------


def test_commit_releases_the_reservation() -> None:
    balance, _ = reserve(Balance(limit=10_000), "r1", 4_000, T0)
    balance, out = commit(balance, "k1", 3_500, reservation_id="r1")
    assert out == [Committed("k1", 3_500, used=3_500, released="r1")]
    assert balance.reserved == {}
    assert balance.used == 3_500
    assert balance.available == 6_500


def test_commit_with_an_unknown_reservation_still_charges() -> None:
    _, out = commit(Balance(limit=10_000), "k1", 100, reservation_id="never-held")
    assert out == [Committed("k1", 100, used=100, released=None)]


def test_duplicate_commit_is_ignored() -> None:
    balance, _ = commit(Balance(limit=10_000), "k1", 3_000)
    again, out = commit(balance, "k1", 3_000)
    assert out == [Duplicate("k1")]
    assert again is balance
    assert again.used == 3_000


def test_commit_may_exceed_the_limit() -> None:
    # The turn already happened: usage is recorded, and that is the overrun.
    balance, out = commit(Balance(limit=1_000), "k1", 2_500)
    assert balance.used == 2_500
    assert Exceeded(2_500, 1_000) in out
    assert balance.available == 0


def test_release_is_idempotent() -> None:
    balance, _ = reserve(Balance(limit=10_000), "r1", 4_000, T0)
    balance, out = release(balance, "r1")
    assert out == [Released("r1", 4_000)]
    assert balance.reserved == {}
    again, out = release(balance, "r1")
    assert (again, out) == (balance, [])
    unknown, out = release(balance, "nope")
    assert (unknown, out) == (balance, [])


def test_expire_reservations_releases_only_old_ones_oldest_first() -> None:
    balance = Balance(limit=10_000)
    balance, _ = reserve(balance, "late", 1_000, T0 + timedelta(seconds=50))
    balance, _ = reserve(balance, "b", 1_000, T0 + timedelta(seconds=10))
    balance, _ = reserve(balance, "a", 1_000, T0)
    balance, out = expire_reservations(balance, T0 + timedelta(seconds=40), timedelta(seconds=30))
    assert out == [Released("a", 1_000, expired=True), Released("b", 1_000, expired=True)]
    assert set(balance.reserved) == {"late"}
    # An expired reservation's late commit still charges the actual usage.
    balance, out = commit(balance, "k-a", 900, "a")
    assert out == [Committed("k-a", 900, used=900, released=None)]


# --- thresholds -------------------------------------------------------------------------


def _commits(balance: Balance, amounts: Iterable[int]) -> tuple[Balance, list[Any]]:
    outcomes: list[Any] = []
    for n, amount in enumerate(amounts):
        balance, out = commit(balance, f"k{n}", amount)
        outcomes += out
    return balance, outcomes


def test_thresholds_fire_once_each_at_50_80_100() -> None:
    balance, out = _commits(Balance(limit=1_000), [499, 1, 200, 100, 199, 1, 50, 500])
    crossed = [(o.pct, o.used) for o in out if isinstance(o, ThresholdCrossed)]
    assert crossed == [(50, 500), (80, 800), (100, 1_000)]
    assert [o for o in out if isinstance(o, Exceeded)] == [Exceeded(1_000, 1_000)]
    assert balance.thresholds_emitted == {50, 80, 100}
    assert balance.used == 1_550


def test_one_big_commit_crosses_every_threshold_in_order() -> None:
    _, out = commit(Balance(limit=100), "k1", 150)
    assert out == [
        Committed("k1", 150, 150),
        ThresholdCrossed(50, 150, 100),
        ThresholdCrossed(80, 150, 100),
        ThresholdCrossed(100, 150, 100),
        Exceeded(150, 100),
    ]


def test_threshold_arithmetic_is_exact_for_odd_limits() -> None:
    # 80% of 7 is 5.6: 5 has not crossed it, 6 has.
    _, out = commit(Balance(limit=7), "k1", 5)
    assert [o.pct for o in out if isinstance(o, ThresholdCrossed)] == [50]
    _, out = commit(Balance(limit=7), "k1", 6)
    assert [o.pct for o in out if isinstance(o, ThresholdCrossed)] == [50, 80]


def test_raising_the_limit_rearms_warnings_above_current_usage() -> None:
    balance, _ = _commits(Balance(limit=1_000), [1_000])
    assert balance.thresholds_emitted == {50, 80, 100}
    raised = set_limit(balance, 2_000)  # now at 50%
    assert raised.thresholds_emitted == {50}
    _, out = commit(raised, "k-next", 1_000)
    assert [o.pct for o in out if isinstance(o, ThresholdCrossed)] == [80, 100]
    assert Exceeded(2_000, 2_000) in out


def test_set_limit_unchanged_returns_the_same_balance() -> None:
    balance = Balance(limit=5)
    assert set_limit(balance, 5) is balance


def test_balance_round_trips_through_a_dict() -> None:
    balance, _ = reserve(Balance(limit=1_000, key_bound=10), "r1", 100, T0)
    balance, _ = commit(balance, "k1", 600)
    assert Balance.from_dict(balance.to_dict()) == balance


# --- concurrency-shaped and bounded memory ------------------------------------------


def test_200_concurrent_reservations_against_50_000_tokens() -> None:
    balance = Balance(limit=50_000)
    results = []
    for n in range(200):
        balance, out = reserve(balance, f"req-{n}", 1_000, T0)
        results += out
    reserved = [o for o in results if isinstance(o, Reserved)]
    assert len(reserved) == 50
    assert sum(isinstance(o, Refused) for o in results) == 150
    assert balance.used + balance.reserved_total == 50_000
    for o in reserved:
        balance, _ = commit(balance, f"turn-{o.reservation_id}", 1_000, o.reservation_id)
    assert balance.used == 50_000
    assert balance.reserved == {}


def test_applied_keys_stay_bounded() -> None:
    balance = Balance(key_bound=1_000)
    for n in range(100_000):
        balance, _ = commit(balance, f"k{n}", 1)
        assert len(balance.applied_keys) <= 1_000
    assert balance.used == 100_000
    # Full window: exactly the newest 1,000 keys, oldest first.
    assert len(balance.applied_keys) == 1_000
    assert balance.applied_keys[0] == "c:k99000"
    assert balance.applied_keys[-1] == "c:k99999"
    # Within the window a repeat is caught...
    _, out = commit(balance, "k99000", 1)
    assert out == [Duplicate("k99000")]
    # ...older than the window it is not: the trade-off for bounded memory. The
    # stream processor's dedupe window sits in front of the ledger for these.
    _, out = commit(balance, "k0", 1)
    assert isinstance(out[0], Committed)


# --- gauges -------------------------------------------------------------------------------


def test_gauge_acquire_release_is_idempotent_and_bounded_by_the_limit() -> None:
    gauge = Gauge(limit=2)
    gauge, out = acquire(gauge, "s1", T0)
    assert out == [Acquired("s1", 1)]
    gauge, out = acquire(gauge, "s1", T0)
    assert out == [Acquired("s1", 1, duplicate=True)]
    gauge, _ = acquire(gauge, "s2", T0)
    full, out = acquire(gauge, "s3", T0)
    assert out == [Refused("s3", "budget_exhausted", 1, 0)]
    assert full is gauge
    gauge, out = release_slot(gauge, "s1")
    assert out == [Released("s1", 1)]
    assert release_slot(gauge, "s1") == (gauge, [])
    # A replayed start of a session that already ended takes no slot.
    again, out = acquire(gauge, "s1", T0)
    assert (again, out) == (gauge, [Duplicate("s1")])
    gauge, out = acquire(gauge, "s3", T0)
    assert out == [Acquired("s3", 2)]


def test_gauge_slots_expire() -> None:
    gauge, _ = acquire(Gauge(limit=5), "old", T0)
    gauge, _ = acquire(gauge, "new", T0 + timedelta(minutes=9))
    gauge, out = expire_slots(gauge, T0 + timedelta(minutes=10), timedelta(minutes=10))
    assert out == [Released("old", 1, expired=True)]
    assert set(gauge.holders) == {"new"}


@PROPERTY
@given(
    limit=st.integers(0, 5),
    ops=st.lists(
        st.tuples(st.sampled_from(["acquire", "release", "expire"]), st.integers(0, 7)),
        max_size=60,
    ),
)
def test_gauge_never_exceeds_its_limit(limit: int, ops: list[tuple[str, int]]) -> None:
    gauge = Gauge(limit=limit)
    for step, (op, n) in enumerate(ops):
        now = T0 + timedelta(seconds=step)
        if op == "acquire":
            gauge, _ = acquire(gauge, f"h{n}", now)
        elif op == "release":
            gauge, _ = release_slot(gauge, f"h{n}")
        else:
            gauge, _ = expire_slots(gauge, now, timedelta(seconds=n))
        assert gauge.in_use <= limit


# --- periods and scopes ---------------------------------------------------------------


def test_period_keys_roll_over_at_utc_midnight() -> None:
    before = datetime(2026, 11, 23, 23, 59, 59, 999_999, tzinfo=UTC)
    after = before + timedelta(microseconds=1)
    assert day_period(before) == "2026-11-23"
    assert day_period(after) == "2026-11-24"
    assert minute_period(before) == "2026-11-23T23:59"
    assert minute_period(after) == "2026-11-24T00:00"
    assert tenant_day_scope("t", before) != tenant_day_scope("t", after)
    assert tenant_month_scope("t", before) == tenant_month_scope("t", after)


@pytest.mark.parametrize(
    ("before", "after_month"),
    [(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "2026-12"),
     (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "2027-01"),
     (datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC), "2028-03")],
)  # fmt: skip
def test_period_keys_roll_over_at_the_month_boundary(before: datetime, after_month: str) -> None:
    after = before + timedelta(seconds=1)
    assert month_period(before) != month_period(after) == after_month
    assert day_period(after) == f"{after_month}-01"


def test_periods_use_utc_not_the_local_offset() -> None:
    # 01:30 at +02:00 on Dec 1 is still Nov 30 in UTC.
    local = datetime(2026, 12, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert day_period(local) == "2026-11-30"
    assert month_period(local) == "2026-11"
    with pytest.raises(ValueError, match="timezone"):
        day_period(datetime(2026, 12, 1))


def test_turn_charges_tokens_and_cost_to_every_scope() -> None:
    t = turn(workflow_id="wf-1", input_tokens=1_000, output_tokens=200, cost_usd_micros=777)
    assert turn_charges(t) == [
        (session_scope("s-1"), 1_200),
        (workflow_scope("wf-1"), 1_200),
        (Scope("tenant_cost_day", "t-001", "2026-11-22"), 777),
        (Scope("tenant_cost_month", "t-001", "2026-11"), 777),
        (Scope("global_tokens_minute", "global", "2026-11-22T12:00"), 1_200),
    ]
    assert [s.kind for s, _ in turn_charges(turn())] == [
        "session_tokens", "tenant_cost_day", "tenant_cost_month", "global_tokens_minute",
    ]  # fmt: skip


def test_charge_turn_across_midnight_opens_new_day_and_month_balances() -> None:
    late = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    ledger, _ = charge_turn({}, turn(occurred_at=late, cost_usd_micros=100), BUDGETS, None)
    ledger, _ = charge_turn(
        ledger, turn(occurred_at=late + timedelta(seconds=1), cost_usd_micros=50), BUDGETS, None
    )
    assert ledger[Scope("tenant_cost_day", "t-001", "2026-11-30")].used == 100
    assert ledger[Scope("tenant_cost_day", "t-001", "2026-12-01")].used == 50
    assert ledger[Scope("tenant_cost_month", "t-001", "2026-11")].used == 100
    assert ledger[Scope("tenant_cost_month", "t-001", "2026-12")].used == 50
    assert ledger[session_scope("s-1")].used == 2 * 1_500


def test_charge_turn_is_idempotent_across_retries() -> None:
    first = turn(idempotency_key="s-1:1")
    retry = first.model_copy(update={"event_id": "another-id", "attempt": 2})
    ledger, _ = charge_turn({}, first, BUDGETS, 10**9)
    again, out = charge_turn(ledger, retry, BUDGETS, 10**9)
    assert again == ledger
    assert {type(o.outcome) for o in out} == {Duplicate}


def test_same_producer_key_in_two_tenants_is_counted_twice_globally() -> None:
    a = turn(tenant_id="t-a", session_id="sa", idempotency_key="k-1")
    b = turn(tenant_id="t-b", session_id="sb", idempotency_key="k-1")
    ledger, _ = charge_turn({}, a, BUDGETS, None)
    ledger, _ = charge_turn(ledger, b, BUDGETS, None)
    assert ledger[global_minute_scope(T0)].used == 2 * 1_500


def test_charge_turn_releases_the_admission_reservation() -> None:
    scope = session_scope("s-1")
    held, _ = reserve(Balance(limit=20_000), "adm-1", 2_000, T0)
    ledger, _ = charge_turn({scope: held}, turn(), BUDGETS, None, reservation_id="adm-1")
    assert ledger[scope].reserved == {}
    assert ledger[scope].used == 1_500


def test_charge_turn_delta_returns_only_changed_balances() -> None:
    t = turn()
    ledger, _ = charge_turn({}, t, BUDGETS, None)
    other = Scope("tenant_cost_day", "t-other", "2026-11-22")
    ledger = {**ledger, other: Balance(used=5)}
    changes, _ = charge_turn_delta(ledger, t, BUDGETS, None)
    assert changes == {}
    changes, _ = charge_turn_delta(ledger, turn(), BUDGETS, None)
    assert other not in changes
    assert set(changes) == {scope for scope, _ in turn_charges(t)}


def test_charge_turn_applies_the_plan_limits() -> None:
    ledger, _ = charge_turn({}, turn(workflow_id="w"), BUDGETS, 123)
    assert {scope.kind: b.limit for scope, b in ledger.items()} == {
        "session_tokens": BUDGETS.tokens_per_session,
        "workflow_tokens": BUDGETS.tokens_per_workflow,
        "tenant_cost_day": BUDGETS.cost_per_day_usd_micros,
        "tenant_cost_month": BUDGETS.cost_per_month_usd_micros,
        "global_tokens_minute": 123,
    }


# --- fallback and actions ----------------------------------------------------------------


def test_fallback_model_order_by_blended_marginal_cost() -> None:
    # input + output USD/Mtok: sonnet 18, gpt-4o 12.5, haiku 4.8, llama 1.2, mini 0.75
    assert fallback_chain(DEFAULT_PRICES, "claude-sonnet-4") == [
        "gpt-4o", "claude-haiku-4", "llama-3.1-70b", "gpt-4o-mini",
    ]  # fmt: skip
    assert fallback_model(DEFAULT_PRICES, "claude-haiku-4") == "llama-3.1-70b"
    assert fallback_model(DEFAULT_PRICES, "gpt-4o-mini") is None


def test_fallback_model_ties_are_skipped_and_broken_by_name() -> None:
    prices = PriceTable.from_mapping(
        {"big": ["5", "5"], "b-mid": ["1", "2"], "a-mid": ["2", "1"], "twin": ["5", "5"]}
    )
    assert fallback_model(prices, "big") == "a-mid"
    assert fallback_model(prices, "a-mid") is None  # b-mid costs the same: not cheaper
    with pytest.raises(KeyError, match="unknown"):
        fallback_model(prices, "unknown")


@pytest.mark.parametrize(
    ("tier", "model", "expected"),
    [("A", "gpt-4o", ("degrade", "claude-haiku-4")),
     ("B", "claude-sonnet-4", ("degrade", "gpt-4o")),
     ("C", "gpt-4o", ("suspend", None)),
     ("A", "gpt-4o-mini", ("suspend", None)),  # nothing cheaper to degrade to
     ("A", "not-priced", ("suspend", None)),
     ("Z", "gpt-4o", ("suspend", None))],  # unknown tier: the safe default
)  # fmt: skip
def test_default_policy_actions(tier: str, model: str, expected: tuple[str, str | None]) -> None:
    assert decide_action(DEFAULT_POLICY, tier, DEFAULT_PRICES, model) == expected


def test_policy_is_configurable_per_tier() -> None:
    policy = BudgetPolicy(actions={"A": "suspend", "C": "degrade"})
    assert decide_action(policy, "A", DEFAULT_PRICES, "gpt-4o") == ("suspend", None)
    assert decide_action(policy, "C", DEFAULT_PRICES, "gpt-4o") == ("degrade", "claude-haiku-4")


# --- derived events -----------------------------------------------------------------------


def test_exceeding_the_session_budget_derives_warnings_and_exceeded() -> None:
    cause = turn(model="gpt-4o", input_tokens=15_000, output_tokens=6_000, correlation_id="tr")
    _, outcomes = charge_turn({}, cause, BUDGETS, None)
    events = budget_events(cause, outcomes, tier="A", prices=DEFAULT_PRICES)
    session = [e for e in events if e.scope == "session"]
    assert [(type(e).__name__, getattr(e, "threshold_pct", None)) for e in session] == [
        ("BudgetWarning", 50), ("BudgetWarning", 80), ("BudgetWarning", 100),
        ("BudgetExceeded", None),
    ]  # fmt: skip
    exceeded = session[-1]
    assert isinstance(exceeded, BudgetExceeded)
    assert (exceeded.action, exceeded.fallback_model) == ("degrade", "claude-haiku-4")
    assert (exceeded.limit, exceeded.used, exceeded.scope_key) == (20_000, 21_000, "s-1")
    for event in events:
        assert event.occurred_at == cause.occurred_at
        assert event.causation_id == cause.event_id
        assert event.correlation_id == "tr"
        assert event.producer == PRODUCER
        assert (event.tenant_id, event.session_id) == (cause.tenant_id, cause.session_id)
    assert len({e.event_id for e in events}) == len(events)
    # Replaying the same cause derives byte-identical events.
    assert budget_events(cause, outcomes, tier="A", prices=DEFAULT_PRICES) == events


def test_derived_event_ids_are_deterministic_and_distinct() -> None:
    day = Scope("tenant_cost_day", "t", "2026-11-22")
    ids = {
        derived_event_id("e1", day, "BudgetWarning", 50),
        derived_event_id("e1", day, "BudgetWarning", 80),
        derived_event_id("e1", day, "BudgetExceeded", 100),
        derived_event_id("e1", day, "BudgetWarning", 100),
        derived_event_id("e2", day, "BudgetWarning", 50),
        derived_event_id("e1", Scope("tenant_cost_day", "t", "2026-11-23"), "BudgetWarning", 50),
    }
    assert len(ids) == 6
    assert derived_event_id("e1", day, "BudgetWarning", 50) == derived_event_id(
        "e1", day, "BudgetWarning", 50
    )


def test_period_scopes_name_their_period_in_scope_key() -> None:
    cause = turn(cost_usd_micros=60_000)
    _, outcomes = charge_turn({}, cause, BUDGETS, None)
    events = budget_events(cause, outcomes, tier="C", prices=DEFAULT_PRICES)
    day = [e for e in events if e.scope == "tenant_day"]
    assert {e.scope_key for e in day} == {"t-001@2026-11-22"}
    assert isinstance(day[-1], BudgetExceeded)
    assert day[-1].action == "suspend"
    assert all(isinstance(e, BudgetWarning) for e in day[:-1])


# --- properties -----------------------------------------------------------------------------

BUDGETS = TenantBudgets(
    tokens_per_session=20_000,
    tokens_per_workflow=40_000,
    cost_per_day_usd_micros=50_000,
    cost_per_month_usd_micros=80_000,
)
GLOBAL_LIMIT = 30_000
# session -> (tenant, workflow); wf-1 is shared by two tenants on purpose.
SESSIONS: dict[str, tuple[str, str | None]] = {
    "s-0": ("t-a", "wf-1"),
    "s-1": ("t-a", None),
    "s-2": ("t-b", "wf-1"),
    "s-3": ("t-b", "wf-2"),
}
# Five minutes either side of a month boundary: day, month and minute periods roll.
EDGE = datetime(2026, 11, 30, 23, 57, 30, tzinfo=UTC)

turn_specs = st.lists(
    st.tuples(
        st.sampled_from(sorted(SESSIONS)),
        st.integers(0, 4_000),  # input tokens
        st.integers(0, 2_000),  # output tokens
        st.integers(0, 12_000),  # cost micro-dollars
        st.integers(0, 300),  # seconds after EDGE
    ),
    max_size=40,
)
Spec = tuple[str, int, int, int, int]


def _turns(specs: Sequence[Spec]) -> list[TurnCompleted]:
    """One TurnCompleted per spec; keys are per-session sequence numbers."""
    seq: Counter[str] = Counter()
    turns = []
    for session, tin, tout, cost, secs in specs:
        seq[session] += 1
        tenant, workflow = SESSIONS[session]
        key = f"{session}:{seq[session]}"
        turns.append(
            TurnCompleted(
                event_id=f"ev-{key}",
                occurred_at=EDGE + timedelta(seconds=secs),
                tenant_id=tenant,
                session_id=session,
                workflow_id=workflow,
                idempotency_key=key,
                model="gpt-4o",
                input_tokens=tin,
                output_tokens=tout,
                cost_usd_micros=cost,
                first_token_ms=1,
                latency_ms=1,
                outcome="ok",
            )
        )
    return turns


def _retry(t: TurnCompleted, attempt: int) -> TurnCompleted:
    # A producer retry: new event id and attempt, same idempotency key and facts.
    return t.model_copy(update={"event_id": f"{t.event_id}-retry{attempt}", "attempt": attempt})


def _fold(
    turns: Iterable[TurnCompleted], ledger: Ledger | None = None
) -> tuple[Ledger, list[ScopedOutcome]]:
    state: Ledger = dict(ledger or {})
    outcomes: list[ScopedOutcome] = []
    for t in turns:
        state, out = charge_turn(state, t, BUDGETS, GLOBAL_LIMIT)
        outcomes += out
    return state, outcomes


def _totals(ledger: Ledger) -> dict[Scope, tuple[int, frozenset[int]]]:
    # Everything but the order of applied_keys, which follows arrival order.
    return {s: (b.used, b.thresholds_emitted) for s, b in ledger.items()}


@PROPERTY
@given(specs=turn_specs, data=st.data())
def test_property_charges_sum_to_consumption(specs: list[Spec], data: st.DataObject) -> None:
    turns = _turns(specs)
    # Include retries, so only first applications may count.
    picks = data.draw(st.lists(st.integers(0, len(turns) - 1))) if turns else []
    retries = [_retry(turns[i], 2) for i in picks]
    ledger, outcomes = _fold([*turns, *retries])
    committed: Counter[Scope] = Counter()
    for scoped in outcomes:
        if isinstance(scoped.outcome, Committed):
            committed[scoped.scope] += scoped.outcome.amount
    expected: Counter[Scope] = Counter()
    for t in turns:
        for scope, amount in turn_charges(t):
            expected[scope] += amount
    for scope, balance in ledger.items():
        assert balance.used == committed[scope] == expected[scope]
    assert set(ledger) == set(expected)


class BalanceMachine(RuleBasedStateMachine):
    """Random reserve/commit/release/expire against a model of what must happen.

    Properties (2) used and reserved never negative and (5) an accepted
    reservation never takes used + reserved past the limit, plus full
    agreement with a plain-Python model of the ledger's rules.
    """

    def __init__(self) -> None:
        super().__init__()
        self.balance = Balance()
        self.committed: dict[str, int] = {}
        self.held: dict[str, tuple[int, datetime]] = {}
        self.settled: set[str] = set()
        self.clock = T0

    @initialize(limit=st.none() | st.integers(0, 10_000))
    def start(self, limit: int | None) -> None:
        self.balance = Balance(limit=limit)

    def _settle(self, rid: str | None) -> None:
        if rid is not None and rid in self.held:
            del self.held[rid]
            self.settled.add(rid)

    @rule(rid=st.sampled_from([f"r{n}" for n in range(8)]), amount=st.integers(0, 4_000))
    def reserve(self, rid: str, amount: int) -> None:
        self.clock += timedelta(seconds=1)
        before = self.balance
        self.balance, out = reserve(self.balance, rid, amount, self.clock)
        (result,) = out
        if rid in self.held:
            assert result == Reserved(rid, self.held[rid][0], before.available, duplicate=True)
        elif rid in self.settled:
            assert result == Duplicate(rid)
        elif before.limit is not None and (
            before.used + sum(a for a, _ in self.held.values()) + amount > before.limit
        ):
            assert isinstance(result, Refused)
        else:
            assert isinstance(result, Reserved) and not result.duplicate
            self.held[rid] = (amount, self.clock)
            if self.balance.limit is not None:  # (5)
                assert self.balance.used + self.balance.reserved_total <= self.balance.limit
        if not isinstance(result, Reserved) or result.duplicate:
            assert self.balance is before

    @rule(
        key=st.sampled_from([f"k{n}" for n in range(12)]),
        amount=st.integers(0, 4_000),
        rid=st.none() | st.sampled_from([f"r{n}" for n in range(8)]),
    )
    def commit(self, key: str, amount: int, rid: str | None) -> None:
        before = self.balance
        self.balance, out = commit(self.balance, key, amount, rid)
        if key in self.committed:
            assert out == [Duplicate(key)]
            assert self.balance is before
            return
        self.committed[key] = amount
        self._settle(rid)

    @rule(rid=st.sampled_from([f"r{n}" for n in range(8)]))
    def release(self, rid: str) -> None:
        self.balance, _ = release(self.balance, rid)
        self._settle(rid)

    @rule(timeout=st.integers(0, 20))
    def expire(self, timeout: int) -> None:
        self.balance, out = expire_reservations(
            self.balance, self.clock, timedelta(seconds=timeout)
        )
        for released in out:
            assert isinstance(released, Released)
            assert self.clock - self.held[released.request_id][1] >= timedelta(seconds=timeout)
            self._settle(released.request_id)

    @invariant()
    def never_negative(self) -> None:  # (2)
        assert self.balance.used >= 0
        assert all(r.amount >= 0 for r in self.balance.reserved.values())
        assert self.balance.reserved_total >= 0

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.balance.used == sum(self.committed.values())  # (1) on one balance
        assert dict(self.balance.reserved) == {
            rid: Reservation(amount, at) for rid, (amount, at) in self.held.items()
        }
        expected = set()
        if self.balance.limit is not None and self.balance.used > 0:
            expected = {
                p for p in (50, 80, 100) if self.balance.used * 100 >= p * self.balance.limit
            }
        assert self.balance.thresholds_emitted == expected


TestBalanceMachine = BalanceMachine.TestCase
TestBalanceMachine.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


@PROPERTY
@given(
    limit=st.integers(0, 20_000),
    used_pct=st.integers(0, 100),
    calls=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 5_000), st.booleans()), max_size=80
    ),
)
def test_property_reservations_never_overspend(
    limit: int, used_pct: int, calls: list[tuple[int, int, bool]]
) -> None:
    balance = Balance(limit=limit, used=limit * used_pct // 100)
    for n, amount, then_release in calls:
        balance, _ = reserve(balance, f"r{n}", amount, T0)
        if then_release:
            balance, _ = release(balance, f"r{max(0, n - 1)}")
        assert balance.used + balance.reserved_total <= limit
        assert balance.reserved_total >= 0


@PROPERTY
@given(specs=turn_specs, data=st.data())
def test_property_replaying_events_changes_nothing(specs: list[Spec], data: st.DataObject) -> None:
    turns = _turns(specs)
    ledger, _ = _fold(turns)
    # Apply the whole list again, with retries of anything seen so far mixed in.
    replay: list[TurnCompleted] = []
    for n, t in enumerate(turns):
        replay.append(t)
        for i in data.draw(st.lists(st.integers(0, n), max_size=2)):
            replay.append(turns[i] if data.draw(st.booleans()) else _retry(turns[i], 3))
    assert _fold(replay)[0] == ledger
    again, outcomes = _fold(data.draw(st.permutations(replay)), ledger)
    assert again == ledger
    assert all(isinstance(o.outcome, Duplicate) for o in outcomes)


@PROPERTY
@given(specs=turn_specs, data=st.data())
def test_property_session_interleaving_does_not_change_totals(
    specs: list[Spec], data: st.DataObject
) -> None:
    turns = _turns(specs)
    per_session: dict[str, list[TurnCompleted]] = {}
    for t in turns:
        per_session.setdefault(t.session_id, []).append(t)
    # A random interleaving that keeps each session's own order (one partition each).
    order = data.draw(st.permutations([t.session_id for t in turns]))
    cursors = {s: iter(ts) for s, ts in per_session.items()}
    interleaved = [next(cursors[s]) for s in order]
    assert [t for t in interleaved if t.session_id == "s-0"] == per_session.get("s-0", [])

    base, base_out = _fold(turns)
    other, other_out = _fold(interleaved)
    assert _totals(other) == _totals(base)
    tenant_kinds = {"tenant_cost_day", "tenant_cost_month"}
    assert {s: b.used for s, b in other.items() if s.kind in tenant_kinds} == {
        s: b.used for s, b in base.items() if s.kind in tenant_kinds
    }

    def warned(outcomes: list[ScopedOutcome]) -> set[tuple[Scope, int]]:
        return {
            (o.scope, o.outcome.pct) for o in outcomes if isinstance(o.outcome, ThresholdCrossed)
        }

    # Which warnings fire depends only on the totals, not on the interleaving.
    assert warned(other_out) == warned(base_out)
