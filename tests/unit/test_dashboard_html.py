"""The HTML dashboard page: declared charts, units, limit lines, escaping, self-contained."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from govstream.dashboard_html import Page, PanelResult, format_value, render_page, render_panel
from sql.dashboards import parse_chart

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def marks(html: str, kind: str = "rect") -> list[tuple[str, int, str]]:
    """(column, row, raw value) of every plotted mark of `kind` (rect: bars, line: limits)."""
    found = re.findall(
        rf'<{kind} class="\w+" data-column="([^"]+)" data-row="(\d+)" data-value="([^"]+)"', html
    )
    return [(c, int(r), v) for c, r, v in found]


def test_bars_plot_the_declared_metric_not_the_first_numeric_column() -> None:
    """The user's "Cost per model" drew turns: gpt-4o-mini on top with the most turns
    while claude-sonnet-4 cost the most."""
    columns = ["model", "turns", "input_tokens", "cost_usd_micros"]
    rows = [
        ("gpt-4o-mini", 2791, 900_000, 1_234_567),
        ("claude-sonnet-4", 410, 300_000, 47_990_000),
    ]
    chart = parse_chart("bars label=model values=cost_usd_micros")
    html = render_panel(PanelResult("Cost per model", "USD", columns, rows, chart))
    assert marks(html) == [("cost_usd_micros", 1, "47990000"), ("cost_usd_micros", 0, "1234567")]
    labels = re.findall(r'class="label"[^>]*><title>([^<]+)</title>', html)
    assert labels == ["claude-sonnet-4", "gpt-4o-mini"]  # the costliest on top
    assert "$47.99" in html and "$1.23" in html
    assert "axis: USD" in html
    assert "2791" not in re.sub(r"<details.*</details>", "", html, flags=re.S)  # turns not drawn


def test_grouped_bars_share_one_unit_and_limits_are_drawn() -> None:
    chart = parse_chart(
        "bars label=tenant_id,day values=used_usd_micros limit=day_limit_usd_micros"
    )
    columns = ["tenant_id", "day", "used_usd_micros", "day_limit_usd_micros", "used_ratio"]
    rows = [
        ("t-1", "2026-11-23", 18_496_593, 20_000_000, 0.92),
        ("t-2", "2026-11-23", 5, None, None),
    ]
    html = render_panel(PanelResult("Cost used vs daily budget", "USD", columns, rows, chart))
    assert marks(html, "line") == [("day_limit_usd_micros", 0, "20000000")]
    assert "$18.50" in html and "limit $20.00" in html
    assert "18,496,593" not in html  # never micro-dollars on the page
    assert "92.0%" in html  # the ratio column of the table, as a percentage
    latency = parse_chart("bars label=tier values=p50_latency_ms,p95_latency_ms,p99_latency_ms")
    html = render_panel(
        PanelResult("Turn latency", "ms", ["tier", "turns", "p50_latency_ms", "p95_latency_ms",
                    "p99_latency_ms"], [("A", 99, 400, 900, 1500), ("B", 50, 300, 700, 800)],
                    latency)
    )  # fmt: skip
    assert [m[0] for m in marks(html)].count("p95_latency_ms") == 2
    assert "axis: milliseconds" in html and "900 ms" in html
    assert "99" not in {m[2] for m in marks(html)}  # turns are not plotted


def test_a_time_series_is_one_line_per_series_of_the_declared_column() -> None:
    rows = [(T0 + timedelta(hours=h), t, 7, 1_000_000 * (h + 1) * (2 if t == "t-2" else 1))
            for h in range(4) for t in ("t-1", "t-2")]  # fmt: skip
    chart = parse_chart("line time=hour series=tenant_id values=cost_usd_micros")
    html = render_panel(
        PanelResult(
            "Cost per tenant", "USD", ["hour", "tenant_id", "turns", "cost_usd_micros"], rows, chart
        )
    )
    lines = dict(re.findall(r'data-series="([^"]+)" data-values="([^"]+)"', html))
    assert lines == {
        "t-2": "2000000 4000000 6000000 8000000",
        "t-1": "1000000 2000000 3000000 4000000",
    }
    assert "axis: USD" in html and "$8.00" in html


def test_labels_are_not_clipped() -> None:
    """Egress hosts were cut to "lack.com"."""
    host = "hooks.slack.com"
    chart = parse_chart("bars label=destination_host,reason_code values=denials")
    rows = [(host, "EGRESS_NOT_ALLOWED", 12), ("x.io", "EGRESS_NOT_ALLOWED", 3)]
    html = render_panel(PanelResult("Egress", "count", ["destination_host", "reason_code",
                                                         "denials"], rows, chart))  # fmt: skip
    label = re.search(r'<text class="label" x="(\d+)"[^>]*><title>([^<]+)</title>([^<]+)<', html)
    assert label is not None and label.group(3) == f"{host} · EGRESS_NOT_ALLOWED"
    assert int(label.group(1)) >= len(label.group(3)) * 6  # room for the whole label


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (47_990_000, "usd_micros", "$47.99"),
        (18_496_593_000, "usd_micros", "$18,497"),
        (250, "usd_micros", "$0.0003"),
        (0, "usd_micros", "$0.00"),
        (7.961e-05, "ratio", "0.008%"),
        (0.25, "ratio", "25.0%"),
        (0.0123, "ratio", "1.23%"),
        (930, "ms", "930 ms"),
        (12_500, "ms", "12.5 s"),
        (85, "us", "85 µs"),
        (2791, "count", "2,791"),
        (None, "count", "-"),
    ],
)
def test_figures_are_shown_in_their_unit(value: object, unit: str, text: str) -> None:
    assert format_value(value, unit) == text  # type: ignore[arg-type]


def test_tables_empty_results_and_errors() -> None:
    single = render_panel(PanelResult("Block rate", "ratio", ["block_rate"], [(0.25,)]))
    assert 'class="panel table"' in single and "<svg" not in single and "25.0%" in single
    empty = render_panel(PanelResult("Egress denials", "count", ["host", "n"], []))
    assert "no data in this range" in empty
    failed = render_panel(PanelResult("Broken", "x", [], [], error="Code: 62 syntax <error>"))
    assert "query failed: Code: 62 syntax &lt;error&gt;" in failed
    with pytest.raises(ValueError, match="declares column 'cost_usd_micros', which its query"):
        render_panel(
            PanelResult("P", "x", ["model", "turns"], [("a", 1)],
                        parse_chart("bars label=model values=cost_usd_micros"))
        )  # fmt: skip


def test_text_is_escaped_and_the_page_is_self_contained() -> None:
    evil = "<script>alert(1)</script>"
    chart = parse_chart("bars label=tenant_id values=cost_usd_micros")
    page = Page(
        title="govstream dashboards",
        generated_at=datetime(2026, 11, 23, 12, 0),
        parameters={"tenant": evil},
        panels=[
            PanelResult(
                "Cost", "USD", ["tenant_id", "cost_usd_micros"], [(evil, 1), ("t", 2)], chart
            )
        ],
    )
    text = render_page(page)
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    assert text.startswith("<!doctype html>")
    # Nothing fetched from anywhere: the only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\"' )]+", text)) == {"http://www.w3.org/2000/svg"}
    assert "<link" not in text and "src=" not in text
