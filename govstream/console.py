"""The console the worker serves (`/console`): reads ClickHouse, renders HTML.

Every page is a GET with its filters in the query string; the guard
(streams/http_guard.py) authenticates it (the console cookie, set by
`POST /console/login`) and a tenant key sees its own tenant only, whatever the
query says. Queries run on the worker's ClickHouse executor, so a slow page
never blocks the event loop. `govstream dashboard --out` renders the same
overview (`read_overview`) into a file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from govstream.console_html import (
    DEFAULT_RANGE,
    RANGES,
    SLO_ALL_ROWS,
    SLO_ROWS_SHOWN,
    Choices,
    Filters,
    Kpis,
    Overview,
    SessionRow,
    SloView,
    TimelineRow,
    Viewer,
    login_page,
    overview_page,
    sessions_page,
    timeline_page,
)
from govstream.dashboard_html import PanelResult
from govstream.errors import UsageError
from projections.slo import SloDocument
from sql.client import ClickHouse
from sql.dashboards import load_query, run_panel, shipped_panels
from streams.http_guard import CONSOLE_COOKIE, Guard, principal_of

logger = logging.getLogger(__name__)
PANEL_EXTRAS: dict[str, Any] = {"top": 10}
SESSIONS_SHOWN = 200
REFRESH_SECONDS = 30
T = TypeVar("T")


# --- filters --------------------------------------------------------------------------


def parse_filters(query: Mapping[str, str], viewer: Viewer, now: datetime) -> Filters:
    """The view the query string asks for; a tenant key's tenant is forced."""
    span = query.get("range", DEFAULT_RANGE)
    if span not in RANGES:
        raise UsageError(f"range {span!r}: expected one of {', '.join(RANGES)}")
    seconds = RANGES[span]
    end = now + timedelta(seconds=1)
    start = end - timedelta(seconds=seconds) if seconds else datetime(2000, 1, 1, tzinfo=UTC)
    tenant = viewer.tenant if viewer.tenant is not None else query.get("tenant", "")
    return Filters(
        tenant=tenant,
        workflow=query.get("workflow", ""),
        model=query.get("model", ""),
        range=span,
        start=start,
        end=end,
    )


def _values(filters: Filters) -> dict[str, Any]:
    return {
        "from": filters.start,
        "to": filters.end,
        "tenant": filters.tenant,
        "workflow": filters.workflow,
        "model": filters.model,
    }


# --- reads (synchronous: they run on the ClickHouse executor) -------------------------


def read_choices(ch: ClickHouse, filters: Filters) -> Choices:
    rows = ch.query(
        load_query("console_choices"),
        {"from": filters.start, "to": filters.end, "tenant": filters.tenant},
    ).rows
    by_kind: dict[str, list[str]] = {"tenant": [], "workflow": [], "model": []}
    for kind, value in rows:
        by_kind[kind].append(value)
    return Choices(by_kind["tenant"], by_kind["workflow"], by_kind["model"])


def read_kpis(ch: ClickHouse, filters: Filters, now: datetime, firing: int) -> Kpis:
    (row,) = ch.query(load_query("console_kpis"), {**_values(filters), "now": now}).dicts()
    return Kpis(
        turns=int(row["turns"]),
        success_rate=row["success_rate"],
        p95_latency_ms=row["p95_latency_ms"],
        cost_usd_micros=int(row["cost_usd_micros"]),
        today_usd_micros=int(row["today_usd_micros"]),
        month_usd_micros=int(row["month_usd_micros"]),
        day_limit_usd_micros=row["day_limit_usd_micros"],
        month_limit_usd_micros=row["month_limit_usd_micros"],
        denials=int(row["denials"]),
        firing_alerts=firing,
    )


@dataclass(frozen=True)
class SloReport:
    """The SLO status triaged for people (rows worst first), of one tenant or all."""

    rows: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    period: str
    min_events: int
    at: datetime
    seconds: float  # how long it took to compute
    by_tenant: dict[str, list[dict[str, Any]]]  # `rows` of each tenant, in order


def read_slo_counts(ch: ClickHouse, doc: SloDocument, now: datetime, tenant: str) -> Any:
    """The counts the SLO status is computed from (SQL: the ClickHouse executor)."""
    from govstream.commands.slo import read_budgets, read_scopes

    only = tenant or None
    return read_scopes(ch, doc, now, only), read_budgets(ch, doc, now, only)


