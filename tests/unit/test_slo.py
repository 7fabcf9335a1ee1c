"""SLOs: the document contract, burn-rate arithmetic, multiwindow alerts on crafted incidents,
budget burn, and the JSON status a CLI prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from projections.policy_contract import ContractError
from projections.slo import (
    DEFAULT_SLO_PATH,
    BudgetSpend,
    RuleVerdict,
    ScopeCounts,
    SloConfigError,
    SloDocument,
    SloScope,
    WindowCounts,
    budget_burn,
    burn_rate,
    deciding_rule,
    error_budget,
    evaluate_burn,
    judge_rule,
    judge_rules,
    load_slo,
    parse_slo,
    seconds_left_in_period,
    sli_state,
    slo_status,
    tally_turns,
    triage,
    turn_verdicts,
)

DOC = load_slo()
NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
PER_MINUTE = 50  # turns per minute per tenant: 3000 in the 1 h window, well above min_events


def raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_SLO_PATH.read_text(encoding="utf-8"))


def load_error(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SloConfigError) as caught:
        load_slo(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


# --- the document --------------------------------------------------------------------


def test_default_document_loads_with_the_documented_objectives() -> None:
    assert DEFAULT_SLO_PATH.parent.name == "policies"
    assert DOC.schema_version == 1
    assert DOC.period == "30d"
    assert (DOC.tiers.A.success.objective, DOC.tiers.B.success.objective) == (0.99, 0.98)
    assert DOC.tiers.C.success.objective == 0.95
    assert (DOC.tiers.A.latency.objective, DOC.tiers.A.latency.threshold_ms) == (0.95, 2000)
    assert DOC.tiers.B.latency.threshold_ms == 5000
    assert DOC.tiers.C.latency.threshold_ms == 30000
    page, ticket = DOC.burn_alerts.rules["page"], DOC.burn_alerts.rules["ticket"]
    assert (page.long_window, page.short_window, page.burn_rate) == ("1h", "5m", 14.4)
    assert (ticket.long_window, ticket.short_window, ticket.burn_rate) == ("6h", "30m", 6)
    assert DOC.burn_alerts.min_events == 100
    assert DOC.budget_burn.rate_window == "1h"
    assert DOC.budget_burn.periods == ("day", "month")
    assert DOC.window_names() == ("5m", "30m", "1h", "6h", "30d")
    assert DOC.window_seconds("30d") == 30 * 86400


def test_the_document_is_also_accepted_as_json(tmp_path: Path) -> None:
    path = tmp_path / "slo.json"
    path.write_text(json.dumps(raw()), encoding="utf-8")
    assert load_slo(path) == DOC


def test_slo_config_error_is_a_contract_error() -> None:
    assert issubclass(SloConfigError, ContractError)


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        (
            "tiers.A.success.objective",
            1.0,
            "tiers.A.success.objective: Input should be less than 1",
        ),
        (
            "tiers.A.success.objective",
            0,
            "tiers.A.success.objective: Input should be greater than 0",
        ),
        ("tiers.B.latency.objective", 99, "tiers.B.latency.objective: Input should be less than 1"),
        ("tiers.B.latency.threshold_ms", 0, "tiers.B.latency.threshold_ms:"),
        ("burn_alerts.min_events", -1, "burn_alerts.min_events:"),
        ("burn_alerts.rules.page.burn_rate", 0, "burn_alerts.rules.page.burn_rate:"),
        ("burn_alerts.rules.page.long_window", "1 hour", "burn_alerts.rules.page.long_window:"),
        ("period", "30days", "period: '30days' is not a duration"),
        ("budget_burn.periods", ["day", "week"], "budget_burn.periods.1:"),
        ("budget_burn.periods", ["day", "day"], "budget_burn.periods: must not repeat"),
        ("sli.bad_outcomes", ["ok"], "sli: bad_outcomes: 'ok' cannot be a bad outcome"),
        ("sli.ignored_outcomes", ["error"], "sli: ignored_outcomes: ['error'] are also"),
        ("schema_version", 2, "schema_version: Input should be 1"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_field(
    tmp_path: Path, dotted: str, value: Any, expected: str
) -> None:
    assert expected in load_error(tmp_path, _set(raw(), dotted, value))


@pytest.mark.parametrize(
    ("dotted", "where"),
    [
        ("tiers.A.sucess", "tiers.A.sucess: Extra inputs are not permitted"),
        ("burn_alerts.rules.page.burnrate", "burn_alerts.rules.page.burnrate: Extra inputs"),
        ("budget_burn.window", "budget_burn.window: Extra inputs are not permitted"),
        ("objectives", "objectives: Extra inputs are not permitted"),
    ],
)
def test_unknown_fields_fail_naming_the_field(tmp_path: Path, dotted: str, where: str) -> None:
    assert where in load_error(tmp_path, _set(raw(), dotted, {"objective": 0.99}))


def test_unknown_severity_and_missing_tier_fail(tmp_path: Path) -> None:
    data = raw()
    data["burn_alerts"]["rules"]["warn"] = data["burn_alerts"]["rules"]["page"]
    assert "burn_alerts.rules.warn.[key]: Input should be 'page' or 'ticket'" in load_error(
        tmp_path, data
    )
    data = raw()
    del data["tiers"]["B"]
    assert "tiers.B: Field required" in load_error(tmp_path, data)


@pytest.mark.parametrize(
    ("short", "long"), [("1h", "1h"), ("2h", "1h"), ("3600s", "1h"), ("61m", "1h")]
)
def test_a_short_window_not_shorter_than_the_long_one_fails(
    tmp_path: Path, short: str, long: str
) -> None:
    data = raw()
    data["burn_alerts"]["rules"]["page"].update(short_window=short, long_window=long)
    message = load_error(tmp_path, data)
    assert (
        f"burn_alerts.rules.page: short_window {short} must be shorter than long_window {long}"
        in (message)
    )


def test_a_long_window_beyond_the_period_fails(tmp_path: Path) -> None:
    data = _set(raw(), "burn_alerts.rules.ticket.long_window", "31d")
    assert "burn_alerts.rules.ticket.long_window: 31d is longer than the period 30d" in (
        load_error(tmp_path, data)
    )


def test_a_rule_that_could_never_fire_is_rejected(tmp_path: Path) -> None:
    # 0.90 leaves a 0.10 budget: even all-bad turns burn at 10 < 14.4.
    message = load_error(tmp_path, _set(raw(), "tiers.C.latency.objective", 0.9))
    assert "burn_alerts.rules.page.burn_rate: 14.4 can never fire for tiers.C.latency" in message
    assert "at most 10" in message


def test_duplicate_keys_unquoted_dates_and_non_mappings_fail(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    text = DEFAULT_SLO_PATH.read_text(encoding="utf-8")
    path.write_text(text + "\nperiod: 7d\n", encoding="utf-8")
    with pytest.raises(SloConfigError, match="duplicate key 'period'"):
        load_slo(path)
    path.write_text(text.replace('version: "2026-11-01"', "version: 2026-11-01"), encoding="utf-8")
    with pytest.raises(SloConfigError, match="version: must be a string"):
        load_slo(path)
    with pytest.raises(SloConfigError, match="<document>: must be a mapping"):
        parse_slo([1, 2])
    with pytest.raises(SloConfigError, match="cannot read"):
        load_slo(tmp_path / "missing.yaml")


# --- arithmetic ----------------------------------------------------------------------


def test_error_budget_and_burn_rate_exact_numbers() -> None:
    assert error_budget(0.99) == 0.01
    assert error_budget(0.95) == 0.05
    assert error_budget(0.999) == 0.001
    assert burn_rate(1, 100, 0.99) == 1.0  # spending exactly the budget
    assert burn_rate(144, 1000, 0.99) == 14.4  # exactly the page threshold
    assert burn_rate(20, 100, 0.99) == 20.0
    assert burn_rate(60, 1000, 0.99) == 6.0
    assert burn_rate(5, 100, 0.95) == 1.0
    assert burn_rate(100, 100, 0.99) == 100.0  # the ceiling: 1 / error budget
    assert burn_rate(0, 1000, 0.99) == 0.0
    assert burn_rate(0, 0, 0.99) == 0.0  # an empty window burns nothing
    with pytest.raises(ValueError, match="bad <= total"):
        burn_rate(2, 1, 0.99)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        burn_rate(1, 2, 1.0)
    with pytest.raises(ValueError, match="bad <= total"):
        WindowCounts(total=1, bad=2)


@given(
    total=st.integers(min_value=0, max_value=10**9),
    data=st.data(),
    objective=st.sampled_from([0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999, 0.5, 0.1]),
)
def test_burn_rate_is_bounded_and_monotonic_in_bad(
    total: int, data: st.DataObject, objective: float
) -> None:
    bad = data.draw(st.integers(min_value=0, max_value=total))
    rate = burn_rate(bad, total, objective)
    ceiling = burn_rate(total, total, objective)
    assert 0 <= rate <= ceiling
    if total:
        assert ceiling == pytest.approx(1 / error_budget(objective))
    if bad < total:
        assert burn_rate(bad + 1, total, objective) >= rate
    if bad and total:
        assert rate > 0


@given(
    long_total=st.integers(min_value=0, max_value=99),
    data=st.data(),
)
def test_below_min_events_nothing_ever_fires(long_total: int, data: st.DataObject) -> None:
    long_bad = data.draw(st.integers(min_value=0, max_value=long_total))
    short_total = data.draw(st.integers(min_value=0, max_value=long_total))
    short_bad = data.draw(st.integers(min_value=0, max_value=min(short_total, long_bad)))
    counts = {
        "1h": WindowCounts(long_total, long_bad),
        "5m": WindowCounts(short_total, short_bad),
        "6h": WindowCounts(long_total, long_bad),
        "30m": WindowCounts(short_total, short_bad),
    }
    for sli in ("success", "latency"):
        assert evaluate_burn(DOC, "A", SloScope("tiny"), sli, counts) == []


def _counts(long_total: int, long_bad: int, short_total: int, short_bad: int) -> dict:
    return {
        "1h": WindowCounts(long_total, long_bad),
        "5m": WindowCounts(short_total, short_bad),
        "6h": WindowCounts(long_total * 6, long_bad),
        "30m": WindowCounts(short_total * 6, short_bad),
    }


def test_a_rule_fires_at_exactly_its_burn_rate_and_not_below() -> None:
    scope = SloScope("acme", "triage")
    (alert,) = evaluate_burn(DOC, "A", scope, "success", _counts(1000, 144, 100, 15))
    assert (alert.severity, alert.long_burn, alert.short_burn) == ("page", 14.4, 15.0)
    assert (alert.long_window, alert.short_window, alert.threshold) == ("1h", "5m", 14.4)
    assert alert.scope == scope and alert.tier == "A" and alert.sli == "success"
    assert alert.message.startswith("PAGE acme/triage tier A success: burning")
    assert "14.4x over 1h (144/1000 bad)" in alert.message
    assert evaluate_burn(DOC, "A", scope, "success", _counts(1000, 143, 100, 15)) == []
    assert evaluate_burn(DOC, "A", scope, "success", _counts(1000, 144, 100, 14)) == []
    # min_events is inclusive and applies to each rule's own long window: 100 turns in
    # the 1 h window may page, 99 may not (and 99 in 6 h may not open a ticket either).
    few = {name: WindowCounts(99, 99) for name in ("1h", "6h")}
    few |= {name: WindowCounts(10, 10) for name in ("5m", "30m")}
    assert evaluate_burn(DOC, "A", scope, "success", few) == []
    enough = {**few, "1h": WindowCounts(100, 100)}
    assert [a.severity for a in evaluate_burn(DOC, "A", scope, "success", enough)] == ["page"]


def test_evaluate_burn_refuses_missing_windows_and_unknown_tiers() -> None:
    counts = _counts(1000, 0, 100, 0)
    del counts["5m"]
    with pytest.raises(ValueError, match="no counts for window '5m'"):
        evaluate_burn(DOC, "A", SloScope("acme"), "success", counts)
    with pytest.raises(ValueError, match="unknown tier 'D'"):
        evaluate_burn(DOC, "D", SloScope("acme"), "success", _counts(1000, 0, 100, 0))
    with pytest.raises(ValueError, match="unknown SLI"):
        evaluate_burn(DOC, "A", SloScope("acme"), "errors", _counts(1000, 0, 100, 0))  # type: ignore[arg-type]


# --- turns -> counts -------------------------------------------------------------------


def test_turn_verdicts_follow_the_document() -> None:
    assert turn_verdicts(DOC, "A", "ok", 2000) == {"success": True, "latency": True}
    assert turn_verdicts(DOC, "A", "ok", 2001) == {"success": True, "latency": False}
    assert turn_verdicts(DOC, "C", "ok", 29_999) == {"success": True, "latency": True}
    assert turn_verdicts(DOC, "A", "timeout", 30_000) == {"success": False, "latency": False}
    assert turn_verdicts(DOC, "B", "error", 10) == {"success": False, "latency": True}
    assert turn_verdicts(DOC, "A", "cancelled", 99_999) == {"success": None, "latency": None}
    with pytest.raises(ValueError, match="unknown turn outcome"):
        turn_verdicts(DOC, "A", "exploded", 1)


def test_tally_windows_are_half_open_at_the_far_end() -> None:
    turns = [
        (NOW, "error", 10),  # age 0: in every window
        (NOW - timedelta(minutes=5), "error", 10),  # age exactly 5m: not in 5m, in 30m
        (NOW - timedelta(minutes=4, seconds=59), "ok", 10),
        (NOW - timedelta(hours=2), "cancelled", 10),  # not counted at all
        (NOW + timedelta(seconds=1), "error", 10),  # after now: not part of this status
    ]
    counts = tally_turns(DOC, "A", turns, NOW)
    assert counts["success"]["5m"] == WindowCounts(total=2, bad=1)
    assert counts["success"]["30m"] == WindowCounts(total=3, bad=2)
    assert counts["success"]["30d"] == WindowCounts(total=3, bad=2)
    assert counts["latency"]["30d"] == WindowCounts(total=3, bad=0)


def history(
    bad_for_minute: Callable[[int], int],
    *,
    minutes: int = 360,
    per_minute: int = PER_MINUTE,
    slow: bool = False,
) -> list[tuple[datetime, str, int]]:
    """`per_minute` turns in each of the last `minutes` minutes; bad_for_minute(m) of the
    turns m minutes ago (m = 1 is the last minute) are bad: errors, or slow successes."""
    bad_turn = ("ok", 10_000) if slow else ("error", 800)
    turns = []
    for minute in range(1, minutes + 1):
        bad = bad_for_minute(minute)
        for k in range(per_minute):
            age = timedelta(seconds=(minute - 1) * 60 + (k + 0.5) * 60 / per_minute)
            turns.append((NOW - age, *(bad_turn if k < bad else ("ok", 800))))
    return turns


def healthy(minute: int) -> int:
    return 1 if minute % 20 == 0 else 0  # one error every 20 minutes: 0.1%


def fleet_status(incidents: dict[str, list[tuple[datetime, str, int]]]) -> dict[str, Any]:
    """Status of acme (maybe with an incident) and three healthy tier-A tenants."""
    tenants = {"acme": history(healthy), "globex": history(healthy), "initech": history(healthy)}
    tenants["umbrella"] = history(lambda m: 2 if m % 3 == 0 else 0)  # 1.3%: a bit over budget
    tenants.update(incidents)
    rows = [
        ScopeCounts(SloScope(tenant, "support"), "A", tally_turns(DOC, "A", turns, NOW))
        for tenant, turns in tenants.items()
    ]
    return slo_status(DOC, rows)


def firing(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(alert["tenant"], alert["sli"], alert["severity"]) for alert in status["alerts"]]


def test_a_healthy_fleet_is_silent() -> None:
    status = fleet_status({})
    assert status["alerts"] == []
    umbrella = next(scope for scope in status["scopes"] if scope["tenant"] == "umbrella")
    # Over budget in the long run (burn 1.3), yet far from any alert threshold.
    assert umbrella["slis"]["success"]["windows"]["6h"]["burn_rate"] == pytest.approx(4 / 3)
    assert umbrella["slis"]["success"]["alerts"] == []


def test_a_full_outage_of_ten_minutes_pages_for_that_tenant_only() -> None:
    # 100% errors for the last 10 minutes: 1 h burns (500 + 3) / 3000 / 0.01 = 16.8 >= 14.4;
    # 6 h only (500 + 18) / 18000 / 0.01 = 2.9 < 6, so no ticket.
    outage = history(lambda m: PER_MINUTE if m <= 10 else healthy(m))
    status = fleet_status({"acme": outage})
    assert firing(status) == [("acme", "success", "page")]
    (alert,) = status["alerts"]
    assert alert["long_counts"] == {"total": 3000, "bad": 503}
    assert alert["short_burn"] == 100.0
    assert alert["workflow"] == "support"


def test_a_20_percent_error_spike_pages_once_it_has_burnt_enough_of_the_budget() -> None:
    # The crafted incident: the error rate jumps to 20% on a 0.99 objective. After
    # 10 minutes the 1 h window burns only 100 / 3000 / 0.01 = 3.3: the page rule needs
    # 14.4 * 0.01 * 60 / 0.2 = 43.2 minutes at 20% (SRE workbook detection time), so
    # nothing fires yet; at 45 minutes it pages (450 / 3000 = 15%), still for acme only.
    ten_minutes = history(lambda m: 10 if m <= 10 else 0)
    assert fleet_status({"acme": ten_minutes})["alerts"] == []
    sustained = history(lambda m: 10 if m <= 45 else 0)
    status = fleet_status({"acme": sustained})
    assert firing(status) == [("acme", "success", "page")]
    assert status["alerts"][0]["long_burn"] == 15.0


def test_a_slow_burn_opens_a_ticket_not_a_page() -> None:
    # 8% errors for 5 hours: 6 h burns 1200 / 18000 / 0.01 = 6.7 >= 6, 30 m burns 8 >= 6,
    # but 1 h burns 8 < 14.4.
    status = fleet_status({"acme": history(lambda m: 4 if m <= 300 else 0)})
    assert firing(status) == [("acme", "success", "ticket")]


def test_a_spike_only_in_the_short_window_does_not_alert() -> None:
    # 100% errors for the last 2 minutes: 5 m burns 40, but 1 h only 100 / 3000 / 0.01 = 3.3.
    status = fleet_status({"acme": history(lambda m: PER_MINUTE if m <= 2 else 0)})
    assert status["alerts"] == []
    acme = status["scopes"][0]["slis"]["success"]["windows"]
    assert (acme["5m"]["burn_rate"], acme["1h"]["burn_rate"]) == (40.0, 100 / 30)


def test_an_old_spike_that_stopped_does_not_alert() -> None:
    # 100% errors 31-45 minutes ago, healthy since: the 1 h window still burns 25, but the
    # 5 m (and 30 m) windows are clean, so the rule has reset.
    status = fleet_status({"acme": history(lambda m: PER_MINUTE if 31 <= m <= 45 else 0)})
    assert status["alerts"] == []
    windows = status["scopes"][0]["slis"]["success"]["windows"]
    assert windows["1h"]["burn_rate"] == 25.0
    assert windows["5m"]["burn_rate"] == windows["30m"]["burn_rate"] == 0.0


def test_a_tiny_tenant_below_min_events_is_silent_even_when_everything_fails() -> None:
    # A new tenant: one turn a minute for the last 90 minutes, all failing. 60 turns in
    # the 1 h window and 90 in the 6 h one are below min_events (100).
    tiny = history(lambda m: 1, per_minute=1, minutes=90)
    status = fleet_status({"tiny": tiny})
    assert status["alerts"] == []
    tiny_status = next(scope for scope in status["scopes"] if scope["tenant"] == "tiny")
    assert tiny_status["slis"]["success"]["windows"]["1h"]["burn_rate"] == 100.0


def test_latency_burn_pages_on_slow_turns_and_leaves_success_alone() -> None:
    # Tier A: 95% within 2 s, a 0.05 budget. All turns slow (but ok) for 45 minutes:
    # 1 h burns 2250 / 3000 / 0.05 = 15 >= 14.4; 5 m burns 20.
    slow = history(lambda m: PER_MINUTE if m <= 45 else 0, slow=True)
    status = fleet_status({"acme": slow})
    assert firing(status) == [("acme", "latency", "page")]
    assert status["alerts"][0]["long_burn"] == 15.0
    # The same slowness for 10 minutes only: not yet significant.
    brief = history(lambda m: PER_MINUTE if m <= 10 else 0, slow=True)
    assert fleet_status({"acme": brief})["alerts"] == []


def test_the_tier_decides_the_latency_threshold() -> None:
    # 10 s turns are slow for tier A (2 s) and fast for tier C (30 s).
    slow = history(lambda m: PER_MINUTE, slow=True)
    rows = [
        ScopeCounts(SloScope("a"), "A", tally_turns(DOC, "A", slow, NOW)),
        ScopeCounts(SloScope("c"), "C", tally_turns(DOC, "C", slow, NOW)),
    ]
    status = slo_status(DOC, rows)
    assert {(a["tenant"], a["sli"]) for a in status["alerts"]} == {("a", "latency")}
    assert status["scopes"][1]["slis"]["latency"]["threshold_ms"] == 30000


# --- budget burn -----------------------------------------------------------------------

USD = 1_000_000  # micro-dollars


def test_budget_burn_fires_when_the_hourly_rate_exhausts_the_day_before_midnight() -> None:
    left = seconds_left_in_period(NOW, "day")
    assert left == 10 * 3600
    burn = budget_burn(5 * USD, 3600, 60 * USD, 100 * USD, left)
    assert burn.fires and burn.reason == "projected" and not burn.exhausted
    assert burn.projected_spend == 110 * USD
    assert burn.rate_micros_per_hour == 5 * USD
    assert burn.remaining == 40 * USD
    assert burn.seconds_to_exhaustion == 8 * 3600


def test_budget_burn_is_silent_when_the_rate_lasts_until_the_period_ends() -> None:
    burn = budget_burn(3 * USD, 3600, 60 * USD, 100 * USD, 10 * 3600)
    assert not burn.fires and burn.reason is None
    assert burn.projected_spend == 90 * USD
    assert burn.seconds_to_exhaustion == 48_000
    # Landing exactly on the limit at midnight is not over it.
    assert not budget_burn(4 * USD, 3600, 60 * USD, 100 * USD, 10 * 3600).fires
    assert budget_burn(4 * USD + 1, 3600, 60 * USD, 100 * USD, 10 * 3600).fires
    idle = budget_burn(0, 3600, 60 * USD, 100 * USD, 10 * 3600)
    assert not idle.fires and idle.seconds_to_exhaustion is None


def test_budget_burn_reports_an_exhausted_budget() -> None:
    burn = budget_burn(0, 3600, 100 * USD, 100 * USD, 3600)
    assert burn.fires and burn.exhausted and burn.reason == "exhausted"
    assert (burn.remaining, burn.seconds_to_exhaustion) == (0, 0)
    over = budget_burn(1, 3600, 120 * USD, 100 * USD, 0)
    assert over.exhausted and over.remaining == 0
    zero = budget_burn(0, 3600, 0, 0, 3600)  # a zero budget nothing has touched
    assert not zero.fires


def test_budget_burn_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        budget_burn(1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="used"):
        budget_burn(1, 60, -1, 1, 1)
    with pytest.raises(ValueError, match="spent_in_window"):
        budget_burn(1.5, 60, 0, 1, 1)  # type: ignore[arg-type]


def test_seconds_left_in_period() -> None:
    assert seconds_left_in_period(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "month") == 3600
    assert seconds_left_in_period(datetime(2026, 2, 28, 0, 0, tzinfo=UTC), "month") == 86400
    assert (
        seconds_left_in_period(datetime(2026, 11, 23, 23, 59, 59, 500_000, tzinfo=UTC), "day") == 1
    )
    with pytest.raises(ValueError, match="timezone"):
        seconds_left_in_period(datetime(2026, 11, 23), "day")


@given(
    spent=st.integers(min_value=0, max_value=10**12),
    used=st.integers(min_value=0, max_value=10**12),
    limit=st.integers(min_value=0, max_value=10**12),
    left=st.integers(min_value=0, max_value=31 * 86400),
)
def test_budget_burn_fires_exactly_when_projection_passes_the_limit(
    spent: int, used: int, limit: int, left: int
) -> None:
    burn = budget_burn(spent, 3600, used, limit, left)
    if not burn.exhausted:
        assert burn.fires == (burn.projected_spend > limit)
        if burn.seconds_to_exhaustion is not None and burn.fires:
            assert burn.seconds_to_exhaustion <= left


# --- the status a CLI prints -------------------------------------------------------------


def test_slo_status_is_json_and_carries_every_part() -> None:
    outage = history(lambda m: PER_MINUTE if m <= 10 else healthy(m))
    rows = [
        ScopeCounts(SloScope("acme", "support"), "A", tally_turns(DOC, "A", outage, NOW)),
        ScopeCounts(SloScope("acme"), "B", tally_turns(DOC, "B", [], NOW)),  # no turns at all
    ]
    budgets = [
        BudgetSpend("acme", "day", 100 * USD, 60 * USD, 5 * USD, 36_000),
        BudgetSpend("acme", "month", 1000 * USD, 1000 * USD, 0, 86_400),
        BudgetSpend("globex", "day", 100 * USD, 10 * USD, 1 * USD, 36_000),
    ]
    status = slo_status(DOC, rows, budgets)
    text = json.dumps(status, allow_nan=False)
    assert json.loads(text) == status  # only JSON types: no tuples, dataclasses, NaN
    assert status["slo_version"] == "2026-11-01" and status["period"] == "30d"
    first, empty = status["scopes"]
    assert (first["tenant"], first["workflow"], first["tier"]) == ("acme", "support", "A")
    success = first["slis"]["success"]
    assert set(success["windows"]) == {"5m", "30m", "1h", "6h", "30d"}
    assert success["windows"]["5m"] == {
        "total": 250,
        "bad": 250,
        "good_ratio": 0.0,
        "burn_rate": 100.0,
    }
    budget = success["error_budget"]
    # 18000 turns in 30 d (the history spans 6 h) allow 180 bad; 518 were bad: 2.9x spent.
    assert (budget["allowed_bad"], budget["bad"]) == (180, 518)
    assert budget["remaining_ratio"] == pytest.approx(1 - 518 / 180)
    assert empty["workflow"] is None
    assert empty["slis"]["success"]["windows"]["1h"]["good_ratio"] is None
    assert empty["slis"]["latency"]["error_budget"]["remaining_ratio"] is None
    kinds = [(a["kind"], a["severity"], a["tenant"]) for a in status["alerts"]]
    assert kinds == [
        ("burn_rate", "page", "acme"),
        ("budget_burn", "page", "acme"),  # the exhausted month
        ("budget_burn", "ticket", "acme"),  # the day, projected to run out
    ]
    day = next(a for a in status["alerts"] if a.get("period") == "day")
    assert day["message"].startswith("BUDGET acme day: at 5000000 micro-USD/h (last 1h)")
    assert "run out in 8.0 h, 2.0 h before the period ends" in day["message"]
    assert len(status["budgets"]) == 3
    assert [b["fires"] for b in status["budgets"]] == [True, True, False]


def test_slo_status_needs_counts_for_every_window() -> None:
    counts = tally_turns(DOC, "A", [], NOW)
    del counts["latency"]["30d"]
    with pytest.raises(ValueError, match="no counts for window '30d'"):
        slo_status(DOC, [ScopeCounts(SloScope("acme"), "A", counts)])
    with pytest.raises(ValueError, match="no counts for SLI 'success'"):
        slo_status(DOC, [ScopeCounts(SloScope("acme"), "A", {})])


def test_the_document_model_is_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        DOC.period = "7d"  # type: ignore[misc]
    assert isinstance(DOC, SloDocument)


# --- why a rule fires or not (one verdict for the text and the JSON) -----------------


def _page(long: tuple[int, int], short: tuple[int, int]) -> dict[str, WindowCounts]:
    """Counts for the page rule (1h long, 5m short); the ticket windows hold the same."""
    return {
        "1h": WindowCounts(*long),
        "6h": WindowCounts(*long),
        "5m": WindowCounts(*short),
        "30m": WindowCounts(*short),
        "30d": WindowCounts(*long),
    }


@pytest.mark.parametrize(
    ("long", "short", "reason", "why"),
    [
        ((1000, 240), (100, 20), "firing",
         "FIRING: burn 24.0 over 1h and 20.0 over 5m >= 14.4"),
        # The user's scope: a tier-A workflow whose 12 turns all failed.
        ((12, 12), (1, 1), "suppressed",
         "not firing: 12 events < min_events 100 in 1h, "
         "though burn 100.0 over 1h and 100.0 over 5m >= 14.4"),
        ((1, 1), (1, 1), "suppressed",
         "not firing: 1 event < min_events 100 in 1h, "
         "though burn 100.0 over 1h and 100.0 over 5m >= 14.4"),
        ((1000, 31), (100, 0), "burn_below",
         "not firing: burn 3.1 over 1h and 0.0 over 5m < 14.4"),
        ((1000, 31), (100, 20), "burn_below",
         "not firing: burn 3.1 < 14.4 over 1h (20.0 over 5m)"),
        ((12, 1), (1, 0), "burn_below",
         "not firing: burn 8.3 over 1h and 0.0 over 5m < 14.4; "
         "and 12 events < min_events 100 in 1h"),
        ((1000, 240), (100, 1), "recovering",
         "not firing: burn 24.0 >= 14.4 over 1h but 1.0 < 14.4 over 5m (recovering)"),
        ((0, 0), (0, 0), "no_events", "not firing: no events in 1h"),
        # Printed with the decimals that keep the comparison true: 14.39 is not "14.4".
        ((10_000, 1439), (100, 15), "burn_below",
         "not firing: burn 14.39 < 14.4 over 1h (15.0 over 5m)"),
        ((1000, 144), (100, 15), "firing",
         "FIRING: burn 14.4 over 1h and 15.0 over 5m >= 14.4"),
    ],
)  # fmt: skip
def test_judge_rule_says_why(
    long: tuple[int, int], short: tuple[int, int], reason: str, why: str
) -> None:
    verdict = judge_rule(DOC, "A", "success", "page", _page(long, short))
    assert (verdict.reason, verdict.why) == (reason, why)
    assert verdict.fires == (reason == "firing")
    assert (verdict.long_counts, verdict.short_counts) == (
        WindowCounts(*long),
        WindowCounts(*short),
    )


@given(data=st.data())
def test_the_verdict_is_the_documented_rule(data: st.DataObject) -> None:
    long_total = data.draw(st.integers(min_value=0, max_value=400))
    long_bad = data.draw(st.integers(min_value=0, max_value=long_total))
    short_total = data.draw(st.integers(min_value=0, max_value=long_total))
    short_bad = data.draw(st.integers(min_value=0, max_value=min(short_total, long_bad)))
    counts = _page((long_total, long_bad), (short_total, short_bad))
    for severity in ("page", "ticket"):
        verdict = judge_rule(DOC, "A", "success", severity, counts)
        rule = DOC.burn_alerts.rules[severity]
        long, short = counts[rule.long_window], counts[rule.short_window]
        rate = Fraction(str(rule.burn_rate))  # exact: 14.4, not the float nearest it
        fast = all(c.total and Fraction(c.bad * 100, c.total) >= rate for c in (long, short))
        enough = long.total >= DOC.burn_alerts.min_events
        assert verdict.fires == (fast and enough)
        assert (verdict.reason == "suppressed") == (fast and not enough)
        assert verdict.why.startswith("FIRING: " if verdict.fires else "not firing: ")
    alerts = evaluate_burn(DOC, "A", SloScope("acme"), "success", counts)
    fired = [v.severity for v in judge_rules(DOC, "A", "success", counts) if v.fires]
    assert [a.severity for a in alerts] == fired


def test_the_state_and_the_deciding_rule() -> None:
    def judged(long: tuple[int, int], short: tuple[int, int]) -> list[RuleVerdict]:
        return judge_rules(DOC, "A", "success", _page(long, short))

    firing = judged((1000, 240), (100, 20))  # both rules fire: the page decides
    assert sli_state(firing) == "firing" and deciding_rule(firing).severity == "page"
    quiet = judged((12, 12), (1, 1))
    assert sli_state(quiet) == "suppressed" and deciding_rule(quiet).severity == "page"
    # Neither fires: the rule closest to its rate explains it (ticket: 7.0 of 6 over 6h,
    # but its 30m window at 3.0; page: 7.0 and 3.0 of 14.4).
    slow = judged((1000, 70), (100, 3))
    assert sli_state(slow) == "bad"
    assert deciding_rule(slow).why == (
        "not firing: burn 7.0 >= 6 over 6h but 3.0 < 6 over 30m (recovering)"
    )
    assert sli_state(judged((1000, 0), (100, 0))) == "ok"
    # Nothing in the last hour, bad turns earlier in the 6h: the ticket rule explains.
    earlier = {
        "5m": WindowCounts(0, 0),
        "30m": WindowCounts(0, 0),
        "1h": WindowCounts(0, 0),
        "6h": WindowCounts(9, 6),
        "30d": WindowCounts(9, 6),
    }
    verdicts = judge_rules(DOC, "A", "success", earlier)
    assert sli_state(verdicts) == "bad"
    assert deciding_rule(verdicts).why == (
        "not firing: burn 66.7 >= 6 over 6h but 0.0 < 6 over 30m (recovering); "
        "and 9 events < min_events 100 in 6h"
    )


def test_the_status_carries_the_same_why_and_triage_sorts_worst_first() -> None:
    def scope(name: str, long: tuple[int, int], short: tuple[int, int]) -> ScopeCounts:
        counts = _page(long, short)
        return ScopeCounts(SloScope("acme", name), "A", {"success": counts, "latency": counts})

    rows = [
        scope("calm", (1000, 0), (100, 0)),
        scope("slow", (1000, 31), (100, 0)),
        scope("quiet", (12, 12), (1, 1)),
        scope("outage", (1000, 240), (100, 20)),
        scope("worse", (1000, 500), (100, 60)),
    ]
    status = slo_status(DOC, rows)
    quiet = status["scopes"][2]
    assert quiet["state"] == "suppressed"
    assert quiet["slis"]["success"]["why_rule"] == "page"
    assert quiet["slis"]["success"]["why"] == (
        judge_rule(DOC, "A", "success", "page", _page((12, 12), (1, 1))).why
    )
    assert [r["reason"] for r in quiet["slis"]["success"]["rules"]] == ["suppressed"] * 2
    # Latency (objective 0.95) burns a fifth as fast on the same counts: "outage" only
    # has bad latency turns, "worse" opens a latency ticket (10.0 over 6h, 12.0 over 30m).
    assert status["summary"] == {
        "firing": 3, "suppressed": 2, "bad": 3, "ok": 2, "budgets_firing": 0
    }  # fmt: skip
    sli_rows, _ = triage(status)
    order = [(r["workflow"], r["sli"], r["state"]) for r in sli_rows]
    assert order == [
        ("worse", "success", "firing"),  # pages first, the faster burn first
        ("outage", "success", "firing"),
        ("worse", "latency", "firing"),  # a ticket
        ("quiet", "success", "suppressed"),
        ("quiet", "latency", "suppressed"),
        ("outage", "latency", "bad"),  # 4.8 over 6h
        ("slow", "success", "bad"),  # 3.1 over 1h
        ("slow", "latency", "bad"),
        ("calm", "success", "ok"),
        ("calm", "latency", "ok"),
    ]


@pytest.mark.parametrize(
    ("spend", "why"),
    [
        (BudgetSpend("acme", "day", 3 * USD, 2_160_000, 360_000, 6 * 3600),
         "FIRING: $0.36/h (last 1h) for the 6.0 h left projects $4.32 > $3.00; "
         "runs out in 2.3 h"),
        (BudgetSpend("acme", "day", 3 * USD, 2_160_000, 100_000, 6 * 3600),
         "not firing: $0.10/h (last 1h) for the 6.0 h left projects $2.76 <= $3.00"),
        (BudgetSpend("acme", "day", 3 * USD, 1_000, 0, 6 * 3600),
         "not firing: nothing spent in the last 1h; $0.001000 of $3.00 used"),
        (BudgetSpend("acme", "month", 3 * USD, 3 * USD, 0, 86_400),
         "FIRING: exhausted, $3.00 used of $3.00"),
    ],
)  # fmt: skip
def test_budget_why(spend: BudgetSpend, why: str) -> None:
    (entry,) = slo_status(DOC, [], [spend])["budgets"]
    assert entry["why"] == why
    assert entry["state"] == ("firing" if why.startswith("FIRING") else "ok")
