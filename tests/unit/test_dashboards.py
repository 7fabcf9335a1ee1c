"""Dashboard files (sql/dashboards/*.sql): headers, parameters, refusals."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sql.client import QueryResult
from sql.dashboards import (
    Chart,
    DashboardError,
    Panel,
    Param,
    check_values,
    column_unit,
    load_panels,
    parse_chart,
    parse_header,
    parse_panel,
    placeholders,
    python_format_placeholders,
    run_panel,
)

DASHBOARDS = Path(__file__).parents[2] / "sql" / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.sql"))
RANGE_AND_TENANT = ("from", "to", "tenant")

GOOD = """\
-- panel: Cost per tenant
-- unit: USD
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all)
-- free text after the header
SELECT tenant_id, sum(cost_usd_micros) FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to: DateTime64(6) }
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id
"""


class FakeClickHouse:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, Any] | None]] = []

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        self.calls.append((sql, parameters))
        return QueryResult(["x"], ["UInt8"], [(1,)])


# --- the shipped files ---------------------------------------------------------------


def test_there_are_dashboard_files() -> None:
    assert len(FILES) >= 14
    assert set(load_panels()) == {f.stem for f in FILES}


WORKER_WIDE = {"consumer_backlog_age"}  # a backlog belongs to the worker, not a tenant


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_names_panel_unit_and_params(path: Path) -> None:
    text = path.read_text()
    title, unit, params, _ = parse_header(text, path.name)
    assert title and unit and params
    assert text.startswith("-- panel: ")
    # Every panel takes the time range, and all but the worker-wide backlog panel the
    # optional tenant filter, as bound parameters.
    types = {p.name: p.type for p in params}
    assert types["from"] == types["to"] == "DateTime64(6)"
    panel = parse_panel(path.stem, text)  # header and query agree
    assert set(placeholders(text)) == set(types)
    if path.stem in WORKER_WIDE:
        assert "tenant" not in types and "Not per tenant" in text
        assert panel.param_names[:2] == RANGE_AND_TENANT[:2]
        return
    assert types["tenant"] == "String"
    assert "all" in next(p.note for p in params if p.name == "tenant")
    assert panel.param_names[:3] == RANGE_AND_TENANT


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_python_format_placeholders(path: Path) -> None:
    text = path.read_text()
    assert python_format_placeholders(text) == []
    for needle in ("%s", "%(", "{}", "{0}", ".format(", "f'", 'f"'):
        assert needle not in text, needle
    # Every brace is part of a {name:Type} server-side placeholder.
    stripped = text
    for name, type_ in placeholders(text).items():
        stripped = stripped.replace(f"{{{name}:{type_}}}", "")
    assert "{" not in stripped and "}" not in stripped


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_quantiles_are_exact(path: Path) -> None:
    # The query itself, without comments (which may name what is not used).
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text().lower().splitlines())
    assert "tdigest" not in text and "quantile(" not in text and "quantiles(" not in text
    if "quantile" in text:
        assert "quantileexact" in text


# --- header parsing ------------------------------------------------------------------


def test_parse_header() -> None:
    title, unit, params, chart = parse_header(GOOD)
    assert chart == Chart("table")
    assert (title, unit) == ("Cost per tenant", "USD")
    assert params == (
        Param("from", "DateTime64(6)"),
        Param("to", "DateTime64(6)"),
        Param("tenant", "String", "'' = all"),
    )


def test_parse_header_types_with_commas_and_notes() -> None:
    text = (
        "-- panel: P\n-- unit: count\n"
        "-- params: m Map(String, UInt32) (weights, by name), tiers Array(String), n UInt8\n"
        "SELECT 1"
    )
    _, _, params, _ = parse_header(text)
    assert params == (
        Param("m", "Map(String, UInt32)", "weights, by name"),
        Param("tiers", "Array(String)"),
        Param("n", "UInt8"),
    )


def test_params_none() -> None:
    assert parse_header("-- panel: P\n-- unit: rows\n-- params: none\nSELECT 1")[2] == ()


def test_the_header_is_the_leading_comment_block() -> None:
    text = "-- panel: P\nSELECT 1\n-- unit: late\n-- params: none\n"
    with pytest.raises(DashboardError, match=r"missing -- unit: \.\.\., -- params: \.\.\."):
        parse_header(text, "late.sql")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- unit: USD\n-- params: none\nSELECT 1", r"x\.sql: header is missing -- panel"),
        ("-- panel: P\n-- params: none\nSELECT 1", r"missing -- unit"),
        ("-- panel: P\n-- unit: USD\nSELECT 1", r"missing -- params"),
        ("-- panel: P\n-- panel: Q\n-- unit: U\n-- params: none\n", r"'panel:' appears twice"),
        ("-- panel: P\n-- unit: U\n-- params: a String, a UInt8\n", r"declared twice: a"),
        ("-- panel: P\n-- unit: U\n-- params: String\n", r"is not 'name Type \[\(note\)\]'"),
        ("-- panel: P\n-- unit: U\n-- params: a String extra\n", r"expected a note"),
        ("-- panel: P\n-- unit: U\n-- params: a Array(String\n", r"unbalanced"),
    ],
)
def test_bad_headers_are_refused(text: str, message: str) -> None:
    with pytest.raises(DashboardError, match=message):
        parse_header(text, "x.sql")


def test_header_and_query_must_agree() -> None:
    header = "-- panel: P\n-- unit: U\n-- params: a String, b UInt8\n"
    with pytest.raises(DashboardError) as info:
        parse_panel("p", header + "SELECT {a:UInt32}, {c:String}")
    message = str(info.value)
    assert "b is declared but not used" in message
    assert "{c:String} is used but not declared" in message
    assert "a is declared String but used as UInt32" in message


@pytest.mark.parametrize("bad", ["{tenant}", "{}", "{0}", "%s", "%(tenant)s", "{tenant!r}"])
def test_python_format_placeholders_are_refused(bad: str) -> None:
    text = f"-- panel: P\n-- unit: U\n-- params: none\nSELECT * FROM t WHERE x = {bad}"
    with pytest.raises(DashboardError, match="Python-format placeholder"):
        parse_panel("p", text)
    assert python_format_placeholders("SELECT {a:String}, {b: Array(UInt32)}") == []


def test_load_panels_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "b.sql").write_text(GOOD)
    (tmp_path / "a.sql").write_text("-- panel: A\n-- unit: rows\n-- params: none\nSELECT 1")
    (tmp_path / "notes.txt").write_text("ignored")
    panels = load_panels(tmp_path)
    assert list(panels) == ["a", "b"]
    assert panels["b"].title == "Cost per tenant"
    (tmp_path / "c.sql").write_text("SELECT 1")
    with pytest.raises(DashboardError, match=r"c\.sql: header is missing"):
        load_panels(tmp_path)


# --- parameters ----------------------------------------------------------------------


def _panel() -> Panel:
    return parse_panel("cost", GOOD)


def test_parameters_are_passed_for_server_side_binding() -> None:
    ch = FakeClickHouse()
    values = {"from": 1, "to": 2, "tenant": "' OR 1=1 --"}
    result = run_panel(ch, _panel(), values)  # type: ignore[arg-type]
    assert result.rows == [(1,)]
    ((sql, params),) = ch.calls
    assert sql == GOOD  # the text is never formatted
    assert params == values


def test_unknown_parameters_are_refused() -> None:
    ch = FakeClickHouse()
    with pytest.raises(DashboardError) as info:
        run_panel(ch, _panel(), {"from": 1, "to": 2, "tenant": "", "limit": 5})  # type: ignore[arg-type]
    assert str(info.value) == (
        "panel 'cost' (Cost per tenant): unknown parameter(s) limit; "
        "it takes: from DateTime64(6), to DateTime64(6), tenant String"
    )
    assert ch.calls == []


def test_missing_parameters_are_refused() -> None:
    with pytest.raises(DashboardError) as info:
        check_values(_panel(), {"from": 1})
    assert str(info.value) == (
        "panel 'cost' (Cost per tenant): missing parameter(s) to, tenant; "
        "it takes: from DateTime64(6), to DateTime64(6), tenant String"
    )


def test_unknown_and_missing_together() -> None:
    with pytest.raises(
        DashboardError, match=r"unknown parameter\(s\) frm; missing parameter\(s\) from"
    ):
        check_values(_panel(), {"frm": 1, "to": 2, "tenant": ""})


def test_unknown_panel_name() -> None:
    with pytest.raises(DashboardError, match=r"no dashboard panel 'nope'; known: "):
        run_panel(FakeClickHouse(), "nope", {})  # type: ignore[arg-type]


def test_dashboard_error_is_a_usage_error() -> None:
    from govstream.errors import UsageError

    assert issubclass(DashboardError, UsageError)


# --- charts --------------------------------------------------------------------------


def test_every_shipped_panel_declares_its_chart_and_the_unit_its_title_names() -> None:
    """The user saw "Cost per model" drawn in turns and rates drawn as counts: every
    shipped panel plots what its title names, in that unit."""
    units = {}
    for name, panel in load_panels().items():
        assert "-- chart:" in panel.sql, f"{name}: no -- chart: line"
        title = set(re.findall(r"[a-z]+", panel.title.lower()))
        if title & {"cost", "spend"}:
            expected = {"usd_micros"}
        elif title & {"rate", "burn", "budget"}:
            expected = {"ratio"}
        elif "latency" in title:
            expected = {"ms", "us"}
        elif "age" in title:
            expected = {"seconds"}
        else:
            expected = {"count"}
        units[name] = panel.chart.unit
        assert panel.chart.unit in expected, (name, panel.title, panel.chart)
    assert units["cost_per_model"] == "usd_micros"
    assert load_panels()["cost_per_model"].chart.values == ("cost_usd_micros",)
    assert load_panels()["budget_cost_vs_day_limit"].chart.values == ("used_ratio",)


@pytest.mark.parametrize(
    ("column", "unit"),
    [
        ("cost_usd_micros", "usd_micros"),
        ("cost_per_workflow_usd_micros", "usd_micros"),
        ("block_rate", "ratio"),
        ("used_ratio", "ratio"),
        ("rejected_share", "ratio"),
        ("share", "ratio"),
        ("p95_latency_ms", "ms"),
        ("p99_evaluation_us", "us"),
        ("max_age_seconds", "seconds"),
        ("turns", "count"),
        ("status", "count"),
    ],
)
def test_a_columns_unit_comes_from_its_name(column: str, unit: str) -> None:
    assert column_unit(column) == unit


def test_charts_parse_and_refuse_mixed_units() -> None:
    chart = parse_chart("bars label=tenant_id,day values=used_usd_micros limit=day_usd_micros")
    assert chart == Chart(
        "bars", values=("used_usd_micros",), label=("tenant_id", "day"), limit="day_usd_micros"
    )
    assert parse_chart("line time=hour series=tenant_id values=cost_usd_micros").series == (
        "tenant_id"
    )
    with pytest.raises(DashboardError, match=r"mixes units \(count, usd_micros\) on one axis"):
        parse_chart("bars label=model values=turns,cost_usd_micros", "x.sql")
    with pytest.raises(DashboardError, match="mixes units"):
        parse_chart("bars label=t values=used_usd_micros limit=used_ratio")
    with pytest.raises(DashboardError, match="bars need label"):
        parse_chart("bars values=turns")
    with pytest.raises(DashboardError, match="needs time"):
        parse_chart("line values=turns")
    with pytest.raises(DashboardError, match="expected bars, line or table"):
        parse_chart("pie values=turns")
    with pytest.raises(DashboardError, match="is not one of"):
        parse_chart("bars label=a values=b colour=red")
