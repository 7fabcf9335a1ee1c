"""Dashboard panels as HTML: inline SVG charts and tables. Pure: no I/O.

Every chart is inline SVG and every style inline CSS: the page works offline,
from a file, with no CDN. A panel is drawn as its SQL file declares
(`-- chart:`, sql/dashboards.py): bars of the declared value columns per row,
or one line per series over time, with the limit column as a budget line.
Nothing is guessed from the shape of the result, so a chart always shows the
metric its title names. Each plotted mark carries the column, row and raw
value it shows (`data-column`, `data-row`, `data-value`): tests read them back
and compare them with the query's result.

Figures are shown in their unit (the column's name decides it): money in
dollars, fractions as percentages, durations with their unit; one unit per
axis. The table of the result follows each chart, folded, so every figure can
be read exactly.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sql.dashboards import TABLE, Chart, Unit, column_unit

MAX_SERIES = 8
MAX_BARS = 20
MAX_TABLE_ROWS = 50
PALETTE = ("#2563eb", "#f59e0b", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#475569")
LIMIT_COLOR = "#dc2626"
WIDTH, HEIGHT, PAD = 640, 220, 56
AXIS_NAMES: dict[Unit, str] = {
    "usd_micros": "USD",
    "ratio": "percent",
    "ms": "milliseconds",
    "us": "microseconds",
    "seconds": "seconds",
    "count": "count",
}


@dataclass(frozen=True)
class PanelResult:
    name: str
    unit: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    chart: Chart = TABLE
    description: str = ""
    error: str | None = None  # the query failed: shown instead of the chart


@dataclass(frozen=True)
class Page:
    title: str
    generated_at: datetime
    parameters: dict[str, Any] = field(default_factory=dict)
    panels: Sequence[PanelResult] = ()


# --- figures ------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def format_value(value: Any, unit: Unit = "count") -> str:
    """A figure as a person reads it: $47.99, 12.5%, 930 ms, 1,234."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if not _is_number(value):
        return str(value)
    number = float(value)
    if unit == "usd_micros":
        dollars = number / 1_000_000
        if abs(dollars) >= 1000:
            return f"${dollars:,.0f}"
        if abs(dollars) >= 0.01 or dollars == 0:
            return f"${dollars:,.2f}"
        return f"${dollars:.4f}"
    if unit == "ratio":
        percent = number * 100
        if percent == 0 or abs(percent) >= 10:
            return f"{percent:.1f}%"
        if abs(percent) >= 0.1:
            return f"{percent:.2f}%"
        return f"{percent:.2g}%"
    if unit == "ms":
        return f"{number / 1000:,.1f} s" if abs(number) >= 10_000 else f"{number:,.0f} ms"
    if unit == "us":
        return f"{number:,.0f} µs"
    if unit == "seconds":
        return f"{number:,.1f} s" if abs(number) < 100 else f"{number:,.0f} s"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{number:,.2f}" if abs(number) < 1000 else f"{number:,.0f}"


def _e(value: Any, unit: Unit = "count") -> str:
    return html.escape(format_value(value, unit), quote=True)


def _raw(value: Any) -> str:
    return html.escape(str(value), quote=True)


# --- charts -------------------------------------------------------------------------


def _index(panel: PanelResult, column: str) -> int:
    try:
        return list(panel.columns).index(column)
    except ValueError:
        raise ValueError(
            f"panel {panel.name!r} declares column {column!r}, which its query does not "
            f"return (it returns {', '.join(panel.columns)})"
        ) from None


def _value_ticks(top: float, unit: Unit, x0: float, x1: float, y: float) -> str:
    """Three labelled ticks (0, half, top) along a horizontal value axis."""
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#94a3b8"/>']
    for share in (0.0, 0.5, 1.0):
        x = x0 + share * (x1 - x0)
        anchor = "start" if share == 0 else "end" if share == 1 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{y + 14}" text-anchor="{anchor}">{_e(top * share, unit)}</text>'
        )
    return "".join(parts)


def _label_width(labels: Sequence[str]) -> int:
    return int(min(300, max((len(label) for label in labels), default=4) * 6.4 + 12))


