"""Dashboard panels: one query per file in sql/dashboards/, run with bound parameters.

Each file starts with a header of ``--`` comment lines naming its panel, the
unit of its figures and its parameters::

    -- panel: Cost per tenant per hour
    -- unit: USD micro-dollars (integer)
    -- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all)

and a ``chart`` line declaring what is plotted (a test checks that the plotted
values are these columns of the result)::

    -- chart: bars label=model values=cost_usd_micros
    -- chart: bars label=tenant_id,day values=used_usd_micros limit=day_limit_usd_micros
    -- chart: line time=hour series=tenant_id values=cost_usd_micros
    -- chart: table

A column's unit comes from its name (:func:`column_unit`: ``*_usd_micros`` is
money, ``*_ratio``, ``*_rate`` and ``*share`` are fractions, ``*_ms``,
``*_us``, ``*_seconds`` durations, the rest counts); every plotted column of a
chart, and its limit, have one unit: one unit per axis.

Free text may follow in further comment lines. ``params`` is a comma-separated
list of ``name Type`` with an optional note in parentheses after the type
(``tenant String ('' = all)``); ``-- params: none`` declares no parameter.
The declared parameters must be exactly the ``{name:Type}`` placeholders of
the query, with the same types: :func:`load_panels` refuses a file whose
header and query disagree, or that holds a Python-format placeholder
(``{name}``, ``{}``, ``%s``, ``%(name)s``).

:func:`run_panel` passes the values to :meth:`sql.client.ClickHouse.query`,
which binds them server side (ClickHouse query parameters); a value never
becomes SQL text. Every declared parameter is required and no other one is
accepted: a panel's optional filter takes its "all" value explicitly (the
dashboards' ``tenant`` is ``''`` for all tenants).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from govstream.errors import UsageError
from sql.client import ClickHouse, QueryResult

HEADER_KEYS = ("panel", "unit", "params", "chart")
REQUIRED_KEYS = ("panel", "unit", "params")  # no chart line: the panel is a table
_HEADER_LINE_RE = re.compile(r"^--\s*([A-Za-z_]+)\s*:\s*(.*?)\s*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# {name:Type}: the grammar clickhouse-connect and ClickHouse use for server-side parameters.
_PLACEHOLDER_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^}]+?)\s*\}")
# What Python formatting (str.format, %) would substitute on the client.
PYTHON_FORMAT_RE = re.compile(
    r"\{\s*[A-Za-z0-9_]*\s*(![rsa])?\s*\}|%\([A-Za-z0-9_]+\)[a-z]|%[sdfr]"
)


class DashboardError(UsageError):
    """A dashboard file is malformed, or a panel was run with the wrong parameters."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # the ClickHouse type, e.g. "DateTime64(6)"
    note: str = ""  # the parenthesised text after the type, without its parentheses


Unit = Literal["usd_micros", "ratio", "ms", "us", "seconds", "count"]
# Name suffix -> unit, the first match wins; anything else counts things.
_UNIT_SUFFIXES: tuple[tuple[str, Unit], ...] = (
    ("_usd_micros", "usd_micros"),
    ("_ratio", "ratio"),
    ("_rate", "ratio"),
    ("share", "ratio"),
    ("_ms", "ms"),
    ("_us", "us"),
    ("_seconds", "seconds"),
)


def column_unit(column: str) -> Unit:
    """The unit of a result column, by its name (one naming rule for every panel)."""
    return next((unit for suffix, unit in _UNIT_SUFFIXES if column.endswith(suffix)), "count")


Shape = Literal["bars", "line", "table"]


@dataclass(frozen=True)
class Chart:
    """What a panel plots: `values` (columns of one unit) per row (bars: labelled by the
    `label` columns) or over `time` (line: one line per `series` value); `limit` is a
    column drawn as each bar's budget line."""

    shape: Shape
    values: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    time: str | None = None
    series: str | None = None
    limit: str | None = None

    @property
    def unit(self) -> Unit:
        return column_unit(self.values[0]) if self.values else "count"


TABLE = Chart("table")  # no chart: the result as a table
_CHART_KEYS = {"bars": {"label", "values", "limit"}, "line": {"time", "series", "values"}}


