"""`govstream demo`: the whole pipeline end to end, then a summary from SQL.

Broker (started if none is configured) -> topics -> worker (child process,
owns embedded ClickHouse) -> simulated fleet -> lag zero -> summary queries
through the worker -> everything this run started is stopped again. Each run
gets its own topics, consumer group and ClickHouse directory, so the figures
are this run's alone and are checked against the simulator's ground truth.

While the worker catches up the demo prints records left, rate and ETA
(`CatchUp`, `ProgressLine`). At the end it prints commands that explore the
run afterwards (`follow_up`): they name the run's settings and start the
broker again when the demo stopped the one it started, because the records
a replay reads stay in that broker's log.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shlex
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from govstream.errors import GovstreamError
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings


def say(message: str) -> None:
    print(message, flush=True)


# --- catching up: records left, rate, ETA --------------------------------------------


def _duration(seconds: float) -> str:
    """A wait, rounded up: "ETA 3 s" for 2.5 s, so it is not promised too soon."""
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class CatchUp:
    """Records left, consumption rate and ETA from consumer-group readings; no clock
    of its own (the caller passes the time of each reading).

    A reading is (lag, committed): records left, and the sum of the committed
    offsets. The rate is committed records per second and the ETA is records
    left / rate, the arithmetic the line shows. Not the lag's own shrink rate:
    the governor appends derived events the sink reads too, and while it does
    the lag barely moves (a measured ETA of minutes, then done in seconds);
    those arrivals end once the governor has caught up. When the lag does not
    shrink at all, the ETA is unknown. Rates are measured over the readings of
    the last `window` seconds, so a stall shows within seconds instead of
    hiding in an average over the whole wait.
    """

    window: float = 10.0
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def observe(self, at: float, lag: int, committed: int) -> None:
        self.samples.append((at, lag, committed))
        # Keep one reading at least `window` old, so the rates span the whole window.
        while len(self.samples) > 2 and at - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def rates(self) -> tuple[float, float] | None:
        """(records committed per second, records per second the lag shrinks by)."""
        if len(self.samples) < 2:
            return None
        (first_at, first_lag, first_done), (last_at, last_lag, last_done) = (
            self.samples[0],
            self.samples[-1],
        )
        if last_at <= first_at:
            return None
        seconds = last_at - first_at
        return (last_done - first_done) / seconds, (first_lag - last_lag) / seconds

    def line(self) -> str:
        lag = self.samples[-1][1]
        rates = self.rates()
        if rates is None:
            return f"{lag:,} records left (measuring the rate)"
        rate, drain = rates
        head = f"{lag:,} records left, {rate:,.0f} records/s"
        if lag == 0:
            return head
        if rate <= 0:
            return f"{head} (nothing committed in the last {self.span():.0f} s), ETA unknown"
        if drain <= 0:
            return f"{head}, ETA unknown (records arrive as fast as they are read)"
        return f"{head}, ETA {_duration(lag / rate)}"

    def span(self) -> float:
        return self.samples[-1][0] - self.samples[0][0]


class ProgressLine:
    """Prints a CatchUp as lag readings arrive: on a terminal one line rewritten in
    place (at most every `tty_interval` s); anywhere else (CI logs) a new line at
    most every `interval` s. The first reading prints at once."""

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 5.0,
        tty_interval: float = 0.5,
        indent: str = "      ",
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self.interval = tty_interval if self.tty else interval
        self.indent = indent
        self.catch_up = CatchUp()
        self._printed_at: float | None = None

    def __call__(self, lag: int, committed: int) -> None:
        now = self.clock()
        self.catch_up.observe(now, lag, committed)
        if self._printed_at is not None and now - self._printed_at < self.interval:
            return
        self._printed_at = now
        text = self.indent + self.catch_up.line()
        # \x1b[K clears what a longer previous line left on the right.
        self.stream.write(f"\r{text}\x1b[K" if self.tty else f"{text}\n")
        self.stream.flush()

    def done(self) -> None:
        """Clear the rewritten line; the caller prints the result in its place."""
        if self.tty and self._printed_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --- after the demo --------------------------------------------------------------------


def invoked_as(argv0: str | None = None) -> str:
    """The command that ran this demo, so printed commands work as printed: `govstream`
    when that is what PATH finds, else the path it was run by (make runs
    .venv/bin/govstream), or `python -m govstream.cli`."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if not argv0 or argv0.endswith(".py"):
        return f"{shlex.quote(sys.executable)} -m govstream.cli"
    on_path = shutil.which("govstream")
    if on_path is not None and Path(on_path).resolve() == Path(argv0).resolve():
        return "govstream"
    # Absolute, so the commands also work from another directory.
    return shlex.quote(os.path.abspath(argv0))