def _bar_chart(panel: PanelResult, chart: Chart) -> str:
    values = [_index(panel, c) for c in chart.values]
    labels_at = [_index(panel, c) for c in chart.label]
    limit_at = _index(panel, chart.limit) if chart.limit else None
    unit = chart.unit
    # The largest first (by the first plotted column), at most MAX_BARS rows.
    order = sorted(
        range(len(panel.rows)),
        key=lambda i: -float(panel.rows[i][values[0]] or 0),
    )[:MAX_BARS]
    labels = [" · ".join(format_value(panel.rows[i][j]) for j in labels_at) for i in order]
    label_w = _label_width(labels)
    plotted = [panel.rows[i][j] for i in order for j in values]
    if limit_at is not None:
        plotted += [panel.rows[i][limit_at] for i in order]
    top = max((float(v) for v in plotted if v is not None), default=0.0) or 1.0
    bar_h = 14
    group_h = bar_h * len(values) + 8
    x0, x1 = label_w, WIDTH - 80
    height = len(order) * group_h + 30
    parts = []
    for n, (i, label) in enumerate(zip(order, labels, strict=True)):
        row = panel.rows[i]
        y = 4 + n * group_h
        shown = label if len(label) <= 46 else label[:45] + "…"
        parts.append(
            f'<text class="label" x="{label_w - 6}" y="{y + bar_h - 3}" text-anchor="end">'
            f"<title>{html.escape(label)}</title>{html.escape(shown)}</text>"
        )
        for k, j in enumerate(values):
            value = row[j]
            if value is None:
                continue
            width = max(1.0, float(value) / top * (x1 - x0))
            by = y + k * bar_h
            parts.append(
                f'<rect class="mark" data-column="{_raw(chart.values[k])}" data-row="{i}" '
                f'data-value="{_raw(value)}" data-label="{html.escape(label, quote=True)}" '
                f'x="{x0}" y="{by + 1}" width="{width:.1f}" '
                f'height="{bar_h - 3}" fill="{PALETTE[k % len(PALETTE)]}">'
                f"<title>{html.escape(label)}: {_e(value, unit)}</title></rect>"
                f'<text x="{x0 + width + 4:.1f}" y="{by + bar_h - 3}">{_e(value, unit)}</text>'
            )
        if limit_at is not None and row[limit_at] is not None:
            x = x0 + float(row[limit_at]) / top * (x1 - x0)
            parts.append(
                f'<line class="limit" data-column="{_raw(chart.limit)}" data-row="{i}" '
                f'data-value="{_raw(row[limit_at])}" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" '
                f'y2="{y + group_h - 6}" stroke="{LIMIT_COLOR}" stroke-width="2" '
                f'stroke-dasharray="4 2"><title>limit {_e(row[limit_at], unit)}</title></line>'
            )
    parts.append(_value_ticks(top, unit, x0, x1, height - 22))
    return _svg("".join(parts), height) + _legend(chart, unit)


def _legend(chart: Chart, unit: Unit) -> str:
    keys = [
        f'<span class="key"><i style="background:{PALETTE[k % len(PALETTE)]}"></i>'
        f"{html.escape(c)}</span>"
        for k, c in enumerate(chart.values)
    ]
    if chart.limit:
        keys.append(
            f'<span class="key"><i style="background:{LIMIT_COLOR}"></i>'
            f"limit: {html.escape(chart.limit)}</span>"
        )
    axis = f'<span class="axis">axis: {AXIS_NAMES[unit]}</span>'
    return f'<div class="legend">{"".join(keys)}{axis}</div>'


def _line_chart(panel: PanelResult, chart: Chart) -> str:
    time_at = _index(panel, chart.time or "")
    value_at = _index(panel, chart.values[0])
    series_at = _index(panel, chart.series) if chart.series else None
    unit = chart.unit
    series: dict[str, list[tuple[float, Any]]] = {}
    for row in panel.rows:
        if row[value_at] is None:
            continue
        name = str(row[series_at]) if series_at is not None else chart.values[0]
        at = row[time_at]
        at = at if isinstance(at, datetime) else datetime.combine(at, datetime.min.time())
        series.setdefault(name, []).append((at.timestamp(), row[value_at]))
    if not series:
        return ""
    ranked = sorted(series, key=lambda n: -sum(float(v) for _, v in series[n]))[:MAX_SERIES]
    points = [p for n in ranked for p in series[n]]
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(float(v) for _, v in points) or 1.0
    span = (t1 - t0) or 1.0
    x0, x1, base = PAD + 20, WIDTH - 16, HEIGHT - 30

    def xy(t: float, v: Any) -> str:
        x = x0 + (t - t0) / span * (x1 - x0)
        y = base - float(v) / top * (base - 12)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<line x1="{x0}" y1="{base}" x2="{x1}" y2="{base}" stroke="#94a3b8"/>',
        f'<line x1="{x0}" y1="12" x2="{x0}" y2="{base}" stroke="#94a3b8"/>',
    ]
    for share in (0.0, 0.5, 1.0):
        y = base - share * (base - 12)
        parts.append(
            f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{_e(top * share, unit)}</text>'
        )
    first, last = datetime.fromtimestamp(t0), datetime.fromtimestamp(t1)
    parts.append(f'<text x="{x0}" y="{base + 16}">{_e(first)}</text>')
    parts.append(f'<text x="{x1}" y="{base + 16}" text-anchor="end">{_e(last)}</text>')
    for color, name in zip(PALETTE, ranked, strict=False):
        ordered = sorted(series[name])
        line = " ".join(xy(t, v) for t, v in ordered)
        data = " ".join(_raw(v) for _, v in ordered)
        parts.append(
            f'<polyline class="series" data-column="{_raw(chart.values[0])}" '
            f'data-series="{_raw(name)}" data-values="{data}" fill="none" stroke="{color}" '
            f'stroke-width="2" points="{line}"><title>{html.escape(name)}</title></polyline>'
        )
    legend = "".join(
        f'<span class="key"><i style="background:{c}"></i>{html.escape(n)}</span>'
        for c, n in zip(PALETTE, ranked, strict=False)
    )
    return (
        _svg("".join(parts), HEIGHT)
        + f'<div class="legend">{legend}<span class="axis">{html.escape(chart.values[0])}, '
        f"axis: {AXIS_NAMES[unit]}</span></div>"
    )


