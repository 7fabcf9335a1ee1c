"""The console's pages as HTML. Pure: no I/O, no clock.

Server-rendered, no JavaScript and no CDN: it works offline and from a file
(`govstream dashboard --out` writes the overview). The overview is the KPIs,
then the charts, then the tables; selectors are a GET form (tenant for
operators, workflow, model, time range), so every view is a URL. Auto-refresh
is a meta refresh. A tenant links to its sessions, a session to its timeline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from govstream.dashboard_html import STYLE, PanelResult, _e, format_value, render_panel
from projections.slo import BAD_ROWS_SHOWN

RANGES: dict[str, int | None] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400,
                                 "30d": 30 * 86_400, "all": None}  # fmt: skip
DEFAULT_RANGE = "24h"


@dataclass(frozen=True)
class Filters:
    """What the page shows: a tenant ('' = all), workflow, model, and [start, end)."""

    tenant: str
    workflow: str
    model: str
    range: str
    start: datetime
    end: datetime

    def query(self, **changes: str) -> str:
        """This view's query string, with `changes` applied (empty values dropped)."""
        values = {"tenant": self.tenant, "workflow": self.workflow, "model": self.model,
                  "range": self.range, **changes}  # fmt: skip
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class Viewer:
    """Who is looking: an operator (every tenant) or one tenant."""

    tenant: str | None  # None: an operator

    @property
    def label(self) -> str:
        return "operator (all tenants)" if self.tenant is None else f"tenant {self.tenant}"


@dataclass(frozen=True)
class Choices:
    tenants: Sequence[str] = ()
    workflows: Sequence[str] = ()
    models: Sequence[str] = ()


@dataclass(frozen=True)
class Kpis:
    turns: int
    success_rate: float | None
    p95_latency_ms: int | None
    cost_usd_micros: int
    today_usd_micros: int
    month_usd_micros: int
    day_limit_usd_micros: int | None
    month_limit_usd_micros: int | None
    denials: int


@dataclass(frozen=True)
class SloView:
    """The SLO status as tables (govstream.commands.slo builds the cells for the text
    output too): every (scope, tier, SLI) row worst first, with its state, and the
    money budgets."""

    alerts: Sequence[str] = ()  # the firing alerts' messages
    sli: tuple[list[str], list[list[str]]] = ([], [])  # header, rows
    sli_states: Sequence[str] = ()  # firing | suppressed | bad | ok, per row
    hidden: int = 0  # rows of the status not shown
    budgets: tuple[list[str], list[list[str]]] = ([], [])
    period: str = ""
    min_events: int = 0
    at: datetime | None = None  # when it was computed
    pending: bool = False  # the worker is computing the first one
    error: str | None = None  # the last computation failed


@dataclass(frozen=True)
class Overview:
    filters: Filters
    choices: Choices
    kpis: Kpis
    slo: SloView = field(default_factory=SloView)
    panels: Sequence[PanelResult] = ()
    generated_at: datetime | None = None
    panels_html: str | None = None  # the panels already rendered (a fleet view's snapshot)
    as_of: datetime | None = None  # a snapshot's time (None: read for this page)
    compute_seconds: float = 0.0  # how long the snapshot took to read


@dataclass(frozen=True)
class SessionRow:
    tenant_id: str
    session_id: str
    workflow_id: str | None
    tier: str
    started_at: datetime
    turns: int
    tokens: int
    cost_usd_micros: int
    last_step: str | None
    refused: int


@dataclass(frozen=True)
class TimelineRow:
    occurred_at: datetime
    event_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)


# --- pieces -------------------------------------------------------------------------

