"""`make bench` (second part): every dashboard query on 10,000,000 turn rows.

Fills a fresh embedded ClickHouse with synthetic rows generated inside
ClickHouse (`INSERT ... SELECT FROM numbers(N)`): 10M turns, 500k sessions and
proportional decisions, tool calls, transitions, budget events and
duplicates over 30 days and 100 tenants. Every column gets a value from its
name and type (see `_value`), so the generator follows the migrations. Then
it merges the parts (as background merges would), runs each panel over the
whole month for all tenants and for one tenant, and writes the timings to a
section of BENCHMARKS.md (between the dashboards markers).

Target (issue 4): p95 < 200 ms per query.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.admission import nearest_rank
from bench.report import write_section
from govstream.settings import Settings
from sql.client import ClickHouse, open_clickhouse
from sql.dashboards import load_panels, run_panel
from sql.migrate import apply_migrations

START = datetime(2026, 10, 24, tzinfo=UTC)
END = datetime(2026, 11, 23, tzinfo=UTC)
MONTH_SECONDS = 30 * 86_400
BEGIN, FINISH = "<!-- dashboards -->", "<!-- /dashboards -->"


def _pick(values: list[str], modulo_of: str = "number") -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"[{quoted}][1 + ({modulo_of}) % {len(values)}]"


# Columns named like this get these values (any table); everything else by type.
NAMED = {
    "tenant_id": "concat('t-', toString(number % 100))",
    "session_id": "concat('s-', toString(intDiv(number, 20) % 500000))",
    "workflow_id": "concat('w-', toString(intDiv(number, 200) % 5000))",
    "tier": _pick(["A", "B", "C"]),
    "model": _pick(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "llama-3.1-70b"]),
    "tool": _pick(["http_request", "web_search", "file_upload", "email_send", "shell"]),
    "decision": _pick(["allow", "allow", "allow", "deny", "require_approval"]),
    "reason_code": _pick(
        ["ALLOWED", "ALLOWED", "EGRESS_NOT_ALLOWED", "TOOL_NOT_PERMITTED", "APPROVAL_REQUIRED"]
    ),
    "status": _pick(["succeeded", "succeeded", "succeeded", "failed"]),
    "destination_host": _pick(["api.good.com", "evil.example", "files.partner.example"]),
    "scope": _pick(["session", "workflow", "tenant_day", "tenant_month"]),
    "event_id": "concat('e-', toString(number))",
    "idempotency_key": "concat('k-', toString(number))",
    "operation_key": "concat('op-', toString(number))",
    "attempt": "1",
    "cost_usd_micros": "100 + number % 5000",
    "latency_ms": "200 + (number * 7919) % 20000",
    "first_token_ms": "50 + (number * 104729) % 3000",
}
# Per table, where a name means something else.
OVERRIDES = {
    "turns": {"outcome": _pick(["ok"] * 8 + ["error", "timeout"])},
    "session_transitions": {
        "outcome": _pick(["applied"] * 19 + ["rejected"]),
        "event_type": _pick(
            [
                "SessionStarted",
                "SessionClosed",
                "SessionSuspended",
                "SessionResumed",
                "CheckpointCreated",
            ]
        ),
    },
    "budget_events": {"event_type": _pick(["BudgetWarning", "BudgetWarning", "BudgetExceeded"])},
}
ROWS = {
    "turns": 10_000_000,
    "sessions": 500_000,
    "policy_decisions": 1_000_000,
    "tool_proposals": 1_000_000,
    "tool_completions": 900_000,
    "session_transitions": 2_000_000,
    "admission_decisions": 500_000,
    "budget_events": 100_000,
    "duplicates_suppressed": 100_000,
    "consumer_backlog": 100_000,
}


def _value(table: str, column: str, kind: str) -> str:
    named = OVERRIDES.get(table, {}).get(column) or NAMED.get(column)
    inner = kind.removeprefix("Nullable(").removeprefix("LowCardinality(").rstrip(")")
    if named is not None:
        return f"CAST({named} AS {kind})"
    if inner.startswith("DateTime64"):
        when = f"toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC')"
        return f"CAST({when} + toIntervalSecond((number * 2654435761) % {MONTH_SECONDS}) AS {kind})"
    if inner.startswith(("UInt", "Int")):
        return f"CAST(number % 1000 AS {kind})"
    if inner.startswith("Float"):
        return f"CAST((number % 1000) / 10.0 AS {kind})"
    if inner.startswith("Bool"):
        return f"CAST(number % 2 AS {kind})"
    if kind.startswith("Array"):
        return f"CAST([] AS {kind})"
    return f"CAST('x' AS {kind})"


def fill(ch: ClickHouse) -> dict[str, float]:
    seconds = {}
    for table, rows in ROWS.items():
        columns = [
            (name, kind)
            for name, kind, default_kind in ch.query(
                "SELECT name, type, default_kind FROM system.columns"
                " WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
                {"t": table},
            ).rows
            if default_kind not in ("MATERIALIZED", "ALIAS")
        ]
        names = ", ".join(name for name, _ in columns)
        values = ", ".join(_value(table, name, kind) for name, kind in columns)
        started = time.perf_counter()
        ch.command(f"INSERT INTO {table} ({names}) SELECT {values} FROM numbers({rows})")
        ch.command(f"OPTIMIZE TABLE {table} FINAL")  # as background merges would, eventually
        seconds[table] = time.perf_counter() - started
    return seconds


def time_panels(ch: ClickHouse, runs: int) -> list[tuple[str, str, float, float, int]]:
    """(panel, scope, p50 ms, p95 ms, rows) per panel, all tenants and one tenant."""
    results = []
    for panel in load_panels().values():
        for scope, tenant in (("all tenants", ""), ("one tenant", "t-7")):
            if scope == "one tenant" and "tenant" not in panel.param_names:
                continue
            pool = {
                "from": START,
                "to": END,
                "tenant": tenant,
                "top": 10,
                "workflow": "",
                "model": "",
            }
            values = {name: pool[name] for name in panel.param_names}
            timings = []
            rows = 0
            for _ in range(runs):
                started = time.perf_counter()
                rows = len(run_panel(ch, panel, values).rows)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            p95 = nearest_rank(timings, 0.95)
            results.append((panel.title, scope, statistics.median(timings), p95, rows))
    return results


def report(fill_s: dict[str, float], timings: list[tuple[str, str, float, float, int]]) -> str:
    worst = max(p95 for _, _, _, p95, _ in timings)
    over = [(t, s) for t, s, _, p95, _ in timings if p95 >= 200]
    rows = "\n".join(
        f"| {title} | {scope} | {p50:.0f} | {p95:.0f} | {n:,} |"
        for title, scope, p50, p95, n in timings
    )
    loaded = ", ".join(f"{t} {ROWS[t]:,} in {s:.1f}s" for t, s in fill_s.items())
    verdict = (
        "every panel meets it"
        if not over
        else f"{len(over)} of {len(timings)} runs miss it: "
        + "; ".join(f"{t} ({s})" for t, s in over)
    )
    return f"""{BEGIN}
## Dashboard queries on 10,000,000 turns ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

Embedded ClickHouse (chDB), synthetic rows generated inside ClickHouse over
30 days and 100 tenants, parts merged (OPTIMIZE ... FINAL) before timing;
each query run 10 times over the whole month, through the same loader and
server-side parameters as the dashboards. Loaded: {loaded}.

| panel | tenants | p50 ms | p95 ms | rows |
|---|---|---:|---:|---:|
{rows}

Target: p95 < 200 ms per query: {verdict}. Slowest p95: {worst:.0f} ms.
{FINISH}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="govstream-dashboards-bench-") as home:
        settings = Settings(home=Path(home), clickhouse_database="bench")
        with open_clickhouse(settings, role="owner") as ch:
            apply_migrations(ch)
            print("filling 10M turns and the other tables ...", flush=True)
            fill_s = fill(ch)
            print(f"  filled in {sum(fill_s.values()):.1f}s; timing panels ...", flush=True)
            timings = time_panels(ch, args.runs)
    text = report(fill_s, timings)
    print(text)
    write_section(text, BEGIN, FINISH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
