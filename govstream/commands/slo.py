"""`govstream slo`: SLO status and firing alerts, from ClickHouse.

Counts turns per tenant (and per workflow) and tier into every window of the
SLO document (sql/queries/slo_counts.sql), reads the tenants' money budgets
and recent spend (sql/queries/slo_budget_spend.sql), and hands both to the
pure evaluation in projections/slo.py. Prints a summary and the firing
alerts; `--json` prints the whole status as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from govstream.errors import UsageError
from govstream.settings import Settings, load
from projections.policy_contract import ContractError
from projections.slo import (
    SLIS,
    BudgetSpend,
    ScopeCounts,
    SloDocument,
    SloScope,
    WindowCounts,
    load_slo,
    seconds_left_in_period,
    slo_status,
)

QUERIES = Path(__file__).resolve().parents[2] / "sql" / "queries"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("slo", help="SLO status and firing burn-rate alerts")
    parser.add_argument("--json", action="store_true", help="the whole status as JSON")
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
        (QUERIES / "slo_counts.sql").read_text(),
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
        (QUERIES / "slo_budget_spend.sql").read_text(),
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


def render(report: dict[str, Any]) -> str:
    scopes = report["scopes"]
    lines = [
        f"SLO {report['slo_version']} at {report['at']}: {len(scopes)} scopes, "
        f"{len(report['budgets'])} money budgets"
    ]
    alerts = report["alerts"]
    if not alerts:
        lines.append("no alerts firing")
    for alert in alerts:
        lines.append(f"  {alert['severity'].upper():6} {alert['message']}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    settings = load(slo_path=args.slo)
    try:
        doc = load_slo(settings.resolved_slo_path)
    except ContractError as exc:  # one line naming the field
        raise UsageError(str(exc)) from None
    report = status(settings, doc, parse_at(args.at), args.tenant)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
