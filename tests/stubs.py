"""Stand-ins for unit tests of code that only queries and commands ClickHouse.

Integration tests use real ClickHouse; these exist so pure logic (the
migration runner, the owner's HTTP handler) is tested without an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sql.client import ClickHouse


class QueryOnlyClickHouse(ClickHouse):
    """A ClickHouse whose inserts must never be called; subclasses answer queries."""

    kind = "stub"
    target = "stub"

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        raise AssertionError("not used")

    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        pass
