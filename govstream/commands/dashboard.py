"""`govstream dashboard --out DIR`: the console's overview as one self-contained HTML page.

Runs each query of sql/dashboards/ against ClickHouse (through the worker
that owns the embedded engine, or directly) for a time range and an optional
tenant, and writes DIR/dashboard.html: inline SVG charts and tables, no
JavaScript, no CDN, readable offline. Each panel is charted as its SQL file
declares (`-- chart:`). A panel whose query fails shows the
error in its place; the command then exits 1 after writing the page.
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govstream.commands.slo import parse_at
from govstream.errors import UsageError
from govstream.settings import Settings, load

if TYPE_CHECKING:
    from projections.slo import SloDocument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="write the dashboards as one HTML page")
    parser.add_argument("--out", type=Path, help="directory for dashboard.html")
    parser.add_argument(
        "--grafana", type=Path, help="write the Grafana dashboard JSON here instead (no SQL run)"
    )
    parser.add_argument("--from", dest="start", help="UTC start (ISO 8601); default: first turn")
    parser.add_argument("--to", dest="end", help="UTC end, exclusive; default: after the last turn")
    parser.add_argument("--tenant", default="", help="one tenant; default all")
    parser.set_defaults(func=_run)


def data_range(clickhouse: Any, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[first turn, max(last turn, now) + 1 s): the page's range when none is given.

    Up to now, not only the last turn: the worker's own samples (backlog) are
    recorded in real time even when the turns are replayed history.
    """
    now = now or datetime.now(UTC)
    first, last = clickhouse.query("SELECT min(occurred_at), max(occurred_at) FROM turns").rows[0]
    if first is None or first.year < 2000:  # an empty table answers the epoch
        return now - timedelta(days=1), now + timedelta(seconds=1)
    first, last = (t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in (first, last))
    return first, max(last, now) + timedelta(seconds=1)


def render(
    clickhouse: Any,
    start: datetime,
    end: datetime,
    tenant: str,
    generated_at: datetime,
    slo: SloDocument | None = None,
) -> tuple[str, int]:
    """(the page, how many panels failed): the console's overview, as a file."""
    from govstream.console import read_overview
    from govstream.console_html import Filters, overview_page

    filters = Filters(tenant, "", "", "custom", start, end)
    now = generated_at if generated_at.tzinfo else generated_at.replace(tzinfo=UTC)
    overview = read_overview(clickhouse, filters, now, slo, selectors=False)
    overview = dataclasses.replace(overview, generated_at=generated_at)
    failed = sum(p.error is not None for p in overview.panels)
    return overview_page(None, overview), failed


def write_dashboard(
    settings: Settings,
    out: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str = "",
) -> tuple[Path, int]:
    from projections.slo import load_slo
    from sql.client import open_clickhouse

    with open_clickhouse(settings, role="client") as clickhouse:
        first, last = data_range(clickhouse)
        text, failed = render(
            clickhouse,
            start or first,
            end or last,
            tenant,
            datetime.now(UTC).replace(tzinfo=None),
            load_slo(settings.resolved_slo_path),
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dashboard.html"
    path.write_text(text, encoding="utf-8")
    return path.resolve(), failed


def _run(args: argparse.Namespace) -> int:
    if args.grafana is not None:
        from govstream.grafana import dashboard_json
        from sql.dashboards import load_panels

        args.grafana.write_text(dashboard_json(load_panels().values()), encoding="utf-8")
        print(f"grafana dashboard: {args.grafana}")
        return 0
    if args.out is None:
        raise UsageError("give --out DIR (the HTML page) or --grafana FILE")
    settings = load()
    start = parse_at(args.start) if args.start else None
    end = parse_at(args.end) if args.end else None
    path, failed = write_dashboard(settings, args.out, start, end, args.tenant)
    print(f"dashboard: {path}" + (f" ({failed} panels failed)" if failed else ""))
    return 1 if failed else 0
