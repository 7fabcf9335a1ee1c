"""`govstream sql "SELECT ..."`: run one statement against ClickHouse and print the rows.

Works whether or not a worker owns the embedded engine (through the owner, or
directly). Values are bound server side: ``--param tenant=acme`` fills
``{tenant:String}``; ClickHouse parses the text by the placeholder's type.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from govstream.errors import UsageError
from govstream.settings import load


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sql",
        help="run one SQL statement against ClickHouse",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("query", help='the SQL text, or "-" to read it from stdin')
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per row (JSON lines)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind {NAME:Type} in the query server side (repeatable)",
    )
    parser.set_defaults(func=_run)


_ROWS_KEYWORDS = {"select", "with", "show", "describe", "desc", "exists", "explain", "check"}


def returns_rows(query: str) -> bool:
    """Whether the statement produces a result set (by its first keyword)."""
    text = re.sub(r"(?s)^(\s|--[^\n]*\n?|/\*.*?\*/)*", "", query)
    if text.startswith("("):
        return True
    match = re.match(r"[A-Za-z]+", text)
    return bool(match) and match.group(0).lower() in _ROWS_KEYWORDS


def parse_params(items: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {item!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def _cell(value: Any) -> str:
    from sql.client import to_json_value

    if value is None:
        return "NULL"
    if isinstance(value, str):
        text = value
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(to_json_value(value), ensure_ascii=False)
    elif isinstance(value, bytes):
        text = value.decode("latin-1")
    else:
        text = str(value)  # numbers, Decimal, date, UUID, IP addresses
    # One table row per result row: make control characters visible.
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def print_table(columns: list[str], rows: list[tuple[Any, ...]], out: TextIO) -> None:
    """An aligned plain-text table (pipes and narrow terminals stay readable)."""
    cells = [[_cell(v) for v in row] for row in rows]
    if columns:
        widths = [len(c) for c in columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        # Right-align a column whose values are all numbers (NULLs allowed).
        right = [
            any(_numeric(r[i]) for r in rows) and all(_numeric(r[i]) or r[i] is None for r in rows)
            for i in range(len(columns))
        ]

        def line(values: Sequence[str]) -> str:
            parts = [
                v.rjust(w) if r else v.ljust(w)
                for v, w, r in zip(values, widths, right, strict=True)
            ]
            return "  ".join(parts).rstrip()

        out.write(line(columns) + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for row in cells:
            out.write(line(row) + "\n")
    out.write(f"{len(rows)} row{'' if len(rows) == 1 else 's'}\n")


def print_json_lines(columns: list[str], rows: list[tuple[Any, ...]], out: TextIO) -> None:
    from sql.client import to_json_value

    for row in rows:
        record = {c: to_json_value(v) for c, v in zip(columns, row, strict=True)}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _run(args: argparse.Namespace) -> int:
    query = sys.stdin.read() if args.query == "-" else args.query
    if not query.strip().rstrip(";").strip():
        raise UsageError("empty query")
    params = parse_params(args.param)

    from sql.client import open_clickhouse

    with open_clickhouse(load(), role="client") as ch:
        if not returns_rows(query):
            # DDL/INSERT/SYSTEM...: no result set (chDB would report a stats row instead).
            ch.command(query, params or None)
            if not args.json:  # JSON consumers get no rows, and no non-JSON text either
                print("OK")
            return 0
        result = ch.query(query, params or None)
    if args.json:
        print_json_lines(result.columns, result.rows, sys.stdout)
    else:
        print_table(result.columns, result.rows, sys.stdout)
    return 0