CONSOLE_STYLE = STYLE + "".join(
    (
        "nav{margin:0 0 12px}nav a{margin-right:14px}",
        ".who{color:#475569;float:right}",
        "form.filters{background:#fff;border:1px solid #e2e8f0;border-radius:8px;",
        "padding:8px 12px;margin:0 0 14px;display:flex;gap:12px;align-items:end;",
        "flex-wrap:wrap}form.filters label{font-size:12px;color:#475569;display:grid}",
        ".kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));",
        "gap:12px;margin:0 0 16px}",
        ".kpi{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px}",
        ".kpi b{display:block;font-size:22px;margin:2px 0}",
        ".kpi span{color:#475569;font-size:12px}",
        ".kpi.alarm{border-color:#dc2626}.kpi.alarm b{color:#dc2626}",
        "h3{font-size:16px;margin:18px 0 8px}",
        ".alerts li{color:#b91c1c}",
        ".slo{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:4px 14px;",
        "margin:0 0 12px;overflow:auto}.slo td{font-size:12px;white-space:nowrap}",
        'tr[data-slo-state="firing"] td{color:#b91c1c;font-weight:600}',
        'tr[data-slo-state="suppressed"] td{color:#b45309}',
        "table.list{background:#fff}table.list td,table.list th{padding:4px 10px;",
        "text-align:left}",
    )
)


def _select(name: str, current: str, options: Sequence[str], every: str) -> str:
    items = [f'<option value=""{" selected" if not current else ""}>{html.escape(every)}</option>']
    values = list(options) + ([current] if current and current not in options else [])
    for value in values:
        chosen = " selected" if value == current else ""
        items.append(f'<option value="{html.escape(value)}"{chosen}>{html.escape(value)}</option>')
    return (
        f'<label>{name}<select name="{name}" data-filter="{name}">{"".join(items)}</select></label>'
    )


def _filters_form(viewer: Viewer, filters: Filters, choices: Choices, action: str) -> str:
    parts = []
    if viewer.tenant is None:
        parts.append(_select("tenant", filters.tenant, choices.tenants, "all tenants"))
    parts.append(_select("workflow", filters.workflow, choices.workflows, "all workflows"))
    parts.append(_select("model", filters.model, choices.models, "all models"))
    ranges = "".join(
        f'<option value="{r}"{" selected" if r == filters.range else ""}>{r}</option>'
        for r in RANGES
    )
    parts.append(f'<label>range<select name="range" data-filter="range">{ranges}</select></label>')
    parts.append('<button type="submit">Apply</button>')
    span = f"{_e(filters.start)} to {_e(filters.end)} UTC"
    return (
        f'<form class="filters" method="get" action="{action}">{"".join(parts)}'
        f'<span class="range">{span}</span></form>'
    )