def parse_chart(text: str, source: str = "<chart>") -> Chart:
    """``shape key=value ...`` (see the module doc) -> Chart, or DashboardError."""
    shape, *pairs = text.split()
    if shape == "table" and not pairs:
        return TABLE
    if shape not in _CHART_KEYS:
        raise DashboardError(f"{source}: chart {text!r}: expected bars, line or table")
    fields: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in _CHART_KEYS[shape] or not value or key in fields:
            raise DashboardError(
                f"{source}: chart {text!r}: {pair!r} is not one of "
                f"{', '.join(sorted(_CHART_KEYS[shape]))} (each once, key=value)"
            )
        fields[key] = value
    values = tuple(fields["values"].split(",")) if "values" in fields else ()
    if not values:
        raise DashboardError(f"{source}: chart {text!r}: values=... names the plotted columns")
    if shape == "bars" and "label" not in fields:
        raise DashboardError(f"{source}: chart {text!r}: bars need label=...")
    if shape == "line" and "time" not in fields:
        raise DashboardError(f"{source}: chart {text!r}: a line chart needs time=...")
    plotted = [*values, *([fields["limit"]] if "limit" in fields else [])]
    units = sorted({column_unit(c) for c in plotted})
    if len(units) > 1:
        raise DashboardError(
            f"{source}: chart {text!r} mixes units ({', '.join(units)}) on one axis: "
            "plot columns of one unit"
        )
    return Chart(
        shape,  # type: ignore[arg-type]
        values=values,
        label=tuple(fields["label"].split(",")) if "label" in fields else (),
        time=fields.get("time"),
        series=fields.get("series"),
        limit=fields.get("limit"),
    )


@dataclass(frozen=True)
class Panel:
    name: str  # the file's stem
    title: str  # the header's "panel"
    unit: str
    params: tuple[Param, ...]
    sql: str  # the whole file, header included (it is SQL comments)
    chart: Chart = TABLE

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