def follow_up(
    settings: Settings,
    *,
    program: str,
    session_id: str | None,
    slo_at: datetime,
    restart_broker: bool,
) -> list[str]:
    """Commands that explore a finished demo run, each complete on its own line.

    The run's topics (its own prefix) and ClickHouse directory are not where
    the plain commands look, so every command names them; the home is absolute
    so they work from any directory. A replay reads the session's records from
    Kafka at the positions the archive names, so when the demo stopped the broker
    it started, the first command starts it again (same home: same data) and the
    last one stops it.
    """
    home = f"GOVSTREAM_HOME={shlex.quote(str(settings.home.resolve()))}"
    run = " ".join(
        [
            home,
            f"GOVSTREAM_TOPIC_PREFIX={shlex.quote(settings.topic_prefix)}",
            f"GOVSTREAM_APP_ID={shlex.quote(settings.app_id)}",
            f"GOVSTREAM_CLICKHOUSE_PATH={shlex.quote(str(settings.chdb_path))}",
        ]
    )
    commands = [f"{home} {program} broker start"] if restart_broker else []
    if session_id is not None:
        commands.append(f"{run} {program} replay session {shlex.quote(session_id)}")
    commands.append(f"{run} {program} slo --at {slo_at.isoformat()}")
    if restart_broker:
        commands.append(f"{home} {program} broker stop")
    return commands


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
    from sql.dashboards import load_query

    ch = open_clickhouse(settings, role="client")
    mismatches: list[str] = []
    try:
        events = ch.query(load_query("summary_events"))
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

        dead = ch.query(load_query("summary_dead_letters"))
        total_dead = sum(row[1] for row in dead.rows)
        say(f"\nDead letters: {total_dead}")
        if dead.rows:
            say(_table(dead.columns, dead.rows))
        expected_dead = sum(truth["malformed_sent"].values())
        if total_dead != expected_dead:
            mismatches.append(f"dead letters {total_dead} != truth {expected_dead}")

        cost = ch.query(load_query("summary_cost_per_tenant"))
        say("\nCost per tenant, top 10:")
        rows = [(t, n, f"{tok:,}", _usd(c)) for t, n, tok, c in cost.rows]
        say(_table(["tenant", "turns", "tokens", "cost"], rows))
        for tenant, _, _, micros in cost.rows:
            want = truth["per_tenant"][tenant]["cost_usd_micros"]
            if micros != want:
                mismatches.append(f"cost of {tenant} {micros} != truth {want}")

        latency = ch.query(load_query("summary_latency_by_tier"))
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