def _page(title: str, viewer: Viewer | None, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    who = f'<span class="who">{html.escape(viewer.label)}</span>' if viewer else ""
    nav = (
        f'<nav><a href="/console">Overview</a><a href="/console/sessions">Sessions</a>{who}</nav>'
        if viewer
        else ""
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width">{meta}'
        f"<title>{html.escape(title)}</title><style>{CONSOLE_STYLE}</style></head><body>"
        f"{nav}<h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _of_budget(used: int, limit: int | None) -> str:
    if not limit:
        return "no budget set"
    return f"{_e(used / limit, 'ratio')} of {_e(limit, 'usd_micros')}"


def _kpi(name: str, value: str, note: str = "", alarm: bool = False) -> str:
    cls = "kpi alarm" if alarm else "kpi"
    return (
        f'<div class="{cls}" data-kpi="{html.escape(name)}"><span>{html.escape(name)}</span>'
        f"<b>{value}</b><span>{note}</span></div>"
    )


def render_kpis(kpis: Kpis, firing_alerts: int) -> str:
    over_day = bool(kpis.day_limit_usd_micros) and kpis.today_usd_micros > (
        kpis.day_limit_usd_micros or 0
    )
    return (
        '<section class="kpis">'
        + "".join(
            (
                _kpi(
                    "spend today",
                    _e(kpis.today_usd_micros, "usd_micros"),
                    _of_budget(kpis.today_usd_micros, kpis.day_limit_usd_micros),
                    over_day,
                ),
                _kpi(
                    "spend this month",
                    _e(kpis.month_usd_micros, "usd_micros"),
                    _of_budget(kpis.month_usd_micros, kpis.month_limit_usd_micros),
                ),
                _kpi("turns", _e(kpis.turns), f"{_e(kpis.cost_usd_micros, 'usd_micros')} in range"),
                _kpi("success rate", _e(kpis.success_rate, "ratio"), "turns ok / counted"),
                _kpi("p95 latency", _e(kpis.p95_latency_ms, "ms"), "end to end, per turn"),
                _kpi("policy denials", _e(kpis.denials), "tool calls denied in range"),
                _kpi(
                    "firing alerts",
                    _e(firing_alerts),
                    "SLO burn and budget burn",
                    firing_alerts > 0,
                ),
            )
        )
        + "</section>"
    )


# --- pages --------------------------------------------------------------------------


SLO_ROWS_SHOWN = BAD_ROWS_SHOWN  # bad rows shown by default, after the alarming ones
SLO_ALL_ROWS = 5000  # with ?slo=all


def render_slo(slo: SloView, query: str | None) -> str:
    """Every scope's burn rates, objective, events and why it fires or not: the rows
    the view holds (firing, suppressed, bad; or all), and how many it left out."""
    header, rows = slo.sli
    if slo.error is not None:
        return (
            '<section class="slo" data-slo="failed"><h3>SLOs and budget burn</h3>'
            f"<p>the SLO status could not be computed: {html.escape(slo.error)}</p></section>"
        )
    if slo.pending:
        return (
            '<section class="slo" data-slo="pending"><h3>SLOs and budget burn</h3>'
            "<p>computing the first status; the page refreshes with it</p></section>"
        )
    if not header and not slo.hidden:
        return '<section class="slo"><h3>SLOs and budget burn</h3><p>no turns yet</p></section>'
    shown = list(zip(slo.sli_states, rows, strict=True))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr data-slo-state="{html.escape(state)}">'
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        + "</tr>"
        for state, row in shown
    )
    hidden = slo.hidden
    table = (
        f'<table class="list"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        if shown
        else "<p>no scope has a bad turn in the burn rules' windows</p>"
    )
    more = ""
    if hidden:
        link = (
            f': <a href="/console?{html.escape(query)}&amp;slo=all">show all</a> '
            f"(the first {SLO_ALL_ROWS:,})"
            if query is not None
            else ""
        )
        more = (
            f'<p class="more">{hidden:,} more scope SLIs (no bad turn, or past the first '
            f"{SLO_ROWS_SHOWN} bad ones){link}</p>"
        )
    budget_header, budget_rows = slo.budgets
    budgets = ""
    if budget_header:
        budgets = (
            '<h4>Money budgets</h4><table class="list"><thead><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in budget_header)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in budget_rows
            )
            + "</tbody></table>"
        )
    as_of = f"as of {format_value(slo.at)} UTC; " if slo.at else ""
    note = (
        f"{as_of}burn rate per window (1 = the error budget spent exactly over {slo.period}); "
        "events = bad/total in each rule's long window; an alert needs "
        f"min_events {slo.min_events}"
    )
    return (
        '<section class="slo"><h3>SLOs and budget burn</h3>'
        f'<p class="about">{html.escape(note)}</p>'
        f"{table}{more}{budgets}</section>"
    )


def render_panels(overview: Overview) -> str:
    """The charts, then the table-only panels."""
    charts = [p for p in overview.panels if p.chart.shape != "table"]
    tables = [p for p in overview.panels if p.chart.shape == "table"]
    return (
        "<h3>Charts</h3><main>"
        + "\n".join(render_panel(p) for p in charts)
        + "</main>"
        + (
            "<h3>Tables</h3><main>" + "\n".join(render_panel(p) for p in tables) + "</main>"
            if tables
            else ""
        )
    )


