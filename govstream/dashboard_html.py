"""One self-contained HTML page from dashboard panel results. Pure: no I/O.

Every chart is inline SVG and every style inline CSS: the page works offline,
from a file, with no CDN and no JavaScript. A panel is drawn by the shape of
its result:

- a time column first, then numbers (optionally with one text column as the
  series, e.g. the tenant): a line chart, one line per series (at most 8,
  the largest by total);
- a text column first, then numbers: a horizontal bar chart of the first
  numeric column (at most 20 bars, the largest);
- anything else, or a single row: the table only.

The table of the result is always printed under the chart, so every figure
the chart shows can be read exactly.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

MAX_SERIES = 8
MAX_BARS = 20
MAX_TABLE_ROWS = 50
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#475569")
WIDTH, HEIGHT, PAD = 640, 220, 48


@dataclass(frozen=True)
class PanelResult:
    name: str
    unit: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    description: str = ""
    error: str | None = None  # the query failed: shown instead of the chart


@dataclass(frozen=True)
class Page:
    title: str
    generated_at: datetime
    parameters: dict[str, Any] = field(default_factory=dict)
    panels: Sequence[PanelResult] = ()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _is_time(value: Any) -> bool:
    return isinstance(value, datetime | date)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _e(text: Any) -> str:
    return html.escape(_fmt(text), quote=True)


def _shape(panel: PanelResult) -> str:
    rows = panel.rows
    if len(rows) < 2 or not panel.columns:
        return "table"
    first = [r[0] for r in rows]
    numeric = [i for i in range(len(panel.columns)) if all(_is_number(r[i]) for r in rows)]
    if not numeric:
        return "table"
    if all(_is_time(v) for v in first):
        return "line"
    if all(isinstance(v, str) or v is None for v in first):
        return "bars"
    return "table"


def _line_chart(panel: PanelResult) -> str:
    columns = list(panel.columns)
    value_index = next(
        i for i in range(1, len(columns)) if all(_is_number(r[i]) for r in panel.rows)
    )
    series_index = next(
        (
            i
            for i in range(1, len(columns))
            if i != value_index and not _is_number(panel.rows[0][i])
        ),
        None,
    )
    series: dict[str, list[tuple[float, float]]] = {}
    for row in panel.rows:
        name = str(row[series_index]) if series_index is not None else columns[value_index]
        at = (
            row[0]
            if isinstance(row[0], datetime)
            else datetime.combine(row[0], datetime.min.time())
        )
        series.setdefault(name, []).append((at.timestamp(), float(row[value_index])))
    ranked = sorted(series, key=lambda n: -sum(v for _, v in series[n]))[:MAX_SERIES]
    points = [p for n in ranked for p in series[n]]
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(v for _, v in points) or 1.0
    span = (t1 - t0) or 1.0

    def xy(t: float, v: float) -> str:
        x = PAD + (t - t0) / span * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD / 2 - v / top * (HEIGHT - PAD)
        return f"{x:.1f},{y:.1f}"

    parts = [_axes(top, panel.unit)]
    for color, name in zip(PALETTE, ranked, strict=False):
        line = " ".join(xy(t, v) for t, v in sorted(series[name]))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{line}"/>')
    legend = "".join(
        f'<span class="key"><i style="background:{c}"></i>{html.escape(n)}</span>'
        for c, n in zip(PALETTE, ranked, strict=False)
    )
    first, last = datetime.fromtimestamp(t0), datetime.fromtimestamp(t1)
    caption = f"{_e(first)} &ndash; {_e(last)}"
    return (
        _svg("".join(parts), HEIGHT)
        + f'<div class="legend">{legend}</div><p class="range">{caption}</p>'
    )


def _axes(top: float, unit: str) -> str:
    base = HEIGHT - PAD / 2
    return (
        f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#94a3b8"/>'
        f'<line x1="{PAD}" y1="{PAD / 2}" x2="{PAD}" y2="{base}" stroke="#94a3b8"/>'
        f'<text x="{PAD - 4}" y="{PAD / 2 + 4}" text-anchor="end">{_e(top)}</text>'
        f'<text x="{PAD - 4}" y="{base}" text-anchor="end">0</text>'
        f'<text x="{WIDTH - PAD}" y="{PAD / 2 - 6}" text-anchor="end">{html.escape(unit)}</text>'
    )


def _bar_chart(panel: PanelResult) -> str:
    value_index = next(
        i for i in range(1, len(panel.columns)) if all(_is_number(r[i]) for r in panel.rows)
    )
    # The label: every leading column that is not a number (tenant and scope, say).
    label_columns = [i for i in range(value_index) if not _is_number(panel.rows[0][i])]
    bars = sorted(panel.rows, key=lambda r: -float(r[value_index]))[:MAX_BARS]
    top = max((float(r[value_index]) for r in bars), default=0.0) or 1.0
    row_h, label_w = 18, 200
    height = len(bars) * row_h + 8
    parts = []
    for n, row in enumerate(bars):
        value = float(row[value_index])
        width = max(1.0, value / top * (WIDTH - label_w - 80))
        y = 4 + n * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
            f"{' · '.join(_e(row[i]) for i in label_columns)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{width:.1f}" height="{row_h - 5}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{label_w + width + 4:.1f}" y="{y + 12}">{_e(row[value_index])}</text>'
        )
    return _svg("".join(parts), height)


def _svg(body: str, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img">{body}</svg>'
    )


def _table(panel: PanelResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in panel.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
        for row in panel.rows[:MAX_TABLE_ROWS]
    )
    more = len(panel.rows) - MAX_TABLE_ROWS
    tail = f'<p class="more">{more:,} more rows</p>' if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"


def render_panel(panel: PanelResult) -> str:
    title = f"<h2>{html.escape(panel.name)}</h2>"
    about = f'<p class="about">{html.escape(panel.description)}</p>' if panel.description else ""
    if panel.error is not None:
        failed = f"<p>query failed: {html.escape(panel.error)}</p>"
        return f'<section class="panel error">{title}{failed}</section>'
    if not panel.rows:
        return f'<section class="panel empty">{title}{about}<p>no data in this range</p></section>'
    shape = _shape(panel)
    chart = {"line": _line_chart, "bars": _bar_chart}.get(shape, lambda _: "")(panel)
    return f'<section class="panel {shape}">{title}{about}{chart}{_table(panel)}</section>'


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
        "table{border-collapse:collapse;font-size:12px;margin-top:8px}",
        "th,td{padding:2px 8px;border-bottom:1px solid #e2e8f0;text-align:right}",
        "th:first-child,td:first-child{text-align:left}",
        ".legend{font-size:12px}",
        ".key{margin-right:12px}",
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
