"""Read-only SQL for the embedded engine's owner proxy, judged by ClickHouse's own parser.

The owner (the worker holding embedded ClickHouse) runs SQL for the CLI on
the same machine. chDB runs inside the worker, so a table function reads the
worker's files (`file('/etc/passwd')`) or makes requests from it (`url`,
`remote`, `s3`, ...), and `INTO OUTFILE` writes where the worker may. A
statement is served only when:

- ClickHouse's parser reads it as exactly one statement
  (`formatQuerySingleLine`, which refuses multi-statements), and that
  statement is what runs;
- it is a SELECT (with its CTEs, unions, intersects), DESCRIBE, SHOW or
  EXISTS, with no INTO OUTFILE;
- every table function in it (a Function directly under a TableExpression in
  `EXPLAIN AST`) is one that computes rows: numbers, values, view, ...;
- and it runs with `readonly = 1`, which ClickHouse enforces on its own (no
  writes, no settings changes, no table functions that touch files or the
  network) and which the statement cannot lift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from govstream.errors import GovstreamError, UsageError

if TYPE_CHECKING:
    from sql.client import ClickHouse

READ_STATEMENTS = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "DescribeQuery",
        "ShowTables",
        "ExistsTableQuery",
        "ShowCreateTableQuery",
    }
)
ROW_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "values", "view", "generateSeries", "generate_series", "zeros"}
)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FUNCTION = re.compile(r"^Function (\S+)")


class RefusedQuery(UsageError):
    """A statement the owner proxy does not run (with why, in one line)."""


def _table_functions(ast: list[str]) -> list[str]:
    """Names of the functions that stand directly under a TableExpression."""
    names = []
    stack: list[tuple[int, str]] = []  # (depth, node text) of the current branch
    for line in ast:
        depth = len(line) - len(line.lstrip(" "))
        node = line.strip()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        match = _FUNCTION.match(node)
        if match and stack and stack[-1][1].startswith("TableExpression"):
            names.append(match.group(1))
        stack.append((depth, node))
    return names


def read_only_statement(
    ch: ClickHouse, sql: str, parameters: Mapping[str, Any] | None = None
) -> str:
    """The one statement ClickHouse parses `sql` as, if it only reads; else RefusedQuery."""
    try:
        formatted = str(
            ch.query("SELECT formatQuerySingleLine({q:String})", {"q": sql}, readonly=True).scalar()
        )
    except GovstreamError as exc:
        raise RefusedQuery(f"not one parsable statement: {exc}") from None
    if _OUTFILE.search(formatted):
        raise RefusedQuery("INTO OUTFILE is not served by the ClickHouse owner")
    explained = ch.query(f"EXPLAIN AST {formatted}", parameters, readonly=True)
    ast = [str(row[0]) for row in explained.rows]
    kind = ast[0].split(" ", 1)[0] if ast else ""
    if kind not in READ_STATEMENTS:
        raise RefusedQuery(
            f"only SELECT, DESCRIBE, SHOW and EXISTS run through the ClickHouse owner, not {kind}"
        )
    for name in _table_functions(ast):
        if name not in ROW_TABLE_FUNCTIONS:
            raise RefusedQuery(
                f"table function {name}() is not served by the ClickHouse owner "
                "(it can reach files or the network)"
            )
    return formatted
