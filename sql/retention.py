"""Retention per table from configuration: ClickHouse TTLs set after the migrations.

`GOVSTREAM_RETENTION_DAYS` is a JSON object of table -> days, e.g.
'{"events_archive": 400, "turns": 400, "dead_letters": 30}'. Each configured
table gets `TTL toDateTime(<its time column>) + INTERVAL <days> DAY` (rows
older than that are deleted in background merges); 0 removes the table's TTL.
A table not listed keeps whatever TTL it has (`consumer_backlog` ships with
30 days).

Table and column names cannot be bound as query parameters, so they come
from the fixed map below, never from configuration text; the days are
validated integers.
"""

from __future__ import annotations

from collections.abc import Mapping

from govstream.errors import UsageError
from sql.client import ClickHouse

# table -> the time its rows age by
TIME_COLUMNS: dict[str, str] = {
    "events_archive": "occurred_at",
    "sessions": "started_at",
    "turns": "occurred_at",
    "dead_letters": "recorded_at",
    "tool_proposals": "proposed_at",
    "tool_completions": "completed_at",
    "policy_decisions": "decided_at",
    "admission_decisions": "decided_at",
    "session_transitions": "occurred_at",
    "budget_events": "occurred_at",
    "duplicates_suppressed": "occurred_at",
    "consumer_backlog": "recorded_at",
}


def check_retention(retention: Mapping[str, int]) -> dict[str, int]:
    """The configuration if every table is known and every value whole days >= 0."""
    unknown = sorted(set(retention) - set(TIME_COLUMNS))
    if unknown:
        raise UsageError(
            f"retention for unknown table(s) {', '.join(unknown)}; "
            f"tables: {', '.join(sorted(TIME_COLUMNS))}"
        )
    for table, days in retention.items():
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise UsageError(f"retention of {table} must be whole days >= 0, got {days!r}")
    return dict(retention)


def retention_statements(retention: Mapping[str, int]) -> list[str]:
    statements = []
    for table, days in sorted(check_retention(retention).items()):
        if days == 0:
            statements.append(f"ALTER TABLE {table} REMOVE TTL")
        else:
            column = TIME_COLUMNS[table]
            statements.append(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY"
            )
    return statements


def apply_retention(
    clickhouse: ClickHouse, retention: Mapping[str, int], cluster: str | None = None
) -> list[str]:
    """Set the configured TTLs (ON CLUSTER when given); return the statements run."""
    from sql.cluster import render_statement

    statements = retention_statements(retention)
    if cluster is not None:
        statements = [render_statement(s, cluster) for s in statements]
    for statement in statements:
        clickhouse.command(statement)
    return statements
