"""Every dashboard panel (sql/dashboards/) over a seeded fleet equals an independent count.

A seeded fleet (exact duplicates, malformed records, a redelivery and a runtime
retry of every event) runs through a real worker into ClickHouse
(tests/fleet_run.py). Each panel's figures are recomputed in Python from the
simulator's ground truth, from the simulator's own events (simulate() is
deterministic: the same FleetConfig gives the same events the run sent) or,
for what the processors decided, from the derived topic read back from Kafka:

* money in integer micro-dollars, exactly;
* rates as fractions (numerator and denominator exactly, and the Float64
  ratio equal to Python's correctly rounded division of the same integers);
* percentiles exactly: quantileExact(q) is x[floor(q * n)] of the n sorted
  values (q >= 1: the last; ClickHouse's QuantileExact::getImpl computes
  q * n in double precision and truncates), which is
  govstream.simulate.quantile_exact. No panel uses an approximate quantile
  (quantileTDigest and friends), so no tolerance applies anywhere.
"""

from __future__ import annotations

import re
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from events.models import (
    BudgetExceeded,
    BudgetWarning,
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionClosed,
    SessionQuarantined,
    SessionStarted,
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from govstream.simulate import FleetConfig, quantile_exact, simulate
from sql.dashboards import DashboardError, Panel, load_panels, run_panel
from streams.rows import LIFECYCLE_EVENTS
from tests.conftest import BACKENDS
from tests.fleet_run import Run, fleet_run

pytestmark = pytest.mark.integration

FLEET = FleetConfig(
    seed=45,
    tenants=5,
    sessions=200,
    start=datetime(2026, 11, 21, tzinfo=UTC),
    duplicate_rate=0.03,
    malformed_rate=0.01,
    retries=3,
)
# Everything: derived facts may carry processing times, not only event times.
ALL = {"from": datetime(2000, 1, 1, tzinfo=UTC), "to": datetime(2200, 1, 1, tzinfo=UTC)}
# A window inside the simulated day, to check the range filter: [from, to).
WINDOW = {"from": FLEET.start + timedelta(hours=6), "to": FLEET.start + timedelta(hours=13)}
PANELS = load_panels()
# Where the browser check leaves its screenshot for people to look at.
ARTIFACTS = Path(__file__).parents[2] / ".govstream" / "test-artifacts"
INJECTIONS = (
    "' OR 1=1 --",
    "x'; DROP TABLE turns; --",
    "'; SELECT 1; --",
    '" OR ""="',
    "\\' OR 1=1 #",
)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def sim_events() -> list[Any]:
    return simulate(FLEET).unique_events()


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def run(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    base: Path = tmp_path_factory.mktemp("dashboards")
    with fleet_run(request.param, brokers, clickhouse_servers, base, FLEET) as fleet:
        yield fleet


def panel(
    run: Run, name: str, tenant: str = "", window: dict[str, datetime] = ALL, **extra: Any
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    result = run_panel(run.ch, PANELS[name], params_for(PANELS[name], tenant, window, **extra))
    TIMINGS[name] = max(TIMINGS.get(name, 0.0), time.perf_counter() - started)
    return result.dicts()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _in(at: datetime, window: dict[str, datetime]) -> bool:
    return window["from"] <= at < window["to"]


def turns_of(events: list[Any]) -> list[TurnCompleted]:
    return [e for e in events if isinstance(e, TurnCompleted)]


def tier_of(events: list[Any]) -> dict[str, str]:
    return {e.session_id: e.tier for e in events if isinstance(e, SessionStarted)}


def decisions(run: Run) -> list[PolicyDecided]:
    """One PolicyDecided per (tenant, operation key), as the table keeps."""
    by_key = {(e.tenant_id, e.operation_key): e for e in run.of(PolicyDecided).values()}
    return list(by_key.values())


def params_for(
    p: Panel, tenant: str = "", window: dict[str, datetime] = ALL, **extra: Any
) -> dict[str, Any]:
    """The panel's parameters: by default the whole range, every tenant (if it filters
    by tenant), every workflow and model, the top 100."""
    pool = {**window, "tenant": tenant, "top": 100, "workflow": "", "model": "", **extra}
    return {name: pool[name] for name in p.param_names}


TENANT_PANELS = sorted(n for n, p in PANELS.items() if "tenant" in p.param_names)


# --- every panel -------------------------------------------------------------------------


def test_the_simulation_matches_the_run(run: Run, sim_events: list[Any]) -> None:
    truth = simulate(FLEET).truth
    assert run.truth["per_tenant"] == truth["per_tenant"]
    assert len(turns_of(sim_events)) == run.truth["turns"]["count"]


@pytest.mark.parametrize("name", sorted(PANELS))
def test_every_chart_plots_the_titled_metric_from_its_sql(run: Run, name: str) -> None:
    """What each chart draws, read back from the page, is its declared column of the
    query's result, row for row (bars: the largest MAX_BARS; lines: every point of the
    largest MAX_SERIES series), and its limit line the declared limit column."""
    from govstream.dashboard_html import MAX_BARS, MAX_SERIES, PanelResult, render_panel

    p = PANELS[name]
    result = run_panel(run.ch, p, params_for(p))
    html = render_panel(PanelResult(p.title, p.unit, result.columns, result.rows, p.chart))
    chart, rows = p.chart, result.dicts()
    assert rows, name
    if chart.shape == "bars":
        drawn = re.findall(
            r'<(rect|line) class="(?:mark|limit)" data-column="([^"]+)" data-row="(\d+)" '
            r'data-value="([^"]+)"',
            html,
        )
        shown = sorted({int(row) for _, _, row, _ in drawn})
        largest = sorted(range(len(rows)), key=lambda i: -float(rows[i][chart.values[0]] or 0))
        assert shown == sorted(largest[:MAX_BARS]), name
        want = {
            (column, i): rows[i][column]
            for i in shown
            for column in (*chart.values, *([chart.limit] if chart.limit else []))
            if rows[i][column] is not None
        }
        got = {(column, int(row)): value for _, column, row, value in drawn}
        assert set(got) == set(want), name
        for key, value in want.items():
            assert float(got[key]) == pytest.approx(float(value), rel=1e-12), (name, key)
    elif chart.shape == "line":
        lines = re.findall(
            r'data-column="([^"]+)" data-series="([^"]*)" data-values="([^"]+)"', html
        )
        series: dict[str, list[tuple[Any, float]]] = defaultdict(list)
        for row in rows:
            key = str(row[chart.series]) if chart.series else chart.values[0]
            if row[chart.values[0]] is not None:
                series[key].append((row[chart.time], float(row[chart.values[0]])))
        assert lines and len(lines) == min(len(series), MAX_SERIES), name
        for column, key, values in lines:
            assert column == chart.values[0]
            want = [v for _, v in sorted(series[key])]
            assert [float(v) for v in values.split()] == pytest.approx(want), (name, key)
    else:
        assert "<svg" not in html


@pytest.mark.parametrize("name", sorted(PANELS))
def test_every_panel_runs_and_has_figures(run: Run, name: str) -> None:
    p = PANELS[name]
    started = time.perf_counter()
    result = run_panel(run.ch, p, params_for(p))
    TIMINGS[name] = time.perf_counter() - started
    assert result.columns
    assert result.rows, f"{name}: no rows over the simulated fleet"


@pytest.mark.parametrize("name", TENANT_PANELS)
@pytest.mark.parametrize("tenant", INJECTIONS)
def test_a_tenant_holding_sql_is_only_a_value(run: Run, name: str, tenant: str) -> None:
    p = PANELS[name]
    result = run_panel(run.ch, p, params_for(p, tenant))
    assert result.rows == []
    assert run.ch.query("SELECT count() FROM turns FINAL").scalar() == run.truth["turns"]["count"]


def test_parameters_are_checked_before_the_query(run: Run) -> None:
    with pytest.raises(DashboardError, match=r"unknown parameter\(s\) tenant_id"):
        run_panel(run.ch, "cost_per_model", {**ALL, "tenant": "", "tenant_id": "t"})
    with pytest.raises(DashboardError, match=r"missing parameter\(s\) tenant"):
        run_panel(run.ch, "cost_per_model", ALL)


# --- cost --------------------------------------------------------------------------------


def _hourly(turns: list[TurnCompleted], window: dict[str, datetime], tenant: str) -> dict[Any, Any]:
    want: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in turns:
        if _in(t.occurred_at, window) and tenant in ("", t.tenant_id):
            hour = t.occurred_at.replace(minute=0, second=0, microsecond=0)
            want[(hour, t.tenant_id)][0] += 1
            want[(hour, t.tenant_id)][1] += t.cost_usd_micros
    return {k: tuple(v) for k, v in want.items()}


def test_cost_per_tenant_per_hour(run: Run, sim_events: list[Any]) -> None:
    turns = turns_of(sim_events)
    rows = panel(run, "cost_per_tenant_hourly")
    got = {(_utc(r["hour"]), r["tenant_id"]): (r["turns"], r["cost_usd_micros"]) for r in rows}
    assert got == _hourly(turns, ALL, "")
    # Summed over hours: the ground truth per tenant, to the micro-dollar.
    per_tenant: Counter[str] = Counter()
    for (_, tenant), (_, cost) in got.items():
        per_tenant[tenant] += cost
    truth = run.truth["per_tenant"]
    assert dict(per_tenant) == {t: v["cost_usd_micros"] for t, v in truth.items() if v["turns"]}
    # The range is [from, to) and the tenant filter selects one tenant.
    tenant = max(truth, key=lambda t: truth[t]["turns"])
    rows = panel(run, "cost_per_tenant_hourly", tenant, WINDOW)
    got = {(_utc(r["hour"]), r["tenant_id"]): (r["turns"], r["cost_usd_micros"]) for r in rows}
    assert got == _hourly(turns, WINDOW, tenant) != {}


def test_cost_per_workflow(run: Run, sim_events: list[Any]) -> None:
    truth = run.truth["per_workflow"]
    rows = panel(run, "cost_per_workflow", top=len(truth) + 1)
    got = {r["workflow_id"]: r for r in rows}
    assert set(got) == set(truth)
    for wf, r in got.items():
        assert r["tenant_id"] == truth[wf]["tenant_id"]
        assert (r["turns"], r["tokens"], r["cost_usd_micros"]) == (
            truth[wf]["turns"], truth[wf]["tokens"], truth[wf]["cost_usd_micros"],
        )  # fmt: skip
        assert r["sessions"] == truth[wf]["sessions"]  # every session has a turn
    costs = [r["cost_usd_micros"] for r in rows]
    assert costs == sorted(costs, reverse=True)
    costliest = sorted(
        truth, key=lambda wf: (-truth[wf]["cost_usd_micros"], truth[wf]["tenant_id"], wf)
    )
    assert [r["workflow_id"] for r in panel(run, "cost_per_workflow", top=3)] == costliest[:3]


def test_cost_per_model(run: Run) -> None:
    got = {r["model"]: r for r in panel(run, "cost_per_model")}
    truth = run.truth["per_model"]
    assert {m: (r["turns"], r["input_tokens"], r["output_tokens"], r["cost_usd_micros"])
            for m, r in got.items()} == {
        m: (v["turns"], v["input_tokens"], v["output_tokens"], v["cost_usd_micros"])
        for m, v in truth.items()
    }  # fmt: skip


def test_cost_per_completed_workflow(run: Run, sim_events: list[Any]) -> None:
    rejected = {e.causation_id for e in run.of(InvalidTransitionRejected).values()}
    closed = {
        (e.tenant_id, e.session_id)
        for e in sim_events
        if isinstance(e, SessionClosed) and e.event_id not in rejected
    }
    sessions_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in sim_events:
        if isinstance(e, SessionStarted) and e.workflow_id is not None:
            sessions_of[(e.tenant_id, e.workflow_id)].append(e.session_id)
    truth = run.truth["per_workflow"]
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (tenant, wf), sessions in sessions_of.items():
        if all((tenant, s) in closed for s in sessions):
            want[tenant][0] += 1
            want[tenant][1] += truth[wf]["cost_usd_micros"]
    assert sum(n for n, _ in want.values()) > 0
    rows = panel(run, "cost_per_completed_workflow")
    assert {r["tenant_id"]: [r["completed_workflows"], r["cost_usd_micros"]] for r in rows} == want
    for r in rows:
        assert r["cost_per_workflow_usd_micros"] == r["cost_usd_micros"] / r["completed_workflows"]


def test_cost_used_against_the_daily_budget(run: Run, sim_events: list[Any]) -> None:
    limits = {
        e.tenant_id: e.budgets.cost_per_day_usd_micros
        for e in sim_events
        if isinstance(e, TenantProfileUpdated)
    }
    want = {
        (tenant, day): (used, limits[tenant])
        for tenant, v in run.truth["per_tenant"].items()
        for day, used in v["cost_usd_micros_by_day"].items()
    }
    rows = panel(run, "budget_cost_vs_day_limit")
    got = {
        (r["tenant_id"], r["day"].isoformat()): (r["used_usd_micros"], r["day_limit_usd_micros"])
        for r in rows
    }
    assert got == want
    for r in rows:
        expected = (
            None
            if not r["day_limit_usd_micros"]
            else r["used_usd_micros"] / r["day_limit_usd_micros"]
        )
        assert r["used_ratio"] == expected


# --- turns -------------------------------------------------------------------------------


def _latency(turns: list[TurnCompleted], tiers: dict[str, str]) -> dict[str, dict[str, int]]:
    values: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"latency": [], "first": []})
    for t in turns:
        values[tiers[t.session_id]]["latency"].append(t.latency_ms)
        values[tiers[t.session_id]]["first"].append(t.first_token_ms)
    out = {}
    for tier, v in values.items():
        lat, first = sorted(v["latency"]), sorted(v["first"])
        out[tier] = {"turns": len(lat)}
        for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            out[tier][f"{label}_latency_ms"] = quantile_exact(lat, q)
            out[tier][f"{label}_first_token_ms"] = quantile_exact(first, q)
    return out


def test_latency_percentiles_by_tier(run: Run, sim_events: list[Any]) -> None:
    tiers = tier_of(sim_events)
    got = {r.pop("tier"): r for r in panel(run, "latency_by_tier")}
    truth = run.truth["per_tier"]
    want_truth = {
        tier: {
            "turns": v["turns"],
            **{f"{q}_latency_ms": v[f"latency_ms_{q}"] for q in ("p50", "p95", "p99")},
            **{f"{q}_first_token_ms": v[f"first_token_ms_{q}"] for q in ("p50", "p95", "p99")},
        }
        for tier, v in truth.items()
        if v["turns"]
    }
    assert got == want_truth == _latency(turns_of(sim_events), tiers)
    # A window and one tenant: the same definition over the turns that remain.
    tenant = sorted(run.truth["per_tenant"])[0]
    turns = [
        t for t in turns_of(sim_events) if t.tenant_id == tenant and _in(t.occurred_at, WINDOW)
    ]
    got = {r.pop("tier"): r for r in panel(run, "latency_by_tier", tenant, WINDOW)}
    assert got == _latency(turns, tiers)


def test_turn_success_rate_by_tier(run: Run, sim_events: list[Any]) -> None:
    tiers = tier_of(sim_events)
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    for t in turns_of(sim_events):
        outcomes[tiers[t.session_id]][t.outcome] += 1
    rows = panel(run, "turn_success_by_tier")
    assert {r["tier"] for r in rows} == set(outcomes)
    for r in rows:
        c = outcomes[r["tier"]]
        counted = sum(c.values()) - c["cancelled"]  # cancelled turns are not counted
        assert (r["ok"], r["counted"], r["cancelled"]) == (c["ok"], counted, c["cancelled"])
        assert r["ok"] == run.truth["per_tier"][r["tier"]]["ok_turns"]
        assert Fraction(r["ok"], r["counted"]) == Fraction(c["ok"], counted)
        assert r["success_rate"] == c["ok"] / counted


# --- tools and policy --------------------------------------------------------------------


def test_tool_success_rate_by_tool(run: Run, sim_events: list[Any]) -> None:
    proposals = {
        (e.tenant_id, e.operation_key): e.tool
        for e in sim_events
        if isinstance(e, ToolCallProposed)
    }
    want: dict[str, Counter[str]] = defaultdict(Counter)
    for tool in proposals.values():
        want[tool]["proposed"] += 1
    for e in sim_events:
        if isinstance(e, ToolCallCompleted):
            tool = proposals[(e.tenant_id, e.operation_key)]
            want[tool]["completed"] += 1
            want[tool]["succeeded"] += e.status == "succeeded"
    rows = panel(run, "tool_success_by_tool")
    got = {r["tool"]: (r["proposed"], r["completed"], r["succeeded"]) for r in rows}
    assert got == {t: (c["proposed"], c["completed"], c["succeeded"]) for t, c in want.items()}
    assert sum(r["succeeded"] for r in rows) == run.truth["tool_calls"]["by_status"]["succeeded"]
    for r in rows:
        assert Fraction(r["succeeded"], r["completed"]) == Fraction(
            want[r["tool"]]["succeeded"], want[r["tool"]]["completed"]
        )
        assert r["success_rate"] == r["succeeded"] / r["completed"]


def test_policy_decision_latency(run: Run) -> None:
    values: dict[str, list[int]] = defaultdict(list)
    for d in decisions(run):
        values[d.decision].append(d.evaluation_us)
        values["all"].append(d.evaluation_us)
    want = {}
    for kind, v in values.items():
        v.sort()
        want[kind] = (len(v), *(quantile_exact(v, q) for q in (0.5, 0.95, 0.99)))
    got = {
        r["decision"]: (
            r["decisions"], r["p50_evaluation_us"], r["p95_evaluation_us"], r["p99_evaluation_us"]
        )
        for r in panel(run, "policy_decision_latency")
    }  # fmt: skip
    assert got == want


def test_policy_block_rate(run: Run) -> None:
    per_tenant: dict[str, Counter[str]] = defaultdict(Counter)
    for d in decisions(run):
        per_tenant[d.tenant_id][d.decision] += 1
    rows = panel(run, "policy_block_rate")
    got = {
        r["tenant_id"]: (r["decisions"], r["allowed"], r["denied"], r["require_approval"])
        for r in rows
    }
    assert got == {
        t: (c.total(), c["allow"], c["deny"], c["require_approval"]) for t, c in per_tenant.items()
    }
    assert sum(r["denied"] for r in rows) > 0
    for r in rows:
        assert Fraction(r["denied"], r["decisions"]) == Fraction(
            per_tenant[r["tenant_id"]]["deny"], per_tenant[r["tenant_id"]].total()
        )
        assert r["block_rate"] == r["denied"] / r["decisions"]
    tenant = rows[0]["tenant_id"]
    assert panel(run, "policy_block_rate", tenant) == [rows[0]]


def test_top_denial_reasons(run: Run) -> None:
    reasons = Counter(d.reason_code for d in decisions(run) if d.decision == "deny")
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    rows = panel(run, "policy_denial_reasons", top=100)
    assert [(r["reason_code"], r["denials"]) for r in rows] == ranked
    for r in rows:
        assert r["share"] == r["denials"] / reasons.total()
    top = panel(run, "policy_denial_reasons", top=1)
    assert [(r["reason_code"], r["denials"]) for r in top] == ranked[:1]


def test_egress_denials_by_destination(run: Run, sim_events: list[Any]) -> None:
    hosts = {
        (e.tenant_id, e.operation_key): e.destination_host or ""
        for e in sim_events
        if isinstance(e, ToolCallProposed)
    }
    want = Counter(
        (hosts[(d.tenant_id, d.operation_key)], d.reason_code)
        for d in decisions(run)
        if d.decision == "deny" and d.reason_code.startswith("EGRESS_")
    )
    assert want, "the fleet produced no egress denial"
    rows = panel(run, "egress_denials_by_destination")
    assert {(r["destination_host"], r["reason_code"]): r["denials"] for r in rows} == dict(want)


# --- lifecycle, duplicates, budgets ------------------------------------------------------


def test_invalid_transition_rate(run: Run, sim_events: list[Any]) -> None:
    facts = run.of((SessionSuspended, SessionQuarantined, InvalidTransitionRejected))
    by_key = {(e.tenant_id, e.session_id, e.idempotency_key): e for e in facts.values()}
    rejections = [e for e in by_key.values() if isinstance(e, InvalidTransitionRejected)]
    causes = {e.causation_id for e in rejections}
    applied_rows = [e for e in sim_events if isinstance(e, LIFECYCLE_EVENTS)] + [
        e for e in by_key.values() if not isinstance(e, InvalidTransitionRejected)
    ]
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in rejections:
        want[e.tenant_id][0] += 1
    for e in applied_rows:
        if e.event_id not in causes:
            want[e.tenant_id][1] += 1
    rows = panel(run, "invalid_transition_rate")
    assert {r["tenant_id"]: [r["rejected"], r["applied"]] for r in rows} == want
    for r in rows:
        rejected, applied = want[r["tenant_id"]]
        assert r["rejected_per_applied"] == (rejected / applied if applied else None)
        assert Fraction(r["rejected"], r["rejected"] + r["applied"]) == Fraction(
            rejected, rejected + applied
        )
        assert r["rejected_share"] == rejected / (rejected + applied)


def test_duplicates_suppressed(run: Run) -> None:
    duplicates = list(run.of(DuplicateSuppressed).values())
    assert duplicates
    rows = panel(run, "duplicates_suppressed")
    assert {(r["tenant_id"], r["suppressed_by"]): r["duplicates"] for r in rows} == dict(
        Counter((d.tenant_id, d.suppressed_by) for d in duplicates)
    )
    lineage = panel(run, "duplicates_by_lineage")
    assert {
        (r["original_attempt"], r["duplicate_attempt"]): (r["duplicates"], bool(r["redelivery"]))
        for r in lineage
    } == {
        key: (n, key[0] == key[1])
        for key, n in Counter((d.original_attempt, d.duplicate_attempt) for d in duplicates).items()
    }
    assert sum(r["duplicates"] for r in lineage) == len(duplicates)


def test_budget_burn(run: Run) -> None:
    events = list(run.of((BudgetWarning, BudgetExceeded)).values())
    assert events
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for e in events:
        groups[(e.tenant_id, e.scope)].append(e)
    want = {}
    for key, group in groups.items():
        warnings = [e for e in group if isinstance(e, BudgetWarning)]
        latest = max(group, key=lambda e: (e.occurred_at, e.event_id))
        want[key] = (
            len(warnings),
            len(group) - len(warnings),
            max((e.threshold_pct for e in warnings), default=None),
            max(e.used for e in group),
            latest.limit,
        )
    rows = panel(run, "budget_burn")
    got = {
        (r["tenant_id"], r["scope"]): (
            r["warnings"], r["exceeded"], r["max_threshold_pct"], r["peak_used"], r["budget_limit"]
        )
        for r in rows
    }  # fmt: skip
    assert got == want


def test_report_timings() -> None:
    # Last: the slowest run of each panel seen in this module (shown with -s or -rP).
    print("\npanel timings (s):", {k: round(v, 3) for k, v in sorted(TIMINGS.items())})
    assert all(v < 30 for v in TIMINGS.values())


def test_the_html_page_shows_every_panel_with_data(run: Run) -> None:
    from govstream.commands.dashboard import data_range, render

    start, end = data_range(run.ch)
    assert start <= FLEET.start + timedelta(hours=1) and end > start
    text, failed = render(run.ch, start, end, "", datetime(2026, 11, 23, 12, 0))
    assert failed == 0
    assert text.count('<section class="panel') == len(PANELS)
    for p in PANELS.values():
        assert f"<h2>{p.title}</h2>" in text
    empty = re.findall(r'<section class="panel empty"><h2>([^<]+)</h2>', text)
    assert empty == [], empty
    assert "query failed" not in text


def test_a_browser_draws_every_panel(run: Run, tmp_path: Path) -> None:
    """Headless Chromium screenshots the page; the PNG is kept for people to look at."""
    from govstream.browser import ensure_chromium
    from govstream.commands.dashboard import data_range, render

    start, end = data_range(run.ch)
    text, failed = render(run.ch, start, end, "", datetime(2026, 11, 23, 12, 0))
    assert failed == 0
    page = tmp_path / "dashboard.html"
    page.write_text(text)
    chromium = ensure_chromium(run.settings.cache_dir)
    shot = chromium.screenshot(page, ARTIFACTS / "dashboard.png", width=1400, height=9000)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1400, 9000)
    # Every panel drew a chart or table (the HTML check above), and the browser drew
    # a page that is not blank: a PNG of a white page compresses to a few KB.
    assert len(png) > 100_000, len(png)
