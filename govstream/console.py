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
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

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
    reading_page,
    render_panels,
    sessions_page,
    timeline_page,
)
from govstream.dashboard_html import PanelResult
from govstream.errors import UsageError
from projections.slo import SloDocument
from sql.client import ClickHouse, Queued
from sql.dashboards import load_query, run_panel, shipped_panels
from streams.http_guard import CONSOLE_COOKIE, Guard, principal_of

logger = logging.getLogger(__name__)
PANEL_EXTRAS: dict[str, Any] = {"top": 10}
SESSIONS_SHOWN = 200
REFRESH_SECONDS = 30
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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
    ((tenants, workflows, models),) = ch.query(
        load_query("console_choices"),
        {"from": filters.start, "to": filters.end, "tenant": filters.tenant},
    ).rows
    return Choices(list(tenants), list(workflows), list(models))


def read_kpis(ch: ClickHouse, filters: Filters, now: datetime) -> Kpis:
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
    by_tenant: dict[str, list[dict[str, Any]]]  # `rows` of each tenant, in order


def read_slo_counts(ch: ClickHouse, doc: SloDocument, now: datetime, tenant: str) -> Any:
    """The counts the SLO status is computed from (SQL: the ClickHouse executor)."""
    from govstream.commands.slo import read_budgets, read_scopes

    only = tenant or None
    return read_scopes(ch, doc, now, only), read_budgets(ch, doc, now, only)


def evaluate_slo(doc: SloDocument, counts: Any, now: datetime) -> SloReport:
    """The status from the counts (pure Python: `govstream slo`'s rules)."""
    from projections.slo import slo_status, triage

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
    from projections.slo import worst_rows

    def mine(entry: Mapping[str, Any]) -> bool:
        return not tenant or entry["tenant"] == tenant

    rows = report.by_tenant.get(tenant, []) if tenant else report.rows
    shown = rows[:SLO_ALL_ROWS] if show_all else worst_rows(rows, SLO_ROWS_SHOWN)
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
    counts = read_slo_counts(ch, doc, now, tenant)
    return slo_view(evaluate_slo(doc, counts, now), tenant)


@dataclass
class Kept(Generic[V]):
    """One value of a `Recomputed`: the last one computed, when, and the last failure."""

    value: V | None = None
    at: float = float("-inf")  # the clock (time.monotonic) at the last success
    seconds: float = 0.0  # how long the last success took
    error: str | None = None  # why the last computation failed (cleared by a success)
    task: asyncio.Task[None] | None = None  # the computation running, if any


class Recomputed(Generic[K, V]):
    """Values computed off the pages' time (stale while revalidating): a page is served
    the value kept, and one computation per key starts in the background when it is
    older than `max_age` seconds, or ten times as old as it took to compute (so the
    computations hold the ClickHouse thread the sink shares a tenth of the time at
    most); a key never computed has no value until its first computation ends (`get`
    waits for it, `peek` does not). At most `size` keys are kept; the one asked for
    least recently goes first. Nothing runs while nobody asks."""

    def __init__(
        self,
        compute: Callable[[K], Awaitable[V]],
        max_age: float = 60.0,
        size: int = 16,
        name: str = "value",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute, self.max_age, self.size, self.name = compute, max_age, size, name
        self._clock = clock
        self._kept: dict[K, Kept[V]] = {}
        self._running: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly

    def peek(self, key: K) -> Kept[V]:
        kept = self._kept.pop(key, None) or Kept()
        self._kept[key] = kept  # the most recently asked for last
        while len(self._kept) > self.size:
            del self._kept[next(iter(self._kept))]
        stale = self._clock() - kept.at > max(self.max_age, 10 * kept.seconds)
        if stale and (kept.task is None or kept.task.done()):
            kept.task = asyncio.get_running_loop().create_task(self._run(key, kept))
            self._running.add(kept.task)  # also when its key is dropped meanwhile
            kept.task.add_done_callback(self._running.discard)
        return kept

    async def get(self, key: K) -> Kept[V]:
        """As `peek`, but a key never computed waits for its first computation."""
        kept = self.peek(key)
        if kept.value is None and kept.task is not None:
            await asyncio.shield(kept.task)
        return kept

    def values(self) -> Iterator[V]:
        """The values kept, the most recently asked for last."""
        return (kept.value for kept in self._kept.values() if kept.value is not None)

    async def _run(self, key: K, kept: Kept[V]) -> None:
        started = self._clock()
        try:
            value = await self._compute(key)
        except Exception as exc:  # shown on the page; the next page tries again
            kept.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            logger.warning("console: the %s failed: %s", self.name, kept.error)
            return
        kept.value, kept.at, kept.error = value, self._clock(), None
        kept.seconds = kept.at - started


class SloCache:
    """The worker's SLO status of every tenant, recomputed in the background as
    `Recomputed` says and never on a page's time: a page shows the last status (or
    "computing" on the first). The counts are read on `executor`, the rules run in a
    thread of their own (at fleet scale they take seconds; the executor serves other
    reads meanwhile)."""

    def __init__(
        self,
        doc: SloDocument | None,
        clickhouse: ClickHouse,
        executor: Executor,
        clock: Callable[[], datetime],
        max_age: float = 60.0,
    ) -> None:
        self.doc = doc
        self._clickhouse, self._executor, self._clock = clickhouse, executor, clock
        self._status: Recomputed[None, SloReport] = Recomputed(
            self._read, max_age, size=1, name="SLO status"
        )

    def view(self, tenant: str, show_all: bool = False) -> SloView:
        if self.doc is None:
            return SloView()
        kept = self._status.peek(None)
        if kept.value is None and kept.error is not None:
            return SloView(error=kept.error)
        return slo_view(kept.value, tenant, show_all)

    async def _read(self, _: None) -> SloReport:
        doc, now = self.doc, self._clock()
        assert doc is not None
        counts = await asyncio.get_running_loop().run_in_executor(
            self._executor, read_slo_counts, self._clickhouse, doc, now, ""
        )
        return await asyncio.to_thread(evaluate_slo, doc, counts, now)


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
    *,
    selectors: bool = True,
) -> Overview:
    """Everything the overview shows; `slo` given (the worker's cache) or computed now.
    Without `selectors` (a static page has no form) the choices are not read."""
    slo = slo if slo is not None else read_slo(ch, doc, now, filters.tenant)
    return Overview(
        filters=filters,
        choices=read_choices(ch, filters) if selectors else Choices(),
        kpis=read_kpis(ch, filters, now),
        slo=slo,
        panels=read_panels(ch, filters),
    )