def _svg(body: str, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img">{body}</svg>'
    )


def _table(panel: PanelResult, open_: bool = False) -> str:
    units = [column_unit(c) for c in panel.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in panel.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v, u)}</td>" for v, u in zip(row, units, strict=True)) + "</tr>"
        for row in panel.rows[:MAX_TABLE_ROWS]
    )
    more = len(panel.rows) - MAX_TABLE_ROWS
    tail = f'<p class="more">{more:,} more rows</p>' if more > 0 else ""
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"
    rows = f"{len(panel.rows):,} row{'s' if len(panel.rows) != 1 else ''}"
    return f"<details{' open' if open_ else ''}><summary>table ({rows})</summary>{table}</details>"


def render_panel(panel: PanelResult) -> str:
    title = f"<h2>{html.escape(panel.name)}</h2>"
    about = f'<p class="about">{html.escape(panel.description)}</p>' if panel.description else ""
    if panel.error is not None:
        failed = f"<p>query failed: {html.escape(panel.error)}</p>"
        return f'<section class="panel error">{title}{failed}</section>'
    if not panel.rows:
        return f'<section class="panel empty">{title}{about}<p>no data in this range</p></section>'
    chart = panel.chart
    draw = {"bars": _bar_chart, "line": _line_chart}.get(chart.shape)
    svg = draw(panel, chart) if draw is not None else ""
    shape = chart.shape if svg else "table"
    return (
        f'<section class="panel {shape}" data-panel="{html.escape(panel.name)}">'
        f"{title}{about}{svg}{_table(panel, open_=not svg)}</section>"
    )


STYLE = "".join(
    (
        "body{font-family:system-ui,sans-serif;margin:24px;color:#0f172a;",
        "background:#f8fafc}",
        "h1{font-size:22px;margin:0 0 4px}",
        ".meta{color:#475569;margin:0 0 18px}",
        "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(680px,1fr));",
        "gap:16px}",
        ".panel{background:#fff;border:1px solid #e2e8f0;border-radius:8px;",
        "padding:12px 16px;overflow:auto}",
        ".panel h2{font-size:15px;margin:0 0 6px}",
        ".about{color:#475569;font-size:12px;margin:0 0 6px}",
        "svg text{font-size:11px;fill:#334155}",
        "summary{cursor:pointer;color:#475569;font-size:12px;margin-top:6px}",
        "table{border-collapse:collapse;font-size:12px;margin-top:8px}",
        "th,td{padding:2px 8px;border-bottom:1px solid #e2e8f0;text-align:right}",
        "th:first-child,td:first-child{text-align:left}",
        ".legend{font-size:12px}",
        ".key{margin-right:12px}",
        ".axis{color:#64748b}",
        ".key i{display:inline-block;width:10px;height:10px;margin-right:4px}",
        ".range,.more{color:#64748b;font-size:11px;margin:2px 0}",
        ".error{border-color:#dc2626}",
        ".empty p{color:#64748b}",
    )
)


def render_page(page: Page) -> str:
    params = ", ".join(f"{html.escape(k)} = {_e(v)}" for k, v in page.parameters.items())
    panels = "\n".join(render_panel(p) for p in page.panels)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(page.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(page.title)}</h1>"
        f'<p class="meta">generated {_e(page.generated_at)} UTC; {params}</p>'
        f"<main>\n{panels}\n</main></body></html>\n"
    )