def overview_page(
    viewer: Viewer | None,
    overview: Overview,
    refresh: int | None = None,
) -> str:
    """The overview: KPIs, alerts, charts, then the table-only panels. `viewer` None is
    the static snapshot (`govstream dashboard --out`): no form, no links."""
    f = overview.filters
    scope = f"tenant {f.tenant}" if f.tenant else "all tenants"
    head = (
        _filters_form(viewer, f, overview.choices, "/console")
        if viewer
        else f'<p class="meta">{html.escape(scope)}; {_e(f.start)} to {_e(f.end)} UTC</p>'
    )
    if viewer and f.tenant:
        head += (
            f'<p><a data-drill="sessions" href="/console/sessions?{html.escape(f.query())}">'
            f"Sessions of {html.escape(f.tenant)} →</a></p>"
        )
    if overview.as_of is not None:
        head += (
            f'<p class="about" data-as-of="{overview.as_of.isoformat()}">Figures as of '
            f"{_e(overview.as_of)} UTC, read in {overview.compute_seconds:.2f} s; read again "
            "in the background each minute while the console is open.</p>"
        )
    alerts = "".join(f"<li>{html.escape(a)}</li>" for a in overview.slo.alerts)
    alert_list = f'<ul class="alerts">{alerts}</ul>' if alerts else ""
    body = (
        head
        + render_kpis(overview.kpis, len(overview.slo.alerts))
        + alert_list
        + render_slo(overview.slo, f.query() if viewer else None)
        + (overview.panels_html if overview.panels_html is not None else render_panels(overview))
    )
    title = "govstream console" if viewer else "govstream dashboards"
    if overview.generated_at is not None:
        body += f'<p class="meta">generated {_e(overview.generated_at)} UTC</p>'
    return _page(title, viewer, body, refresh)


def sessions_page(
    viewer: Viewer, filters: Filters, choices: Choices, rows: Sequence[SessionRow]
) -> str:
    lines = []
    for r in rows:
        link = f"/console/sessions/{quote(r.session_id)}?{urlencode({'tenant': r.tenant_id})}"
        lines.append(
            f'<tr data-session="{html.escape(r.session_id)}"><td>{html.escape(r.tenant_id)}</td>'
            f'<td><a href="{html.escape(link)}">{html.escape(r.session_id)}</a></td>'
            f"<td>{html.escape(r.workflow_id or '-')}</td><td>{html.escape(r.tier)}</td>"
            f"<td>{_e(r.started_at)}</td><td>{_e(r.turns)}</td><td>{_e(r.tokens)}</td>"
            f"<td>{_e(r.cost_usd_micros, 'usd_micros')}</td>"
            f"<td>{html.escape(r.last_step or '-')}</td><td>{_e(r.refused)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "tenant",
            "session",
            "workflow",
            "tier",
            "started (UTC)",
            "turns",
            "tokens",
            "cost",
            "last step",
            "refused steps",
        )
    )
    table = (
        f'<table class="list"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
        if lines
        else "<p>no sessions started in this range</p>"
    )
    body = _filters_form(viewer, filters, choices, "/console/sessions") + table
    scope = f" of {filters.tenant}" if filters.tenant else ""
    return _page(f"Sessions{scope}", viewer, body)


