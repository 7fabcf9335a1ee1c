"""`make bench` (third part): forensic replay and full rebuild on a 1,000,000-event log.

Not a test: prints figures and writes them to a section of BENCHMARKS.md
(between the replay markers) with the machine and the date.

1. A simulated fleet of at least 1,000,000 events goes to a fresh topic
   prefix; a sink-only worker archives it into embedded ClickHouse (the
   archive is what replay looks positions up in).
2. Replay of one session: the archive lookup, reading from Kafka the records
   of the session's tenant up to the session's last one (the governor's fold
   is per tenant: budgets and profiles are the tenant's), decoding, folding
   the timeline and the state with the governor's fold, rendering the table,
   in-process (the same functions `govstream replay session` calls) and as
   the CLI command (a new Python process, imports included).
   Target (issue 5): < 2 s.
3. Full rebuild: the governor's fold over the whole tenant log from offset
   zero (`streams.rebuild.fold_log`, what `govstream replay rebuild` runs
   before it diffs), records read per second. Target: >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report import write_section
from bench.run import emit, machine
from govstream.broker import ensure_broker, stop_broker
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.replay import decode_records, read_session_records, render
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings, as_environment, governor_config, load
from projections.timeline import replay
from sql.client import open_clickhouse
from streams.rebuild import fold_log

ROOT = Path(__file__).resolve().parents[1]
BEGIN, FINISH = "<!-- replay -->", "<!-- /replay -->"
RUNS = 5


def _pick_sessions(settings: object) -> list[tuple[str, int]]:
    """The longest session and a typical one (median length), by archived records."""
    with open_clickhouse(settings, role="client") as ch:  # type: ignore[arg-type]
        rows = ch.query(
            "SELECT session_id, count() AS n FROM events_archive "
            "WHERE session_id != '' GROUP BY session_id ORDER BY n DESC, session_id"
        ).rows
    longest = rows[0]
    typical = rows[len(rows) // 2]
    return [(str(longest[0]), int(longest[1])), (str(typical[0]), int(typical[1]))]


def _time_in_process(settings: Settings, session_id: str) -> tuple[float, float, int, int]:
    """(median s, worst s, timeline rows, tenant-log records folded) of a replay."""
    times = []
    rows = read = 0
    config = governor_config(settings)
    for _ in range(RUNS):
        started = time.perf_counter()
        tenant, records = read_session_records(settings, session_id)
        located = decode_records(settings, records)
        result = replay(located, tenant, session_id, config)
        text = render(result, None)
        times.append(time.perf_counter() - started)
        rows, read = len(result.rows), len(records)
        assert session_id in text or rows > 0
    return statistics.median(times), max(times), rows, read


def _time_cli(settings: object, session_id: str) -> float:
    env = {**os.environ, **as_environment(settings)}  # type: ignore[arg-type]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "govstream.cli", "replay", "session", session_id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"replay failed: {done.stderr.strip()}")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=77_000, help="> 1,000,000 records")
    args = parser.parse_args()

    base = load()
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    bench_dir = (base.home / "bench").resolve()
    shutil.rmtree(bench_dir / "clickhouse-replay", ignore_errors=True)
    started_broker = False
    if base.kafka_bootstrap is None:
        handle = ensure_broker(base)
        started_broker, bootstrap = handle.started, handle.bootstrap
    else:
        bootstrap = base.kafka_bootstrap
    settings = base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "topic_prefix": f"bench-replay-{run_id}",
            "app_id": f"bench-replay-{run_id}",
            "clickhouse_path": bench_dir / "clickhouse-replay",
            "web_port": free_port(),
            "worker_agents": "sink",
            "backlog_interval_seconds": 0,
        }
    )
    try:
        print(f"replay: emitting a fleet of {args.sessions:,} sessions ...", flush=True)
        n, emit_s, _ = asyncio.run(emit(settings, args.sessions))
        print(f"  {n:,} records in {emit_s:.1f}s", flush=True)
        worker = WorkerProcess(settings, log_path=bench_dir / f"replay-worker-{run_id}.log")
        try:
            worker.wait_ready()
            asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=1800, which="sink"))
            picked = _pick_sessions(settings)
            replays = []
            for session_id, records in picked:
                median_s, worst_s, rows, read = _time_in_process(settings, session_id)
                cli_s = _time_cli(settings, session_id)
                replays.append((session_id, records, read, rows, median_s, worst_s, cli_s))
                print(
                    f"  replay {session_id} ({records} records, {read:,} of its tenant "
                    "folded): in-process median "
                    f"{median_s * 1000:.0f} ms (worst {worst_s * 1000:.0f} ms), "
                    f"CLI {cli_s:.2f} s",
                    flush=True,
                )
        finally:
            worker.stop()
        print("rebuild: folding the whole log from offset zero, one process ...", flush=True)
        config = governor_config(settings)
        single, single_s = asyncio.run(fold_log(settings, config, bootstrap, processes=1))
        single_rate = single.records / single_s
        print(f"  {single.records:,} records in {single_s:.2f}s = {single_rate:,.0f}/s")
        cores = os.cpu_count() or 1
        print(f"rebuild: the same with one process per core ({cores}) ...", flush=True)
        fold, fold_s = asyncio.run(fold_log(settings, config, bootstrap))
        rate = fold.records / fold_s
        assert fold.state == single.state, "the partitioned fold differs"
        assert fold.derived == single.derived, "the partitioned fold derives differently"
        derived = sum(len(events) for events in fold.derived.values())
        print(
            f"  {fold.records:,} records ({fold.folded:,} folded, {len(fold.state):,} "
            f"state keys, {derived:,} derived events) in {fold_s:.2f}s = {rate:,.0f} records/s",
            flush=True,
        )
    finally:
        if started_broker:
            stop_broker(base)

    lines = [
        "## Replay and rebuild (issue 5)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; Apache Kafka "
        f"{settings.kafka_version} local broker, {settings.topic_partitions} partitions, "
        f"embedded ClickHouse. Log: {n:,} producer records ({args.sessions:,} sessions), "
        "archived by a sink-only worker.",
        "",
        "Replay of one session (`govstream replay session ID`): archive lookup, "
        "reading from Kafka the records of the session's tenant up to its last one (the "
        "governor's fold is per tenant), decoding, the governor's fold, timeline and "
        f"state, rendering. In-process median/worst of {RUNS}; CLI = a new process, "
        "median of 3. Target < 2 s.",
        "",
        "| session | its records | tenant records folded | timeline rows | in-process median "
        "| worst | CLI (new process) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for session_id, records, read, rows, median_s, worst_s, cli_s in replays:
        lines.append(
            f"| {session_id} | {records} | {read:,} | {rows} | {median_s * 1000:.0f} ms "
            f"| {worst_s * 1000:.0f} ms | {cli_s:.2f} s |"
        )
    lines += [
        "",
        "Full rebuild (the governor's fold from offset zero over the tenant log, every "
        "state key and derived event, as `govstream replay rebuild` computes before it "
        f"diffs): **{rate:,.0f} records/s** with one process per core ({cores}; "
        f"{fold.records:,} records, {fold.folded:,} folded, {len(fold.state):,} state keys, "
        f"{derived:,} derived events, {fold_s:.2f} s wall, process start-up included); "
        f"{single_rate:,.0f} records/s in one process. Both folds give the same state and "
        "derived events byte for byte. Target >= 50,000 events/s.",
    ]
    text = "\n".join(lines)
    write_section(f"{BEGIN}\n{text}\n{FINISH}", BEGIN, FINISH)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