def read_kept_view(ch: ClickHouse, filters: Filters, now: datetime) -> Overview:
    """An overview the worker keeps (`Recomputed`) and serves with the SLO status of
    the moment (`with_status`). Every tenant's reads every turn of the range, seconds
    at fleet scale; one tenant's a few hundred milliseconds. The panels are rendered
    once, here: a fleet's results run to thousands of rows of which a page shows the
    first few."""
    started = time.perf_counter()
    data = read_overview(ch, filters, now, None, SloView())
    return replace(data, panels=(), panels_html=render_panels(data), as_of=now,
                   compute_seconds=time.perf_counter() - started)  # fmt: skip


def with_status(view: Overview, status: SloView) -> Overview:
    """A kept overview with the SLO status (and its firing alerts) of this page."""
    return replace(view, slo=status)


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
    # The reads kept for many pages (every tenant's view, the SLO status) take seconds
    # at fleet scale: they run on a thread of their own and queue each statement on
    # the executor, so the sink's inserts and a tenant's page wait for one statement
    # of theirs at most, not for a whole read.
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-reads")
    queued = Queued(clickhouse, executor)
    slo_cache = SloCache(slo, queued, background, clock)

    async def off_loop(work: Callable[[], T], on: Executor = executor) -> T:
        return await asyncio.get_running_loop().run_in_executor(on, work)

    async def read_view(key: tuple[str, str, str, str]) -> Overview:
        tenant, span, workflow, model = key
        now = clock()
        query = {"tenant": tenant, "range": span, "workflow": workflow, "model": model}
        filters = parse_filters(query, Viewer(None), now)
        if tenant:  # a few hundred milliseconds: on the executor, as a page's read
            return await off_loop(lambda: read_kept_view(clickhouse, filters, now))
        return await off_loop(lambda: read_kept_view(queued, filters, now), background)

    views: Recomputed[tuple[str, str, str, str], Overview] = Recomputed(
        read_view, size=64, name="console view"
    )

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
        status = slo_cache.view(filters.tenant, request.query.get("slo") == "all")
        key = (filters.tenant, filters.range, filters.workflow, filters.model)
        if filters.tenant:  # the first read of one tenant's view is this page's
            kept = await views.get(key)
        else:  # every tenant's: a page now, saying it reads, until the first read is in
            kept = views.peek(key)
            if kept.value is None and kept.error is None:
                seen = next((view.choices for view in views.values() if not view.filters.tenant),
                            Choices())  # fmt: skip
                return page(reading_page(viewer, filters, seen))
        if kept.value is None:
            raise web.HTTPServiceUnavailable(text=f"the figures could not be read: {kept.error}")
        data = with_status(kept.value, status)
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