def summarize(event_type: str, p: Mapping[str, Any]) -> str:
    """One line of what a record says, for the timeline."""
    get = p.get
    if event_type == "TurnCompleted":
        tokens = f"{get('input_tokens', 0):,}+{get('output_tokens', 0):,} tokens"
        cost = format_value(get("cost_usd_micros"), "usd_micros")
        latency = format_value(get("latency_ms"), "ms")
        return f"{get('model')} {tokens}, {cost}, {latency}, {get('outcome')}"
    if event_type == "ToolCallProposed":
        where = f" → {get('destination_host')}" if get("destination_host") else ""
        return f"{get('tool')}.{get('action')}{where} ({get('risk_level')} risk)"
    if event_type == "PolicyDecided":
        return f"{get('decision')} {get('reason_code')} {get('tool')}.{get('action')}"
    if event_type == "ToolCallCompleted":
        return f"{get('operation_key')} {get('status')}"
    if event_type == "ApprovalRecorded":
        granted = "granted" if get("granted") else "refused"
        return f"{get('operation_key')} {granted} by {get('approver')}"
    if event_type in ("BudgetWarning", "BudgetExceeded"):
        action = f" -> {get('action')}" if get("action") else ""
        return f"{get('scope')} {get('used', 0):,}/{get('limit', 0):,}{action}"
    if event_type == "AdmissionDecided":
        return f"{get('request_kind')} {get('decision')} {get('reason_code')}"
    if event_type == "InvalidTransitionRejected":
        return f"{get('attempted')} refused in {get('from_state')}: {get('reason')}"
    if event_type == "SessionStarted":
        return f"tier {get('tier')}, plan {get('plan')}, actor {get('actor_id')}"
    if event_type == "DuplicateSuppressed":
        return f"attempt {get('duplicate_attempt')} of {get('original_event_id')}"
    return str(get("reason") or get("objective") or "")


def timeline_page(viewer: Viewer, tenant: str, session_id: str, rows: Sequence[TimelineRow]) -> str:
    lines = "".join(
        f'<tr data-event="{html.escape(r.event_type)}"><td>{_e(r.occurred_at)}</td>'
        f"<td>{html.escape(r.event_type)}</td>"
        f"<td>{html.escape(summarize(r.event_type, r.payload))}</td></tr>"
        for r in rows
    )
    table = (
        '<table class="list"><thead><tr><th>time (UTC)</th><th>event</th><th>what</th></tr>'
        f"</thead><tbody>{lines}</tbody></table>"
        if rows
        else "<p>no records of this session</p>"
    )
    back = f"/console/sessions?{urlencode({'tenant': tenant})}"
    body = (
        f'<p><a href="{html.escape(back)}">← sessions of {html.escape(tenant)}</a> · '
        f"the same session in a terminal: <code>govstream replay session "
        f"{html.escape(session_id)}</code></p>{table}"
    )
    return _page(f"Session {session_id}", viewer, body)


PENDING_REFRESH_SECONDS = 2


def reading_page(viewer: Viewer, filters: Filters, choices: Choices) -> str:
    """Every tenant's view before its first read is in: a page now, not a request held
    for the seconds the read takes; it reloads itself until the figures are there. The
    selectors offer what another view read (`choices`), so a tenant can be picked."""
    span = "all time" if filters.range == "all" else f"the last {filters.range}"
    picked = "".join(
        f", {name} {html.escape(value)}"
        for name, value in (("workflow", filters.workflow), ("model", filters.model))
        if value
    )
    body = _filters_form(viewer, filters, choices, "/console") + (
        f'<p class="meta" data-pending="fleet">Reading every tenant\'s figures for {span}'
        f"{picked}: the first read of this view takes seconds at fleet scale (every turn of "
        "the range); this page reloads itself until they are in. One tenant's view is "
        "read at once: pick a tenant above.</p>"
    )
    return _page("govstream console", viewer, body, PENDING_REFRESH_SECONDS)


def login_page(error: str | None = None) -> str:
    message = f'<p class="alerts">{html.escape(error)}</p>' if error else ""
    body = (
        f'{message}<form method="post" action="/console/login">'
        '<label>API key <input type="password" name="key" autocomplete="off"></label> '
        '<button type="submit">Sign in</button></form>'
        "<p>A tenant key shows that tenant only; an operator key every tenant.</p>"
    )
    return _page("govstream console: sign in", None, body)
