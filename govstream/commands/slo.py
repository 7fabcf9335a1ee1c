"""`govstream slo`: SLO status and firing alerts, from ClickHouse.

Counts turns per tenant (and per workflow) and tier into every window of the
SLO document (sql/queries/slo_counts.sql), reads the tenants' money budgets
and recent spend (sql/queries/slo_budget_spend.sql), and hands both to the
pure evaluation in projections/slo.py, which also says why each rule fires or
not. Prints the firing alerts, then a table of (scope, tier, SLI) rows with
their burn rates per window, events and that why, worst first, and the money
budgets the same way; `--json` prints the whole status (the same whys) as one
JSON object. By default the tables leave out what is quiet: SLI rows without a
bad turn in any burn rule's window and budgets not firing (`--all` shows them).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from govstream.commands.policy import table as text_table
from govstream.errors import UsageError
from govstream.settings import Settings, load
from projections.policy_contract import ContractError
from projections.slo import (
    BAD_ROWS_SHOWN,
    SLIS,
    BudgetSpend,
    ScopeCounts,
    SloDocument,
    SloScope,
    WindowCounts,
    format_usd,
    load_slo,
    seconds_left_in_period,
    slo_status,
    triage,
    worst_rows,
)
from sql.dashboards import load_query


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slo",
        help="SLO status, firing burn-rate alerts, and why each scope fires or not",
        description="Firing alerts, then one row per (tenant[/workflow], tier, SLI): burn "
        "rate per window, events in each rule's long window, and why the closest rule fires "
        "or not (FIRING, SUPPRESSED = burns fast enough but has fewer turns than min_events, "
        "bad turns, ok), worst first; then the money budgets. Without --all, quiet rows (no bad "
        "turn in the burn rules' windows, budgets not firing) are left out and 'bad turns' "
        "rows are cut at --limit.",
    )
    parser.add_argument("--json", action="store_true", help="the whole status as JSON")
    parser.add_argument(
        "--all", action="store_true", help="also list quiet scopes and budgets not firing"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=BAD_ROWS_SHOWN,
        metavar="N",
        help="without --all, at most N 'bad turns' rows, the fastest burning "
        "(FIRING and SUPPRESSED rows are always listed; default %(default)s)",
    )
    parser.add_argument("--at", help="evaluate at this UTC time (ISO 8601); default now")
    parser.add_argument("--tenant", help="only this tenant")
    parser.add_argument("--slo", type=Path, help="SLO document (GOVSTREAM_SLO_PATH)")
    parser.set_defaults(func=_run)


def parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r}: expected an ISO 8601 time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def read_scopes(
    clickhouse: Any, doc: SloDocument, now: datetime, tenant: str | None = None
) -> list[ScopeCounts]:
    """ScopeCounts for every (tenant, workflow | None, tier) with turns in the period."""
    names = doc.window_names()
    tiers = sorted(doc.tiers.model_dump())
    result = clickhouse.query(
        load_query("slo_counts"),
        {
            "now": now,
            "windows": [doc.window_seconds(name) for name in names],
            "bad": list(doc.sli.bad_outcomes),
            "ignored": list(doc.sli.ignored_outcomes),
            "tiers": tiers,
            "thresholds": [doc.tier(t).latency.threshold_ms for t in tiers],
        },
    )
    scopes = []
    for tenant_id, workflow, tier, total, failed, slow in result.rows:
        if tenant is not None and tenant_id != tenant:
            continue
        if tier not in tiers:
            continue  # a tier the document has no objectives for
        per_sli = {"success": failed, "latency": slow}
        counts = {
            sli: {
                name: WindowCounts(int(total[i]), int(per_sli[sli][i]))
                for i, name in enumerate(names)
            }
            for sli in SLIS
        }
        scopes.append(ScopeCounts(SloScope(tenant_id, workflow), tier, counts))
    return scopes


def read_budgets(
    clickhouse: Any, doc: SloDocument, now: datetime, tenant: str | None = None
) -> list[BudgetSpend]:
    """Each tenant's day and month cost budget with its recent spend."""
    result = clickhouse.query(
        load_query("slo_budget_spend"),
        {"now": now, "window_seconds": doc.window_seconds(doc.budget_burn.rate_window)},
    )
    budgets = []
    for tenant_id, day_limit, month_limit, used_day, used_month, spent in result.rows:
        if tenant is not None and tenant_id != tenant:
            continue
        for period, limit, used in (
            ("day", day_limit, used_day),
            ("month", month_limit, used_month),
        ):
            if limit is None:
                continue  # no money limit in this tenant's plan
            budgets.append(
                BudgetSpend(
                    tenant=tenant_id,
                    period=period,  # type: ignore[arg-type]
                    limit=int(limit),
                    used=int(used),
                    spent_in_window=int(spent),
                    seconds_left_in_period=seconds_left_in_period(now, period),  # type: ignore[arg-type]
                )
            )
    return budgets


def status(
    settings: Settings, doc: SloDocument, now: datetime, tenant: str | None
) -> dict[str, Any]:
    from sql.client import open_clickhouse

    with open_clickhouse(settings, role="client") as clickhouse:
        scopes = read_scopes(clickhouse, doc, now, tenant)
        budgets = read_budgets(clickhouse, doc, now, tenant)
    return {"at": now.isoformat(), **slo_status(doc, scopes, budgets)}


_STATE_LABELS = {"suppressed": "SUPPRESSED", "bad": "bad turns", "ok": "ok"}