def evaluate_slo(doc: SloDocument, counts: Any, now: datetime, seconds: float = 0.0) -> SloReport:
    """The status from the counts (pure Python: `govstream slo`'s rules)."""
    from projections.slo import slo_status, triage

    started = time.perf_counter()
    report = slo_status(doc, *counts)
    rows, budgets = triage(report)
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant"], []).append(row)
    return SloReport(
        rows=rows,
        budgets=budgets,
        alerts=list(report["alerts"]),
        period=str(report["period"]),
        min_events=int(report["min_events"]),
        at=now,
        seconds=seconds + time.perf_counter() - started,
        by_tenant=by_tenant,
    )


def slo_view(report: SloReport | None, tenant: str, show_all: bool = False) -> SloView:
    """The console's SLO section for one tenant ('' = all) of a report of all tenants:
    every firing and suppressed row and the first SLO_ROWS_SHOWN bad ones (triage puts
    them first), or all of them (at most SLO_ALL_ROWS). Cells are built for the rows
    shown only: a fleet has a million scope SLIs."""
    if report is None:
        return SloView(pending=True)
    from govstream.commands.slo import budget_table, sli_table

    def mine(entry: Mapping[str, Any]) -> bool:
        return not tenant or entry["tenant"] == tenant

    rows = report.by_tenant.get(tenant, []) if tenant else report.rows
    if show_all:
        shown = rows[:SLO_ALL_ROWS]
    else:  # as `govstream slo`: every firing and suppressed row, then the first bad ones
        shown, bad = [], 0
        for row in rows:  # triage order: firing, suppressed, bad, ok
            if row["state"] == "ok" or (row["state"] == "bad" and bad == SLO_ROWS_SHOWN):
                break
            bad += row["state"] == "bad"
            shown.append(row)
    return SloView(
        alerts=[a["message"] for a in report.alerts if mine(a)],
        sli=sli_table(shown),
        sli_states=[r["state"] for r in shown],
        hidden=len(rows) - len(shown),
        budgets=budget_table([b for b in report.budgets if mine(b)]),
        period=report.period,
        min_events=report.min_events,
        at=report.at,
    )


def read_slo(ch: ClickHouse, doc: SloDocument | None, now: datetime, tenant: str) -> SloView:
    """The SLO and budget-burn status computed now, as `govstream slo` does."""
    if doc is None:
        return SloView()
    started = time.perf_counter()
    counts = read_slo_counts(ch, doc, now, tenant)
    return slo_view(evaluate_slo(doc, counts, now, time.perf_counter() - started), tenant)


class SloCache:
    """The worker's SLO status of every tenant, recomputed at most every `max_age`
    seconds and never on a page's time: a page that finds it stale starts a refresh
    and shows the last one (or "computing" on the first). The counts are read on the
    ClickHouse executor, the rules run in a thread of their own (at fleet scale they
    take seconds; the sink keeps the executor meanwhile)."""

    def __init__(
        self,
        doc: SloDocument | None,
        clickhouse: ClickHouse,
        executor: Executor,
        max_age: float = 60.0,
    ) -> None:
        self.doc = doc
        self._clickhouse, self._executor = clickhouse, executor
        self.max_age = max_age
        self.report: SloReport | None = None
        self._refreshed = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self.error: str | None = None  # why the last refresh failed

    def view(self, tenant: str, now: datetime, show_all: bool = False) -> SloView:
        if self.doc is None:
            return SloView()
        stale = time.monotonic() - self._refreshed > self.max_age
        if stale and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(now))
        if self.report is None and self.error is not None:
            return SloView(error=self.error)
        return slo_view(self.report, tenant, show_all)

    async def _refresh(self, now: datetime) -> None:
        doc = self.doc
        assert doc is not None
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            counts = await loop.run_in_executor(
                self._executor, read_slo_counts, self._clickhouse, doc, now, ""
            )
            self.report = await asyncio.to_thread(
                evaluate_slo, doc, counts, now, time.perf_counter() - started
            )
        except Exception as exc:  # shown on the page; the next page tries again
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            logger.warning("console: the SLO status failed: %s", self.error)
            return
        self.error = None
        self._refreshed = time.monotonic()