def forensics(settings: Settings, bootstrap: str) -> tuple[list[str], str | None]:
    """Rebuild the governor's state and derived events and diff them with live;
    replay one incident.

    Returns mismatches (a divergence, or no incident in the fleet) and the
    incident's session id.
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
        return [f"rebuild diverged from live state: {report.divergences[0]}"], None
    say(
        f"      rebuilt {report.records:,} log records in {report.fold_seconds:.2f}s: "
        f"{keys}; live state equals rebuilt state, byte for byte"
    )
    with open_clickhouse(settings, role="client") as ch:
        rows = ch.query(INCIDENT_SQL).rows
    if not rows:
        return ["the fleet has no quarantined or budget-exceeded session to replay"], None
    session_id, kind = rows[0]
    # The command that replays it again comes at the end (follow_up): this demo's
    # settings and broker are gone by the time a reader runs it.
    say(f"      incident: session {session_id} ({kind}), replayed:\n")
    tenant, records = read_session_records(settings, session_id)
    result = replay(decode_records(settings, records), tenant, session_id, config)
    for line in incident_excerpt(render(result, None).splitlines(), kind.split(",")[0]):
        say(f"    {line}")
    return [], str(session_id)


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


def _last_second(iso: str) -> datetime:
    """The whole second at or after the fleet's last event: `slo --at` it shows the SLO
    windows as they were when the fleet stopped, whenever the command is run."""
    at = datetime.fromisoformat(iso)  # Python 3.11 reads a trailing Z
    whole = at.replace(microsecond=0)
    return whole if whole == at else whole + timedelta(seconds=1)


def _wait_with_progress(settings: Settings, bootstrap: str, which: str, progress: bool) -> float:
    from govstream.commands.lag import wait_for_zero_lag

    line = ProgressLine(sys.stdout) if progress else None
    try:
        return asyncio.run(wait_for_zero_lag(settings, bootstrap, 300, which, on_lag=line))
    finally:
        if line is not None:
            line.done()


def run_demo(settings: Settings, *, tenants: int, sessions: int, seed: int, progress: bool) -> int:
    from events.topics import Topics
    from govstream.broker import ensure_broker, stop_broker
    from govstream.commands.dashboard import write_dashboard
    from govstream.commands.simulate import run_simulation
    from govstream.simulate import FleetConfig, default_start
    from streams.admin import ensure_topics

    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    demo_dir = (settings.home / "demo").resolve()
    shutil.rmtree(demo_dir / "clickhouse", ignore_errors=True)
    # An operator key for this run's console (the worker's only while the demo runs).
    console_key = f"demo-{secrets.token_urlsafe(12)}"
    keys = ",".join(k for k in (settings.api_keys, f"{console_key}:*") if k)
    settings = settings.model_copy(
        update={
            "api_keys": keys,
            "topic_prefix": f"govstream-demo-{run_id}",
            "app_id": f"govstream-demo-{run_id}",
            "clickhouse_path": demo_dir / "clickhouse",
            "web_port": free_port(),
        }
    )
    started = time.monotonic()
    broker_started = False
    worker = None
    incident: str | None = None
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
        say(
            f"      console: {worker.url}/console (sign in with the key {console_key}; "
            "open while the demo runs)"
        )

        say(f"[3/7] simulating {tenants} tenants, {sessions:,} sessions (seed {seed}) ...")
        # Yesterday from 00:00 UTC: the simulator places sessions by the hour of day, so
        # a start on the hour would make a different fleet (with or without an incident
        # to replay) at each hour the demo runs; from midnight it is the same fleet.
        config = FleetConfig(
            seed=seed, tenants=tenants, sessions=sessions, start=default_start(),
            malformed_rate=0.001,
        )  # fmt: skip
        truth = asyncio.run(
            run_simulation(
                settings, config, truth_path=demo_dir / f"truth-{run_id}.json", progress=progress
            )
        )
        say("[4/7] waiting for the worker to catch up (lag 0) ...")
        waited = _wait_with_progress(settings, bootstrap, "sink", progress)
        say(f"      caught up {waited:.1f}s after the last send")
        say("[5/7] summary from ClickHouse SQL")
        mismatches = summarize(settings, truth)
        say("[6/7] dashboards: waiting for the governor, then every panel ...")
        _wait_with_progress(settings, bootstrap, "all", progress)
        page, failed = write_dashboard(settings, demo_dir / "dashboard")
        say(f"      dashboard: {page}")
        if failed:
            mismatches.append(f"{failed} dashboard panels failed (see {page})")
        say("[7/7] forensics: the governor rebuilt from the log, and an incident replayed")
        found, incident = forensics(settings, bootstrap)
        mismatches += found
    finally:
        if worker is not None:
            worker.stop()
        if broker_started:
            stop_broker(settings)
            say("stopped the local broker this demo started")
    elapsed = time.monotonic() - started
    if not mismatches:
        say(f"\nAll figures match the simulator's ground truth. Demo took {elapsed:.0f}s.")
    log = (
        f"the broker at {settings.kafka_bootstrap}"
        if settings.kafka_bootstrap
        else f"the local broker's data under {settings.home.resolve()}"
    )
    say(
        f"\nExplore this run afterwards: its log stays in {log}, its ClickHouse in "
        f"{settings.chdb_path} (until the next demo). Run these as printed, from any "
        "directory:"
    )
    commands = follow_up(
        settings,
        program=invoked_as(),
        session_id=incident,
        slo_at=_last_second(truth["last_event_at"]),
        restart_broker=broker_started,
    )
    for command in commands:
        say(f"    {command}")
    if mismatches:
        for line in mismatches:
            print(f"govstream: mismatch: {line}", file=sys.stderr)
        raise GovstreamError(f"demo figures differ from the ground truth ({len(mismatches)})")
    return 0
