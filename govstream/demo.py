"""`govstream demo`: the whole pipeline end to end, then a summary from SQL.

Broker (started if none is configured) -> topics -> worker (child process,
owns embedded ClickHouse) -> simulated fleet -> lag zero -> summary queries
through the worker -> everything this run started is stopped again. Each run
gets its own topics, consumer group and ClickHouse directory, so the figures
are this run's alone and are checked against the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from govstream.errors import GovstreamError
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings


def say(message: str) -> None:
    print(message, flush=True)


def _query_file(name: str) -> str:
    return (Path(__file__).parent.parent / "sql" / "queries" / f"{name}.sql").read_text()


def _table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [columns, *[[str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line for line in lines)


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.2f}"


def summarize(settings: Settings, truth: dict[str, Any]) -> list[str]:
    """Print the summary; return the mismatches against the ground truth."""
    from sql.client import open_clickhouse

    ch = open_clickhouse(settings, role="client")
    mismatches: list[str] = []
    try:
        events = ch.query(_query_file("summary_events"))
        by_topic = {row[0]: row for row in events.rows}
        sessions_topic = f"{settings.topic_prefix}.sessions"
        processed = sum(row[2] for row in events.rows)
        say(f"\nEvents processed: {processed:,} distinct events in {len(by_topic)} topics")
        say(_table(events.columns, events.rows))
        # The tenant logs also hold each tenant's profile (signed in by the admin).
        expected_session_events = truth["session_events_total"] + truth["tenants"]
        got = by_topic.get(sessions_topic, (None, 0, 0))[2]
        if got != expected_session_events:
            mismatches.append(f"session events {got} != truth {expected_session_events}")

        dead = ch.query(_query_file("summary_dead_letters"))
        total_dead = sum(row[1] for row in dead.rows)
        say(f"\nDead letters: {total_dead}")
        if dead.rows:
            say(_table(dead.columns, dead.rows))
        expected_dead = sum(truth["malformed_sent"].values())
        if total_dead != expected_dead:
            mismatches.append(f"dead letters {total_dead} != truth {expected_dead}")

        cost = ch.query(_query_file("summary_cost_per_tenant"))
        say("\nCost per tenant, top 10:")
        rows = [(t, n, f"{tok:,}", _usd(c)) for t, n, tok, c in cost.rows]
        say(_table(["tenant", "turns", "tokens", "cost"], rows))
        for tenant, _, _, micros in cost.rows:
            want = truth["per_tenant"][tenant]["cost_usd_micros"]
            if micros != want:
                mismatches.append(f"cost of {tenant} {micros} != truth {want}")

        latency = ch.query(_query_file("summary_latency_by_tier"))
        say("\nLatency by tier (ms):")
        say(_table(["tier", "turns", "p95 latency", "p95 first token"], latency.rows))
    finally:
        ch.close()
    return mismatches


INCIDENT_SQL = """
SELECT session_id, kind
FROM (
    SELECT session_id, 'BudgetExceeded, suspended' AS kind, 0 AS rank, occurred_at
    FROM budget_events FINAL
    WHERE event_type = 'BudgetExceeded' AND action = 'suspend' AND session_id != ''
    UNION ALL
    SELECT session_id, event_type AS kind, 1 AS rank, occurred_at
    FROM events_archive
    WHERE event_type IN ('BudgetExceeded', 'SessionQuarantined') AND session_id != ''
)
ORDER BY rank, occurred_at, session_id
LIMIT 1
"""


def forensics(settings: Settings, bootstrap: str) -> list[str]:
    """Rebuild the governor's state and derived events and diff them with live;
    replay one incident.

    Returns mismatches (a divergence, or no incident in the fleet).
    """
    from govstream.commands.replay import decode_records, read_session_records, render
    from govstream.settings import governor_config
    from projections.timeline import replay
    from sql.client import open_clickhouse
    from streams.rebuild import rebuild

    config = governor_config(settings)
    report = asyncio.run(rebuild(settings, config, bootstrap))
    keys = ", ".join(f"{count:,} {name}" for name, count in report.keys.items())
    if report.divergences:
        return [f"rebuild diverged from live state: {report.divergences[0]}"]
    say(
        f"      rebuilt {report.records:,} log records in {report.fold_seconds:.2f}s: "
        f"{keys}; live state equals rebuilt state, byte for byte"
    )
    with open_clickhouse(settings, role="client") as ch:
        rows = ch.query(INCIDENT_SQL).rows
    if not rows:
        return ["the fleet has no quarantined or budget-exceeded session to replay"]
    session_id, kind = rows[0]
    say(f"      incident: session {session_id} ({kind}); govstream replay session {session_id}\n")
    tenant, records = read_session_records(settings, session_id)
    result = replay(decode_records(settings, records), tenant, session_id, config)
    for line in incident_excerpt(render(result, None).splitlines(), kind.split(",")[0]):
        say(f"    {line}")
    return []


def incident_excerpt(lines: list[str], event: str, before: int = 4, after: int = 8) -> list[str]:
    """The timeline's header, the rows around the first `event` row and the final state:
    the turn that crossed the budget and what the governor did on the next records."""
    state_at = next((i for i, line in enumerate(lines) if line.startswith("state of")), len(lines))
    rows = lines[:state_at]
    while rows and not rows[-1].strip():
        rows.pop()
    hit = next((i for i, line in enumerate(rows) if f"  {event}  " in line), None)
    if hit is None or len(rows) <= before + after + 3:
        return lines
    start, end = max(2, hit - before), min(len(rows), hit + after + 1)
    skipped_before, skipped_after = start - 2, len(rows) - end
    excerpt = rows[:2]
    if skipped_before:
        excerpt.append(f"... {skipped_before} earlier rows")
    excerpt += rows[start:end]
    if skipped_after:
        excerpt.append(f"... {skipped_after} later rows")
    return [*excerpt, "", *lines[state_at:]]


def run_demo(settings: Settings, *, tenants: int, sessions: int, seed: int, progress: bool) -> int:
    from events.topics import Topics
    from govstream.broker import ensure_broker, stop_broker
    from govstream.commands.dashboard import write_dashboard
    from govstream.commands.lag import wait_for_zero_lag
    from govstream.commands.simulate import run_simulation
    from govstream.simulate import FleetConfig
    from streams.admin import ensure_topics

    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    demo_dir = (settings.home / "demo").resolve()
    shutil.rmtree(demo_dir / "clickhouse", ignore_errors=True)
    settings = settings.model_copy(
        update={
            "topic_prefix": f"govstream-demo-{run_id}",
            "app_id": f"govstream-demo-{run_id}",
            "clickhouse_path": demo_dir / "clickhouse",
            "web_port": free_port(),
        }
    )
    started = time.monotonic()
    broker_started = False
    worker = None
    try:
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            say(f"[1/7] using the Kafka broker at {bootstrap}")
        else:
            say("[1/7] starting a local Apache Kafka broker ...")
            handle = ensure_broker(settings)
            bootstrap, broker_started = handle.bootstrap, handle.started
        asyncio.run(
            ensure_topics(bootstrap, Topics(settings.topic_prefix), settings.topic_partitions)
        )
        say("[2/7] starting a worker (migrations, ingest, ClickHouse sink) ...")
        worker = WorkerProcess(settings, log_path=demo_dir / f"worker-{run_id}.log")
        waited = worker.wait_ready()
        say(f"      worker ready in {waited:.1f}s at {worker.url}")

        say(f"[3/7] simulating {tenants} tenants, {sessions:,} sessions (seed {seed}) ...")
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
        config = FleetConfig(
            seed=seed, tenants=tenants, sessions=sessions, start=start, malformed_rate=0.001
        )
        truth = asyncio.run(
            run_simulation(
                settings, config, truth_path=demo_dir / f"truth-{run_id}.json", progress=progress
            )
        )
        say("[4/7] waiting for the worker to catch up (lag 0) ...")
        waited = asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=300))
        say(f"      caught up {waited:.1f}s after the last send")
        say("[5/7] summary from ClickHouse SQL")
        mismatches = summarize(settings, truth)
        say("[6/7] dashboards: waiting for the governor, then every panel ...")
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=300, which="all"))
        page, failed = write_dashboard(settings, demo_dir / "dashboard")
        say(f"      dashboard: {page}")
        if failed:
            mismatches.append(f"{failed} dashboard panels failed (see {page})")
        say("[7/7] forensics: the governor rebuilt from the log, and an incident replayed")
        mismatches += forensics(settings, bootstrap)
    finally:
        if worker is not None:
            worker.stop()
        if broker_started:
            stop_broker(settings)
            say("stopped the local broker this demo started")
    elapsed = time.monotonic() - started
    if mismatches:
        for line in mismatches:
            print(f"govstream: mismatch: {line}", file=sys.stderr)
        raise GovstreamError(f"demo figures differ from the ground truth ({len(mismatches)})")
    say(f"\nAll figures match the simulator's ground truth. Demo took {elapsed:.0f}s.")
    return 0
