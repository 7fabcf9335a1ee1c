"""The HTML dashboard page: shapes, escaping, self-contained."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from govstream.dashboard_html import Page, PanelResult, render_page, render_panel

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_a_time_series_with_a_series_column_is_one_line_per_series() -> None:
    rows = [(T0 + timedelta(hours=h), t, 1_000 * (h + 1) * (2 if t == "t-2" else 1))
            for h in range(4) for t in ("t-1", "t-2")]  # fmt: skip
    html = render_panel(
        PanelResult("Cost per tenant", "USD micro", ["hour", "tenant", "cost"], rows)
    )
    assert 'class="panel line"' in html
    assert html.count("<polyline") == 2
    assert "t-1" in html and "t-2" in html
    assert html.count("<tr>") == 1 + len(rows)  # header + every row in the table


def test_categories_are_bars_largest_first() -> None:
    rows = [("gpt-4o", 5), ("claude-haiku-4", 9), ("llama", 1)]
    html = render_panel(PanelResult("Cost per model", "USD", ["model", "cost"], rows))
    assert 'class="panel bars"' in html
    labels = re.findall(r'text-anchor="end">([^<]+)</text><rect', html)
    assert labels == ["claude-haiku-4", "gpt-4o", "llama"]


def test_single_rows_empty_results_and_errors() -> None:
    single = render_panel(PanelResult("Block rate", "ratio", ["rate"], [(0.25,)]))
    assert 'class="panel table"' in single and "<svg" not in single
    empty = render_panel(PanelResult("Egress denials", "count", ["host", "n"], []))
    assert "no data in this range" in empty
    failed = render_panel(PanelResult("Broken", "x", [], [], error="Code: 62 syntax <error>"))
    assert "query failed: Code: 62 syntax &lt;error&gt;" in failed


def test_text_is_escaped_and_the_page_is_self_contained() -> None:
    evil = "<script>alert(1)</script>"
    page = Page(
        title="govstream dashboards",
        generated_at=datetime(2026, 11, 23, 12, 0),
        parameters={"tenant": evil},
        panels=[PanelResult("Cost per tenant", "USD", ["tenant", "cost"], [(evil, 1), ("t", 2)])],
    )
    text = render_page(page)
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    assert text.startswith("<!doctype html>")
    # Nothing fetched from anywhere: the only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\"' )]+", text)) == {"http://www.w3.org/2000/svg"}
    assert "<link" not in text and "src=" not in text
