"""Budget scopes, periods, thresholds, exceeded actions and derived budget events.

projections.ledger is the vocabulary of the governor's budgets: which scope a
charge lands in, when a usage crosses 50/80/100% of its limit, what exceeding
does per tier, and the BudgetWarning/BudgetExceeded a replay derives again
byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.models import BudgetExceeded, BudgetWarning
from projections.ledger import (
    DEFAULT_POLICY,
    EXCEEDED_PCT,
    PRODUCER,
    THRESHOLDS,
    BudgetPolicy,
    Exceeded,
    Scope,
    ThresholdCrossed,
    crossed_thresholds,
    day_period,
    decide_action,
    derived_event_id,
    exceeded_event,
    fallback_chain,
    fallback_model,
    global_minute_scope,
    minute_period,
    month_period,
    session_scope,
    tenant_day_scope,
    tenant_month_scope,
    tenant_sessions_scope,
    tool_calls_scope,
    warning_event,
    workflow_scope,
)
from projections.pricing import DEFAULT_PRICES, PriceTable
from tests.factories import turn

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=200, deadline=None)

# --- periods and scopes ---------------------------------------------------------------


def test_scopes_name_kind_key_period_and_their_event_scope() -> None:
    scopes = [
        session_scope("s-1"),
        workflow_scope("wf-1"),
        tenant_day_scope("t-001", T0),
        tenant_month_scope("t-001", T0),
        global_minute_scope(T0),
        tenant_sessions_scope("t-001"),
        tool_calls_scope("web.fetch"),
    ]
    assert scopes == [
        Scope("session_tokens", "s-1"),
        Scope("workflow_tokens", "wf-1"),
        Scope("tenant_cost_day", "t-001", "2026-11-22"),
        Scope("tenant_cost_month", "t-001", "2026-11"),
        Scope("global_tokens_minute", "global", "2026-11-22T12:00"),
        Scope("tenant_concurrent_sessions", "t-001"),
        Scope("tool_concurrent_calls", "web.fetch"),
    ]
    assert [(s.event_scope, s.event_scope_key) for s in scopes] == [
        ("session", "s-1"),
        ("workflow", "wf-1"),
        ("tenant_day", "t-001@2026-11-22"),
        ("tenant_month", "t-001@2026-11"),
        ("global_minute", "global@2026-11-22T12:00"),
        ("tenant_sessions", "t-001"),
        ("tool_calls", "web.fetch"),
    ]


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


# --- thresholds -------------------------------------------------------------------------


def test_threshold_arithmetic_is_exact_for_odd_limits() -> None:
    # 80% of 7 is 5.6: 5 has not crossed it, 6 has.
    assert crossed_thresholds(5, 7) == {50}
    assert crossed_thresholds(6, 7) == {50, 80}
    assert crossed_thresholds(7, 7) == {50, 80, EXCEEDED_PCT}


def test_usage_past_the_limit_has_crossed_every_threshold() -> None:
    assert crossed_thresholds(150, 100) == {50, 80, 100}
    assert crossed_thresholds(1, 0) == {50, 80, 100}
    assert crossed_thresholds(30, 100, thresholds=(25, 75)) == {25}


def test_no_thresholds_without_a_limit_or_without_usage() -> None:
    assert crossed_thresholds(10**15, None) == frozenset()
    # Nothing used: a zero budget is not yet crossed.
    assert crossed_thresholds(0, 0) == frozenset()
    assert crossed_thresholds(0, 1_000) == frozenset()


@PROPERTY
@given(
    used=st.integers(0, 10**7),
    more=st.integers(0, 10**7),
    limit=st.none() | st.integers(0, 10**6),
)
def test_property_thresholds_are_exact_and_only_ever_added(
    used: int, more: int, limit: int | None
) -> None:
    crossed = crossed_thresholds(used, limit)
    if limit is None or used == 0:
        assert crossed == frozenset()
    elif limit == 0:
        assert crossed == set(THRESHOLDS)
    else:
        assert crossed == {p for p in THRESHOLDS if Fraction(used, limit) >= Fraction(p, 100)}
    # Usage only grows, so a threshold once crossed stays crossed: a warning
    # derived from the difference fires once.
    assert crossed <= crossed_thresholds(used + more, limit)


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
    scope = session_scope("s-1")

    def derive() -> list[BudgetWarning | BudgetExceeded]:
        crossed = [ThresholdCrossed(pct, 21_000, 20_000) for pct in THRESHOLDS]
        action, fallback = decide_action(DEFAULT_POLICY, "A", DEFAULT_PRICES, cause.model)
        exceeded = exceeded_event(cause, scope, Exceeded(21_000, 20_000), action, fallback)
        return [*(warning_event(cause, scope, c) for c in crossed), exceeded]

    events = derive()
    assert [(type(e).__name__, getattr(e, "threshold_pct", None)) for e in events] == [
        ("BudgetWarning", 50), ("BudgetWarning", 80), ("BudgetWarning", 100),
        ("BudgetExceeded", None),
    ]  # fmt: skip
    exceeded = events[-1]
    assert isinstance(exceeded, BudgetExceeded)
    assert (exceeded.action, exceeded.fallback_model) == ("degrade", "claude-haiku-4")
    assert (exceeded.limit, exceeded.used, exceeded.scope_key) == (20_000, 21_000, "s-1")
    for event in events:
        assert event.scope == "session"
        assert event.occurred_at == cause.occurred_at
        assert event.causation_id == cause.event_id
        assert event.correlation_id == "tr"
        assert event.producer == PRODUCER
        assert event.idempotency_key == event.event_id
        assert (event.tenant_id, event.session_id) == (cause.tenant_id, cause.session_id)
    assert len({e.event_id for e in events}) == len(events)
    # Replaying the same cause derives byte-identical events.
    assert derive() == events


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
    day = tenant_day_scope(cause.tenant_id, cause.occurred_at)
    warning = warning_event(cause, day, ThresholdCrossed(100, 60_000, 50_000))
    action, fallback = decide_action(DEFAULT_POLICY, "C", DEFAULT_PRICES, cause.model)
    exceeded = exceeded_event(cause, day, Exceeded(60_000, 50_000), action, fallback)
    assert {(e.scope, e.scope_key) for e in (warning, exceeded)} == {
        ("tenant_day", "t-001@2026-11-22")
    }
    assert (exceeded.action, exceeded.fallback_model) == ("suspend", None)