def _state_label(row: dict[str, Any]) -> str:
    if row["state"] == "firing":
        return f"FIRING {row['why_rule']}"  # the most severe firing rule
    return _STATE_LABELS[row["state"]]


def _indented(text: str) -> list[str]:
    return ["  " + line for line in text.split("\n")]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _scope_label(row: dict[str, Any]) -> str:
    return row["tenant"] if row["workflow"] is None else f"{row['tenant']}/{row['workflow']}"


def sli_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of triaged SLI rows: state, scope, tier, SLI, objective, the burn
    rate per window, bad/total in each rule's long window, why (the console shows it too)."""
    if not rows:
        return [], []
    windows = list(rows[0]["windows"])
    long_windows = list(dict.fromkeys(r["long_window"] for r in rows[0]["rules"]))
    header = ["state", "scope", "tier", "sli", "objective", *windows]
    header += [f"events {w}" for w in long_windows] + ["why (deciding rule)"]
    table = []
    for row in rows:
        rule_counts = {r["long_window"]: r["long_counts"] for r in row["rules"]}
        table.append(
            [
                _state_label(row),
                _scope_label(row),
                row["tier"],
                row["sli"],
                f"{row['objective']:g}",
                *(f"{row['windows'][w]['burn_rate']:.1f}" for w in windows),
                *(f"{rule_counts[w]['bad']}/{rule_counts[w]['total']}" for w in long_windows),
                f"[{row['why_rule']}] {row['why']}",
            ]
        )
    return header, table


def budget_table(budgets: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of triaged money budgets, with why."""
    if not budgets:
        return [], []
    window = budgets[0]["rate_window"]
    header = ["state", "tenant", "period", "used", "limit", f"spent {window}", "projected", "why"]
    table = [
        [
            f"FIRING {b['severity']}" if b["fires"] else "ok",
            b["tenant"],
            b["period"],
            format_usd(b["used"]),
            format_usd(b["limit"]),
            format_usd(b["spent_in_window"]),
            format_usd(b["projected_spend"]),
            b["why"],
        ]
        for b in budgets
    ]
    return header, table


def render(report: dict[str, Any], *, show_all: bool = False, limit: int = BAD_ROWS_SHOWN) -> str:
    """The status for people: alerts, then the SLI and budget tables (projections.slo.triage).

    Without show_all: every firing and suppressed row, the first `limit` rows with
    bad turns (triage puts the closest to firing first), no ok rows, firing budgets.
    """
    rows, budgets = triage(report)
    summary = report["summary"]
    lines = [
        f"SLO {report['slo_version']} at {report['at']}: "
        f"{_count(len(report['scopes']), 'scope')} (tenant[/workflow], tier), "
        f"{_count(len(report['budgets']), 'money budget')}"
    ]
    alerts = report["alerts"]
    lines.append(f"alerts firing: {len(alerts)}" if alerts else "no alerts firing")
    for alert in alerts:
        # Burn-rate messages start with their severity; budget ones with BUDGET.
        prefix = "" if alert["kind"] == "burn_rate" else f"{alert['severity'].upper()} "
        lines.append(f"  {prefix}{alert['message']}")
    if summary["suppressed"]:
        lines.append(
            f"suppressed: {_count(summary['suppressed'], 'scope SLI')} burning fast enough "
            f"to alert, with fewer turns than min_events {report['min_events']} "
            "(SUPPRESSED below)"
        )

    shown, cut = rows, 0
    if not show_all:
        shown = worst_rows(rows, limit)
        cut = sum(r["state"] == "bad" for r in rows) - sum(r["state"] == "bad" for r in shown)
    lines.append("")
    if shown:
        lines.append(
            "burn rate per window (1 = spending the error budget exactly over "
            f"{report['period']}); events = bad/total in each rule's long window"
        )
        header, table = sli_table(shown)
        right = set(range(4, len(header) - 1))  # the figures; not the why
        lines += _indented(text_table(header, table, right))
    else:
        lines.append("no scope has a bad turn in the burn rules' windows")
    if not show_all:
        quiet = sum(1 for r in rows if r["state"] == "ok")
        hidden = [f"{_count(cut, 'more scope SLI')} with bad turns (--limit)"] if cut else []
        if quiet:
            hidden.append(
                f"{_count(quiet, 'scope SLI')} with no bad turn in the burn rules' windows"
            )
        if hidden:
            lines.append(f"  ({' and '.join(hidden)} not shown; --all lists them)")

    shown_budgets = budgets if show_all else [b for b in budgets if b["fires"]]
    lines.append("")
    if shown_budgets:
        header, table = budget_table(shown_budgets)
        lines.append(
            f"money budgets (spend rate measured over the last {shown_budgets[0]['rate_window']})"
        )
        lines += _indented(text_table(header, table, {3, 4, 5, 6}))
    elif budgets:
        lines.append("no money budget is burning too fast")
    else:
        lines.append("no money budgets (no tenant profile sets a cost limit)")
    if len(shown_budgets) < len(budgets):
        lines.append(
            f"  ({_count(len(budgets) - len(shown_budgets), 'money budget')} not firing "
            "not shown; --all lists them with why)"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    settings = load(slo_path=args.slo)
    try:
        doc = load_slo(settings.resolved_slo_path)
    except ContractError as exc:  # one line naming the field
        raise UsageError(str(exc)) from None
    report = status(settings, doc, parse_at(args.at), args.tenant)
    print(
        json.dumps(report, indent=2)
        if args.json
        else render(report, show_all=args.all, limit=args.limit)
    )
    return 0