def _norm_type(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _split_top_level(text: str, source: str) -> list[str]:
    """Split at commas outside parentheses and quotes (types like Map(K, V) hold commas)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DashboardError(f"{source}: unbalanced ')' in params: {text!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if depth or quote:
        raise DashboardError(f"{source}: unbalanced parentheses or quotes in params: {text!r}")
    parts.append("".join(current).strip())
    return parts


def _balanced_end(text: str, start: int) -> int:
    """Index just past the ')' closing the '(' at `start` (quotes respected)."""
    depth = 0
    quote: str | None = None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def parse_param(item: str, source: str = "<params>") -> Param:
    """``name Type`` or ``name Type (note)``; the type may carry arguments: ``DateTime64(6)``."""
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s+([A-Za-z_][A-Za-z0-9_]*)", item)
    if not match:
        raise DashboardError(f"{source}: parameter {item!r} is not 'name Type [(note)]'")
    name, end = match.group(1), match.end()
    if end < len(item) and item[end] == "(":  # type arguments, attached to the type name
        close = _balanced_end(item, end)
        if close < 0:
            raise DashboardError(f"{source}: unbalanced parentheses in parameter {item!r}")
        end = close
    type_ = item[match.start(2) : end]
    rest = item[end:].strip()
    note = ""
    if rest:
        if not (rest.startswith("(") and _balanced_end(rest, 0) == len(rest)):
            raise DashboardError(
                f"{source}: parameter {name!r}: expected a note in parentheses after the type "
                f"{type_}, got {rest!r}"
            )
        note = rest[1:-1].strip()
    return Param(name, type_, note)


def parse_header(text: str, source: str = "<query>") -> tuple[str, str, tuple[Param, ...], Chart]:
    """(panel, unit, params, chart) from the leading ``--`` comment lines of `text`."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break  # the header is the leading comment block
        match = _HEADER_LINE_RE.match(stripped)
        if match and match.group(1).lower() in HEADER_KEYS:
            key = match.group(1).lower()
            if key in found:
                raise DashboardError(f"{source}: header line '{key}:' appears twice")
            found[key] = match.group(2)
    missing = [key for key in REQUIRED_KEYS if not found.get(key)]
    if missing:
        raise DashboardError(
            f"{source}: header is missing {', '.join(f'-- {k}: ...' for k in missing)} "
            "(every dashboard file names its panel, unit and params)"
        )
    params: list[Param] = []
    if found["params"].strip().lower() != "none":
        for item in _split_top_level(found["params"], source):
            params.append(parse_param(item, source))
    names = [p.name for p in params]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DashboardError(f"{source}: parameter(s) declared twice: {', '.join(duplicates)}")
    chart = parse_chart(found["chart"], source) if "chart" in found else TABLE
    return found["panel"], found["unit"], tuple(params), chart


def placeholders(sql: str) -> dict[str, str]:
    """{name: Type} of the query's server-side placeholders (whitespace removed from types)."""
    out: dict[str, str] = {}
    for name, type_ in _PLACEHOLDER_RE.findall(sql):
        previous = out.setdefault(name, _norm_type(type_))
        if previous != _norm_type(type_):
            raise DashboardError(f"placeholder {name!r} is used as {previous} and as {type_}")
    return out


def python_format_placeholders(sql: str) -> list[str]:
    """Python-format placeholders in `sql` (there must be none)."""
    return [m.group(0) for m in PYTHON_FORMAT_RE.finditer(sql)]


def parse_panel(name: str, text: str, source: str | None = None) -> Panel:
    source = source or name
    title, unit, params, chart = parse_header(text, source)
    bad = python_format_placeholders(text)
    if bad:
        raise DashboardError(
            f"{source}: Python-format placeholder(s) {', '.join(map(repr, bad))}; "
            "use {name:Type} server-side parameters"
        )
    try:
        used = placeholders(text)
    except DashboardError as exc:
        raise DashboardError(f"{source}: {exc}") from None
    declared = {p.name: _norm_type(p.type) for p in params}
    if used != declared:
        problems = []
        for n in sorted(declared.keys() - used.keys()):
            problems.append(f"{n} is declared but not used")
        for n in sorted(used.keys() - declared.keys()):
            problems.append(f"{{{n}:{used[n]}}} is used but not declared")
        for n in sorted(declared.keys() & used.keys()):
            if declared[n] != used[n]:
                problems.append(f"{n} is declared {declared[n]} but used as {used[n]}")
        raise DashboardError(f"{source}: header params and query disagree: {'; '.join(problems)}")
    return Panel(name=name, title=title, unit=unit, params=params, sql=text, chart=chart)


@functools.cache
def load_query(name: str) -> str:
    """The text of sql/queries/NAME.sql (the CLI's, the demo's and the console's queries),
    read once per process."""
    return files("sql").joinpath("queries", f"{name}.sql").read_text(encoding="utf-8")


@functools.cache
def shipped_panels() -> tuple[Panel, ...]:
    """The packaged panels, parsed once per process (the console asks on every page)."""
    return tuple(load_panels().values())


def _dashboards_dir() -> Traversable:
    return files("sql").joinpath("dashboards")


def load_panels(directory: Path | Traversable | None = None) -> dict[str, Panel]:
    """Every ``*.sql`` file of `directory` (default: sql/dashboards/) by name, sorted."""
    directory = directory if directory is not None else _dashboards_dir()
    panels: dict[str, Panel] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            panels[name] = parse_panel(name, entry.read_text(encoding="utf-8"), entry.name)
    return panels


def load_panel(name: str, directory: Path | Traversable | None = None) -> Panel:
    panels = load_panels(directory)
    if name not in panels:
        raise DashboardError(f"no dashboard panel {name!r}; known: {', '.join(panels)}")
    return panels[name]


def check_values(panel: Panel, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """`parameters` if they are exactly the panel's declared ones, else DashboardError."""
    if not isinstance(parameters, Mapping):
        raise DashboardError("panel parameters must be a mapping of name -> value")
    declared = panel.param_names
    unknown = sorted(str(n) for n in parameters if n not in declared)
    missing = [n for n in declared if n not in parameters]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown parameter(s) {', '.join(unknown)}")
        if missing:
            parts.append(f"missing parameter(s) {', '.join(missing)}")
        expected = ", ".join(f"{p.name} {p.type}" for p in panel.params) or "none"
        raise DashboardError(
            f"panel {panel.name!r} ({panel.title}): {'; '.join(parts)}; it takes: {expected}"
        )
    return dict(parameters)


def run_panel(ch: ClickHouse, panel: Panel | str, parameters: Mapping[str, Any]) -> QueryResult:
    """Run one panel with its parameters bound server side."""
    if isinstance(panel, str):
        panel = load_panel(panel)
    values = check_values(panel, parameters)
    return ch.query(panel.sql, values or None)