def read_panels(ch: ClickHouse, filters: Filters) -> list[PanelResult]:
    pool = {**_values(filters), **PANEL_EXTRAS}
    results = []
    for panel in shipped_panels():
        if filters.tenant and "tenant" not in panel.param_names:
            continue  # a worker-wide panel (the backlog) is not a tenant's figure
        values = {name: pool[name] for name in panel.param_names}
        try:
            result = run_panel(ch, panel, values)
        except Exception as exc:  # shown in the panel's place
            results.append(PanelResult(panel.title, panel.unit, [], [], error=str(exc)[:300]))
            continue
        results.append(
            PanelResult(panel.title, panel.unit, result.columns, result.rows, panel.chart)
        )
    return results


def read_overview(
    ch: ClickHouse,
    filters: Filters,
    now: datetime,
    doc: SloDocument | None,
    slo: SloView | None = None,
) -> Overview:
    """Everything the overview shows; `slo` given (the worker's cache) or computed now."""
    slo = slo if slo is not None else read_slo(ch, doc, now, filters.tenant)
    return Overview(
        filters=filters,
        choices=read_choices(ch, filters),
        kpis=read_kpis(ch, filters, now, len(slo.alerts)),
        slo=slo,
        panels=read_panels(ch, filters),
    )


def read_sessions(ch: ClickHouse, filters: Filters) -> list[SessionRow]:
    values = {**_values(filters), "top": SESSIONS_SHOWN}
    del values["model"]
    rows = ch.query(load_query("console_sessions"), values).dicts()
    return [SessionRow(**row) for row in rows]


def read_timeline(ch: ClickHouse, tenant: str, session_id: str) -> list[TimelineRow]:
    rows = ch.query(load_query("console_timeline"), {"tenant": tenant, "session": session_id}).rows
    return [TimelineRow(at, kind, json.loads(payload)) for at, kind, payload in rows]


# --- the routes -----------------------------------------------------------------------


def mount_console(
    router: web.UrlDispatcher,
    *,
    guard: Guard,
    clickhouse: ClickHouse,
    executor: Executor,
    slo: SloDocument | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    slo_cache = SloCache(slo, clickhouse, executor)

    async def off_loop(work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    def viewer_of(request: web.Request) -> Viewer:
        principal = principal_of(request)
        return Viewer(None if principal.role == "operator" else principal.tenant)

    def page(text: str, status: int = 200) -> web.Response:
        return web.Response(
            text=text,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
        )

    def filters_of(request: web.Request, viewer: Viewer) -> Filters:
        try:
            return parse_filters(request.query, viewer, clock())
        except UsageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    async def login_form(request: web.Request) -> web.Response:
        return page(login_page())

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        key = str(form.get("key", "")).strip()
        principal = guard.authenticate(key) if key else None
        if principal is None or principal.role not in ("tenant", "operator"):
            return page(login_page("unknown key"), status=401)
        answer = web.HTTPSeeOther("/console")
        answer.set_cookie(CONSOLE_COOKIE, key, httponly=True, samesite="Strict", path="/console")
        raise answer

    async def overview(request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        filters = filters_of(request, viewer)
        now = clock()
        show_all = request.query.get("slo") == "all"
        status = slo_cache.view(filters.tenant, now, show_all)
        data = await off_loop(lambda: read_overview(clickhouse, filters, now, slo, status))
        refresh = None if request.query.get("refresh") == "0" else REFRESH_SECONDS
        return page(overview_page(viewer, data, refresh))

    async def sessions(request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        filters = filters_of(request, viewer)

        def read() -> tuple[Choices, list[SessionRow]]:
            return read_choices(clickhouse, filters), read_sessions(clickhouse, filters)

        choices, rows = await off_loop(read)
        return page(sessions_page(viewer, filters, choices, rows))

    async def timeline(request: web.Request) -> web.Response:
        viewer = viewer_of(request)
        tenant = viewer.tenant if viewer.tenant is not None else request.query.get("tenant", "")
        if not tenant:
            raise web.HTTPBadRequest(text="give ?tenant= (an operator key sees every tenant)")
        session_id = request.match_info["session_id"]
        rows = await off_loop(lambda: read_timeline(clickhouse, tenant, session_id))
        return page(timeline_page(viewer, tenant, session_id, rows))

    router.add_get("/console/login", login_form)
    router.add_post("/console/login", login)
    router.add_get("/console", overview)
    router.add_get("/console/sessions", sessions)
    router.add_get("/console/sessions/{session_id}", timeline)
