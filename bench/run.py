"""`make bench`: the governor and the worker over a backlog, admission under load, restore.

Not a test: it prints figures and writes them to BENCHMARKS.md (between the
run markers) with the machine, the date, the Kafka version and the partition
count. Every ratio is against the ceiling measured in the same run, on the
same broker:

1. emit: a simulated fleet of at least 200,000 events through the Emitter;
2. ceiling: a bare aiokafka consumer + fastavro decode loop over that topic;
3. governor alone: a worker with only the governor (`worker_agents=governor`,
   every projection on, exactly once) started after the backlog is written;
   timed from its first folded record to zero lag of its group;
4. whole worker: sink + governor (`worker_agents=all`) over the same fleet
   under a new topic prefix, until both groups have zero lag;
5. profile: the governor alone again (a group of its own) under py-spy, the
   samples sorted into decode, ingest rules, the fold, the changelog,
   producer and consumer, ...;
6. restore: the governor folds a fleet of 100,000 sessions, stops, and a new
   worker is timed from process start until it answers again (health ready,
   budgets and a turn admission 200); bytes of state per session;
7. admission: against that worker, a load generator in its own process
   (bench/loadgen.py), open loop at 500, 1,000 and 2,000 requests/s and
   closed loop with 200 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from events.emitter import Emitter
from events.models import TenantBudgets, TenantProfileUpdated
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.broker import ensure_broker, stop_broker
from govstream.commands.lag import total_lag
from govstream.commands.simulate import send_simulation
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings, load, record_signer
from govstream.simulate import FleetConfig, Simulation, simulate
from streams.admin import ensure_topics, partitions_of, worker_groups
from streams.admission import partition_for
from streams.log_reader import read_topics

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, FINISH = "<!-- run -->", "<!-- /run -->"
BENCH_KEY = "bench-operator-key"
OPEN_RATES = (500, 1_000, 2_000)
CLOSED_CLIENTS = 200
# Each admission run has 20 tenants of its own: the load sends no TurnCompleted, so an
# admitted turn's reservation stays open (until it lapses, 60 s of log time) and would
# otherwise weigh on the runs after it.
RUNS = ("probe", "single", *(f"open{r}" for r in OPEN_RATES), "closed", "profiled")


def tenants(run: str) -> list[str]:
    return [f"bench-{run}-{i:02d}" for i in range(20)]


LITELLM = (
    "LiteLLM publishes 2 / 8 / 13 ms p50 / p95 / p99 of proxy overhead at about "
    "1,170 requests/s on 4 instances of 4 vCPU each (docs.litellm.ai/docs/benchmarks; "
    "measured inside the proxy against a fake provider)"
)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {system}, Python {python}"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def say(text: str) -> None:
    print(text, flush=True)


# --- the backlog ----------------------------------------------------------------------------


def fleet(sessions: int, tenants: int = 50) -> tuple[Simulation, float]:
    """A simulated fleet (seed 2026) whose events all lie within the last ~25 hours, so
    the ingest rules (at most 30 days old, at most 5 minutes ahead) accept every one."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=25)
    sim = simulate(FleetConfig(seed=2026, tenants=tenants, sessions=sessions, start=start))
    return sim, time.perf_counter() - started


async def send_fleet(settings: Settings, sim: Simulation) -> tuple[int, float]:
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings.kafka_bootstrap or "", topics, settings.topic_partitions)
    async with Emitter(
        settings.kafka_bootstrap or "", topics=topics, signer=record_signer(settings)
    ) as emitter:
        started = time.perf_counter()
        counts = await send_simulation(emitter, sim)
        return counts["records"], time.perf_counter() - started


async def emit(settings: Settings, sessions: int) -> tuple[int, float, float]:
    """Generate and send a fleet: (records, seconds sending, seconds generating)."""
    sim, generated = fleet(sessions)
    n, seconds = await send_fleet(settings, sim)
    return n, seconds, generated


async def ceiling(settings: Settings, expected: int) -> tuple[int, float]:
    """Bare consume + decode: what any Python consumer of this topic can reach."""
    registry = EmbeddedRegistry()
    parsed: dict[int, Any] = {}
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        topics.sessions, topics.tenants,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.app_id}-ceiling",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        max_poll_records=5000,
    )  # fmt: skip
    await consumer.start()
    count = 0
    started = None
    try:
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    _, schema_id = struct.unpack_from(">bI", record.value)
                    schema = parsed.get(schema_id)
                    if schema is None:
                        schema = parsed[schema_id] = registry.by_id(schema_id).parsed
                    buf = io.BytesIO(record.value)
                    buf.seek(5)
                    fastavro.schemaless_reader(buf, schema, None)
                    count += 1
        return count, time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


def faust_probe(settings: Settings, expected: int) -> tuple[int, float]:
    """A no-op Faust agent over the same topic (`--faust-probe`): Faust's own ceiling."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.faust_probe", settings.kafka_bootstrap or "",
         settings.topic_prefix, str(expected)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("FAUST_PROBE"):
            _, n, seconds = line.split()
            return int(n), float(seconds)
    raise SystemExit(f"faust probe failed: {result.stderr[-500:]}")


# --- workers ----------------------------------------------------------------------------------


def operator_get(url: str, path: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(
        f"{url}{path}", headers={"Authorization": f"Bearer {BENCH_KEY}"}, timeout=timeout
    )


def health(worker: WorkerProcess) -> dict[str, Any]:
    return operator_get(worker.url, "/v1/health").json()  # type: ignore[no-any-return]


def caught_up(settings: Settings, which: str, timeout: float = 1800) -> float:
    """perf_counter time at which the groups (sink|governor|all) had consumed everything.

    Polls the committed offsets against the end offsets every 50 ms with one admin
    client; a reading at zero (one record per partition allowed on the derived
    topic, where a transaction marker ends each partition) is then confirmed by
    `govstream lag`'s own reading (markers told from records), twice in a row.
    """

    async def wait() -> float:
        bootstrap = settings.kafka_bootstrap or ""
        groups = worker_groups(settings, which)
        derived = Topics(settings.topic_prefix).derived
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-lag")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            tps = {g: await partitions_of(bootstrap, topics) for g, topics in groups}
            deadline = time.perf_counter() + timeout
            hit: float | None = None
            confirmed = 0
            while time.perf_counter() < deadline:
                polled = time.perf_counter()
                behind = 0
                for group, parts in tps.items():
                    committed = await admin.list_consumer_group_offsets(group)
                    ends = await consumer.end_offsets(parts)
                    for tp in parts:
                        meta = committed.get(tp)
                        gap = ends[tp] - max(meta.offset if meta else 0, 0)
                        behind += max(0, gap - (1 if tp.topic == derived else 0))
                if behind == 0:
                    lag, _ = await total_lag(settings, bootstrap, which)
                    if lag == 0:
                        hit = hit or polled
                        confirmed += 1
                        if confirmed >= 2:
                            return hit
                        continue
                hit, confirmed = None, 0
                await asyncio.sleep(0.05)
            raise SystemExit(f"{which} lag not zero after {timeout:.0f}s")
        finally:
            await consumer.stop()
            await admin.close()

    return asyncio.run(wait())


def first_record(worker: WorkerProcess, role: str, timeout: float = 300) -> float:
    """perf_counter time at which the worker's `role` (governor|sink) reported its first
    record (polled every 50 ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        stats = health(worker)[role] or {}
        if stats.get("records", 0) > 0:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit(f"the {role} folded nothing in {timeout:.0f}s: {worker.tail(5)}")


PY_SPY = Path(sys.executable).with_name("py-spy")


def start_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` (collapsed stacks) until stop_spy()."""
    return subprocess.Popen(
        [str(PY_SPY), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--full-filenames", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def governor_backlog(
    settings: Settings, n: int, log_path: Path, profile: Path | None = None
) -> dict[str, Any]:
    """A governor-only worker over the backlog: first folded record -> zero lag."""
    worker = WorkerProcess(settings, log_path=log_path)
    spy = None
    try:
        worker.wait_ready()
        if profile is not None:
            spy = start_spy(worker.proc.pid, profile)
            recorded = time.perf_counter()
        started = first_record(worker, "governor")
        finished = caught_up(settings, "governor")
        if spy is not None:
            stop_spy(spy)
            spy = None
            recorded = time.perf_counter() - recorded
        stats = health(worker)["governor"]
    finally:
        if spy is not None:
            stop_spy(spy)
        worker.stop()
    seconds = finished - started
    out = {"records": n, "seconds": seconds, "rate": n / seconds, "stats": stats}
    if profile is not None:
        out["recorded"] = recorded
    return out


def whole_worker(settings: Settings, n: int, log_path: Path) -> dict[str, Any]:
    """Sink + governor over the backlog: first record of either -> both groups at zero."""
    worker = WorkerProcess(settings, log_path=log_path)
    try:
        worker.wait_ready()
        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            now = health(worker)
            if now["sink"]["records"] > 0 or (now["governor"] or {}).get("records", 0) > 0:
                break
            time.sleep(0.05)
        started = time.perf_counter()
        finished = caught_up(settings, "all")
        final = health(worker)
    finally:
        worker.stop()
    seconds = finished - started
    return {
        "records": n,
        "seconds": seconds,
        "rate": n / seconds,
        "sink": final["sink"],
        "governor": final["governor"],
    }


# --- tenants for admission --------------------------------------------------------------------


def send_bench_profiles(settings: Settings) -> None:
    """Plans with budgets large enough that turns are admitted (every limit is still
    checked), signed into the tenant log as the admin tools write them."""
    budgets = TenantBudgets(
        tokens_per_session=10**9,
        tokens_per_workflow=10**10,
        cost_per_day_usd_micros=10**12,
        cost_per_month_usd_micros=10**13,
    )
    profiles = [
        TenantProfileUpdated(
            event_id=str(uuid.uuid4()),
            occurred_at=datetime.now(UTC),
            tenant_id=tenant,
            idempotency_key=f"bench-profile-{tenant}",
            plan="team",
            budgets=budgets,
        )
        for run in RUNS
        for tenant in tenants(run)
    ]

    async def send() -> None:
        topics = Topics(settings.topic_prefix)
        await ensure_topics(settings.kafka_bootstrap or "", topics, settings.topic_partitions)
        async with Emitter(
            settings.kafka_bootstrap or "", topics=topics, signer=record_signer(settings)
        ) as emitter:
            await emitter.emit_many(profiles)

    asyncio.run(send())


def loadgen(url: str, run: str, *args: str) -> dict[str, Any]:
    """One run of bench/loadgen.py in its own process; its JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--key", BENCH_KEY,
         "--tenants", ",".join(tenants(run)), "--tag", run, *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def admission(
    worker: WorkerProcess, seconds: float, broker_pid: int | None, profile: Path | None
) -> list[dict[str, Any]]:
    watch = ["--watch", f"worker={worker.proc.pid}"]
    if broker_pid is not None:
        watch += ["--watch", f"broker={broker_pid}"]
    say(f"admission: closed loop, 1 client for {seconds:.0f}s (the service time) ...")
    result = loadgen(
        worker.url, "single", "--mode", "closed", "--clients", "1", "--seconds", str(seconds),
        "--warmup", "4", *watch,
    )  # fmt: skip
    runs = [result]
    say(f"  {latency_line(result)}")
    for rate in OPEN_RATES:
        say(f"admission: open loop at {rate:,} requests/s for {seconds:.0f}s ...")
        result = loadgen(
            worker.url, f"open{rate}", "--mode", "open", "--rate", str(rate),
            "--seconds", str(seconds), *watch,
        )  # fmt: skip
        runs.append(result)
        say(f"  {latency_line(result)}")
        time.sleep(2)
    say(f"admission: closed loop, {CLOSED_CLIENTS} clients for {seconds:.0f}s ...")
    result = loadgen(
        worker.url, "closed", "--mode", "closed", "--clients", str(CLOSED_CLIENTS),
        "--seconds", str(seconds), "--warmup", str(CLOSED_CLIENTS), *watch,
    )  # fmt: skip
    runs.append(result)
    say(f"  {latency_line(result)}")
    if profile is not None:
        say(f"admission: open loop at {OPEN_RATES[0]:,}/s again, under py-spy ...")
        spy = start_spy(worker.proc.pid, profile)
        try:
            result = loadgen(
                worker.url, "profiled", "--mode", "open", "--rate", str(OPEN_RATES[0]),
                "--seconds", str(seconds), *watch,
            )  # fmt: skip
        finally:
            stop_spy(spy)
        say(f"  {latency_line(result)}")
        runs.append({**result, "profiled": True})
    return runs


def latency_line(r: dict[str, Any]) -> str:
    return (
        f"{r['ok']:,}/{r['requests']:,} ok, {r['achieved_rate']:,.0f}/s, p50 {r['p50_ms']:.1f} "
        f"p99 {r['p99_ms']:.1f} max {r['max_ms']:.1f} ms, non-2xx {r['non_2xx']}, "
        f"errors {r['errors']}, {r['decisions']}"
    )


# --- restore ----------------------------------------------------------------------------------


async def changelog_size(bootstrap: str, topic: str) -> dict[str, int]:
    """Records and bytes (key + value) of the changelog as written, and of its live
    state (the last value of each key, what compaction keeps)."""
    records = raw = 0
    last: dict[bytes, int] = {}
    async for batch in read_topics(bootstrap, [topic]):
        for record in batch:
            size = len(record.key or b"") + len(record.value or b"")
            records += 1
            raw += size
            if record.key is not None:
                last[record.key] = size if record.value is not None else 0
    live = {k: v for k, v in last.items() if v}
    sessions = [v for k, v in live.items() if k.startswith(b"s/")]
    return {
        "records": records,
        "bytes": raw,
        "keys": len(live),
        "live_bytes": sum(live.values()),
        "session_keys": len(sessions),
        "session_bytes": sum(sessions),
    }


def log_dir_bytes(settings: Settings, topic: str) -> int | None:
    """Bytes of the topic's log segments on disk (the local broker only; index files,
    preallocated at 10 MiB, left out)."""
    data = settings.broker_dir / "data"
    if settings.kafka_bootstrap is None and not data.exists():
        return None
    dirs = list(data.glob(f"{topic}-*")) if data.exists() else []
    if not dirs:
        return None
    return sum(f.stat().st_size for d in dirs for f in d.glob("*.log"))


def answering(worker: WorkerProcess, tenants: list[str], timeout: float = 120) -> dict[str, float]:
    """Seconds from the worker's process start until: health says every partition is
    ready; budgets answer 200 for a tenant of every partition; a turn admission 200."""
    started = worker_started = getattr(worker, "started_at", time.perf_counter())
    marks: dict[str, float] = {}
    deadline = started + timeout
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    body = {"tenant": tenants[0], "session": "bench-restore-probe", "model": "gpt-4o",
            "estimated_tokens": 100}  # fmt: skip
    with httpx.Client(headers=headers, timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if worker.proc.poll() is not None:
                raise SystemExit(f"worker exited: {worker.tail(5)}")
            try:
                if "health" not in marks:
                    gov = client.get(f"{worker.url}/v1/health").json().get("governor") or {}
                    parts = gov.get("partitions", {})
                    if len(parts) == worker.settings.topic_partitions and all(
                        p["ready"] for p in parts.values()
                    ):
                        marks["health"] = time.perf_counter() - worker_started
                if "health" in marks and "budgets" not in marks:
                    codes = [
                        client.get(
                            f"{worker.url}/v1/budgets/{t}", params={"session": "s"}
                        ).status_code
                        for t in tenants
                    ]
                    if all(c == 200 for c in codes):
                        marks["budgets"] = time.perf_counter() - worker_started
                if "budgets" in marks:
                    answer = client.post(f"{worker.url}/v1/admission/turn", json=body)
                    if answer.status_code == 200:
                        marks["admission"] = time.perf_counter() - worker_started
                        return marks
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
    raise SystemExit(f"not answering after {timeout:.0f}s ({marks}): {worker.tail(5)}")


def probe_tenants(partitions: int) -> list[str]:
    """One tenant of the probe set on each partition (as many as the set covers)."""
    by_partition: dict[int, str] = {}
    for tenant in tenants("probe"):
        by_partition.setdefault(partition_for(tenant, partitions), tenant)
    return [by_partition[p] for p in sorted(by_partition)]


def start_answering(settings: Settings, log_path: Path) -> tuple[WorkerProcess, dict[str, float]]:
    """A worker, and the seconds from its process start until it answered."""
    started = time.perf_counter()
    worker = WorkerProcess(settings, log_path=log_path)
    worker.started_at = started  # type: ignore[attr-defined]
    try:
        return worker, answering(worker, probe_tenants(settings.topic_partitions))
    except BaseException:
        worker.stop()
        raise


def stays_answering(worker: WorkerProcess, seconds: float) -> dict[str, Any]:
    """Watch health for `seconds` after the worker first answered: does every partition
    stay ready, with no second restore (a rebalance that took the partitions away)?"""
    first = health(worker)["governor"]
    started = time.perf_counter()
    problem: str | None = None
    lost_at: float | None = None
    while time.perf_counter() - started < seconds:
        time.sleep(0.5)
        try:
            gov = health(worker)["governor"] or {}
        except (httpx.HTTPError, ValueError) as exc:
            problem = problem or f"health did not answer ({type(exc).__name__})"
            continue
        parts = gov.get("partitions", {})
        ready = len(parts) == worker.settings.topic_partitions and all(
            p["ready"] for p in parts.values()
        )
        if gov.get("restored_keys", 0) > first["restored_keys"]:
            problem = "the worker lost its partitions and restored them again (a rebalance)"
        elif not ready and problem is None:
            problem = "partitions not ready"
        if problem is not None and lost_at is None:
            lost_at = time.perf_counter() - started
    log = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    heartbeats = log.count("Heartbeat failed")
    return {
        "seconds": seconds,
        "stable": problem is None and heartbeats == 0,
        "problem": problem,
        "lost_after": lost_at,
        "heartbeat_failures": heartbeats,
        "restored_keys": (health(worker)["governor"] or {}).get("restored_keys", 0),
    }


def restore(settings: Settings, sessions: int, bench_dir: Path, run_id: str) -> dict[str, Any]:
    """Fold a fleet of `sessions` sessions, stop, restart: time until answering again,
    and whether the worker then stays up."""
    say(f"restore: generating a fleet of {sessions:,} sessions ...")
    sim, generated = fleet(sessions)
    send_bench_profiles(settings)
    n, emit_s = asyncio.run(send_fleet(settings, sim))
    del sim
    say(f"  {n:,} records (generated in {generated:.1f}s, sent in {emit_s:.1f}s)")
    say("restore: the governor folds it ...")
    folded = governor_backlog(settings, n, bench_dir / f"restore-fold-{run_id}.log")
    say(f"  {n:,} records folded to zero lag in {folded['seconds']:.2f}s = {folded['rate']:,.0f}/s")
    topic = Topics.governor_changelog(settings.governor_group)
    size = asyncio.run(changelog_size(settings.kafka_bootstrap or "", topic))
    on_disk = log_dir_bytes(settings, topic)
    say(
        f"  changelog: {size['records']:,} records, {size['bytes']:,} bytes; live "
        f"{size['keys']:,} keys ({size['session_keys']:,} sessions), {size['live_bytes']:,} bytes"
    )
    say("restore: restarting the worker over that state ...")
    worker, marks = start_answering(settings, bench_dir / f"restore-{run_id}.log")
    try:
        stats = health(worker)["governor"]
        say(
            f"  answering {marks['admission']:.2f}s after process start (health ready "
            f"{marks['health']:.2f}s, budgets {marks['budgets']:.2f}s); restored "
            f"{stats['restored_keys']:,} changelog records in {stats['restore_seconds']:.2f}s"
        )
        # Longer than the consumer's session timeout (10 s): a member that missed its
        # heartbeats while restoring is expelled within it.
        watch = stays_answering(worker, 30.0)
        say(f"  then, over {watch['seconds']:.0f}s: {watch}")
    finally:
        worker.stop()
    return {
        "records": n,
        "sessions": sessions,
        "fold": folded,
        "changelog": size,
        "on_disk": on_disk,
        "marks": marks,
        "stats": stats,
        "watch": watch,
    }


# --- the profile --------------------------------------------------------------------------------

WAITING = "waiting for I/O (epoll, no Python running)"


def classify(frames: list[str]) -> str:
    """Where one sample's time goes: its pipeline stage, by the frames on its stack."""
    joined = ";".join(frames)
    if "select (" in frames[-1] and "selectors.py" in frames[-1]:
        return WAITING
    if "Governor._restore" in joined:
        return "restore of state from the changelog (after a rebalance)"
    if "Governor._checkpoint" in joined:
        if "to_json" in joined or "canonical (" in joined:
            return "checkpoint: changed state to canonical JSON (changelog values)"
        if "Codec.encode" in joined:
            return "checkpoint: Avro encode of derived events"
        if "RecordSigner" in joined or "/provenance.py" in joined:
            return "checkpoint: record signatures (HMAC)"
        return "checkpoint: producer sends, transaction, offsets (aiokafka)"
    if "Governor._fold" in joined:
        if "/projections/" in joined:
            return "fold: step() (dedupe, lifecycle, policy, budgets, memory)"
        if "Codec.decode_raw" in joined:
            return "decode: Avro bytes to a dict (fastavro)"
        if "Codec.decode" in joined:
            return "decode: dict to event model (pydantic validation)"
        if "InputRules.check" in joined:
            return "ingest rules (topic, key, signature, time bounds)"
        if "log_record" in joined:
            return "ConsumerRecord -> LogRecord"
        return "adapter: per-record loop of _fold"
    if "aiokafka/consumer" in joined:
        return "consumer: fetch, unpack records, positions (aiokafka)"
    if "aiokafka/producer" in joined:
        return "producer: batching and sending in the background (aiokafka)"
    if "aiokafka/" in joined:
        return "Kafka connections and protocol (aiokafka)"
    if "Governor." in joined:
        return "adapter: consume loop, checkpoint scheduling"
    if "aiohttp" in joined or "/streams/views.py" in joined:
        return "web server (aiohttp)"
    # A stack cut short (sampled while it changed): by its innermost own frame.
    if "/projections/" in joined:
        return "fold: step() (dedupe, lifecycle, policy, budgets, memory)"
    if "fastavro" in joined or "Codec.decode_raw" in frames[-1]:
        return "decode: Avro bytes to a dict (fastavro)"
    return "event loop, GC and other"


WATCHED = (
    ("Governor._fold", "Governor._fold: ingest + fold, per fetched batch"),
    ("Codec.decode", "Codec.decode: Avro -> event model"),
    ("InputRules.check", "InputRules.check"),
    ("/projections/governor/fold.py", "fold.step and what it calls"),
    ("Governor._checkpoint", "Governor._checkpoint: one transaction per partition"),
    ("PartitionState.commit", "PartitionState.commit"),
    ("getmany (", "AIOKafkaConsumer.getmany"),
)


def profile_report(path: Path) -> dict[str, Any]:
    """Shares of the samples by stage (adding up to 100%) and inclusive shares of a few
    functions, from py-spy's raw (collapsed stacks) output."""
    totals: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        where = classify(frames)
        totals[where] += count
        if where != WAITING:
            own[short_frame(frames[-1])] += count
        joined = ";".join(frames)
        for needle, label in WATCHED:
            if needle in joined:
                inclusive[label] += count
    samples = max(samples, 1)
    busy = max(samples - totals.get(WAITING, 0), 1)
    shares = sorted(
        ((c, n / samples, n / busy if c != WAITING else 0.0) for c, n in totals.items()),
        key=lambda x: -x[1],
    )
    functions = [(label, inclusive.get(label, 0) / busy) for _, label in WATCHED]
    top = sorted(((f, n / busy) for f, n in own.items()), key=lambda x: -x[1])[:10]
    return {
        "samples": samples, "busy": busy, "shares": shares, "functions": functions, "top": top,
    }  # fmt: skip


def short_frame(frame: str) -> str:
    """`function (path:line)` with the path relative to the project or site-packages."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for base in (f"{ROOT}/", "site-packages/", "lib/python3.11/"):
        if base in path:
            path = path.split(base, 1)[1]
    return f"{name} ({path})"


# --- the report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(f: dict[str, Any]) -> str:
    ceil = f["ceiling_rate"]
    gov, whole, restored = f["governor"], f.get("whole"), f.get("restore")
    g_stats = gov["stats"]
    lines = [
        "## The governor and the worker (issue 11; `python -m bench.run`)",
        "",
        f"Measured by `make bench` ({f['date']}) on {f['machine']}; load average "
        f"{f['load']} when the report was written (the machine is shared: other jobs may "
        "have run during the measurement, and the broker, the workers and the load "
        "generator all run on these cores).",
        f"Apache Kafka {f['kafka_version']} (local single-node KRaft broker, same machine), "
        f"{f['partitions']} partitions, embedded ClickHouse (chDB), exactly once (Kafka "
        "transactions). Workload: a simulated fleet of "
        f"{f['events']:,} records (seed 2026, {f['sessions']:,} sessions, 50 tenants, every "
        "event within the last 25 hours so the ingest rules accept all of them).",
        "",
        "| step | records | seconds | records/s | of the ceiling |",
        "|---|---:|---:|---:|---:|",
        f"| emit (Emitter, idempotent producer, acks=all) | {f['events']:,} | "
        f"{f['emit_s']:.2f} | {f['events'] / f['emit_s']:,.0f} | |",
        f"| ceiling: bare aiokafka consume + fastavro decode | {f['ceiling_n']:,} | "
        f"{f['ceiling_s']:.2f} | {ceil:,.0f} | 100% |",
    ]
    if f.get("faust"):
        n, s = f["faust"]
        lines.append(
            f"| Faust agent that does nothing (take_events, exactly_once) | {n:,} | {s:.2f} | "
            f"{n / s:,.0f} | {n / s / ceil:.0%} |"
        )
    lines.append(
        "| governor alone (`worker_agents=governor`, every projection, exactly once): first "
        f"folded record -> zero lag | {gov['records']:,} | {gov['seconds']:.2f} | "
        f"{gov['rate']:,.0f} | **{gov['rate'] / ceil:.0%}** |"
    )
    if whole:
        lines.append(
            "| whole worker (`worker_agents=all`: sink + governor), same fleet, new topics: "
            f"first record -> both groups at zero lag | {whole['records']:,} | "
            f"{whole['seconds']:.2f} | {whole['rate']:,.0f} | **{whole['rate'] / ceil:.0%}** |"
        )
    if restored:
        fold = restored["fold"]
        lines.append(
            f"| governor alone over the restore fleet ({restored['sessions']:,} sessions) "
            f"| {fold['records']:,} | {fold['seconds']:.2f} | {fold['rate']:,.0f} | "
            f"{fold['rate'] / ceil:.0%} |"
        )
    targets = [
        f"| governor alone >= 30% of the ceiling | {gov['rate'] / ceil:.0%} "
        f"({gov['rate']:,.0f}/s) | {_met(gov['rate'] >= 0.3 * ceil)} |"
    ]
    if whole:
        targets.append(
            f"| whole worker >= 20% of the ceiling | {whole['rate'] / ceil:.0%} "
            f"({whole['rate']:,.0f}/s) | {_met(whole['rate'] >= 0.2 * ceil)} |"
        )
    if f.get("admission"):
        at = next(
            r for r in f["admission"] if r.get("target_rate") == 1000 and not r.get("profiled")
        )
        ok = at["p99_ms"] <= 10 and not at["non_2xx"] and not at["errors"]
        targets.append(
            f"| admission p99 <= 10 ms at 1,000 requests/s (open loop) | p99 "
            f"{at['p99_ms']:.1f} ms, {at['achieved_rate']:,.0f}/s achieved | {_met(ok)} |"
        )
    if restored:
        answered, watch = restored["marks"]["admission"], restored["watch"]
        kept = (
            "and kept answering"
            if watch["stable"]
            else f"then lost its partitions ({watch['heartbeat_failures']} heartbeat failures)"
        )
        targets.append(
            f"| restart over {restored['sessions']:,} sessions answering within 10 s "
            f"| {answered:.1f} s, {kept} | {_met(answered <= 10 and watch['stable'])} |"
        )
    lines += [
        "",
        "| target (issue 11) | measured | |",
        "|---|---|---|",
        *targets,
        "",
        f"Governor alone: {g_stats['records']:,} records folded, {g_stats['derived']:,} derived "
        f"events, {g_stats['checkpoints']:,} checkpoints (every "
        f"{f['checkpoint_records']:,} records or {f['checkpoint_ms']} ms per partition); "
        f"time inside the fetch loop (ingest and fold) {g_stats['fold_seconds']:.2f} s, "
        f"inside checkpoint transactions (serialise, send, commit; they run beside the "
        f"fold of the next interval) {g_stats['checkpoint_seconds']:.2f} s, of which the "
        f"loop waited for one in flight {g_stats.get('checkpoint_wait_seconds', 0.0):.2f} s; "
        f"wall time {gov['seconds']:.2f} s.",
    ]
    if whole:
        lines[-1] += (
            f" Whole worker: the sink wrote {whole['sink'].get('records', 0):,} records (the "
            f"log and the governor's derived events) in {whole['sink'].get('batches', 0)} "
            f"batches; the governor folded {(whole['governor'] or {}).get('records', 0):,}."
        )
    lines[-1] += f" Fleet generation took {f['generate_s']:.2f} s (not counted)."
    lines += ["", HISTORY]
    if f.get("admission"):
        lines += ["", *admission_report(f)]
    if restored:
        lines += ["", *restore_report(restored)]
    if f.get("profile"):
        lines += ["", *profile_section(f)]
    return "\n".join(lines)


HISTORY = (
    "Before the governor (the previous run of this benchmark, 2026-11-23, on a 2-core Intel "
    "Xeon machine): the enforcement processors were per-event Faust agents and reached 928 "
    "events/s, 0.9% of a ceiling of 100,316/s; a Faust agent that does nothing reached "
    "11,631/s (12%), which is why the hot paths are batch services on aiokafka "
    "(`--faust-probe` measures it again). The sink alone reached 33,125/s (33%)."
)


def restore_report(r: dict[str, Any]) -> list[str]:
    size, marks, stats = r["changelog"], r["marks"], r["stats"]
    sessions = r["sessions"]
    met = "met" if marks["admission"] <= 10 and r["watch"]["stable"] else "not met"
    disk = f" ({r['on_disk']:,} bytes of log segments on disk)" if r["on_disk"] else ""
    return [
        f"## Restore ({sessions:,} sessions of governor state)",
        "",
        f"The governor folded a fleet of {sessions:,} sessions ({r['records']:,} records) and "
        f"stopped; its changelog then held {size['records']:,} records, "
        f"{size['bytes']:,} bytes of keys and values as written{disk}, of which the live "
        f"state (the last value of each of {size['keys']:,} keys, what compaction keeps) is "
        f"{size['live_bytes']:,} bytes: **{size['live_bytes'] / sessions:,.0f} bytes of "
        f"state per session** ({size['session_bytes'] / max(size['session_keys'], 1):,.0f} "
        f"per session key alone, {size['session_keys']:,} session keys; "
        f"{size['bytes'] / sessions:,.0f} per session as written, before compaction).",
        "",
        "A new worker process over that state, from process start (Python start-up and "
        "imports, consumer group join, restore of every partition from its changelog):",
        "",
        "| answering | seconds after process start |",
        "|---|---:|",
        f"| /v1/health: every partition ready | {marks['health']:.2f} |",
        f"| GET /v1/budgets 200 for a tenant of every partition | {marks['budgets']:.2f} |",
        f"| POST /v1/admission/turn 200 | {marks['admission']:.2f} |",
        "",
        f"Restored {stats['restored_keys']:,} changelog records, "
        f"{size['bytes'] / 2**20:,.0f} MiB, every partition ready {marks['health']:.1f} s after "
        f"the process started ({size['bytes'] / 2**20 / max(marks['health'], 1e-9):,.0f} "
        "MiB/s over that whole time, start-up included; the worker's own restore clock, "
        f"summed over the partitions, says {stats['restore_seconds']:.1f} s). Target: "
        f"answering within 10 s: **{met}** ({marks['admission']:.1f} s).",
        "",
        watch_text(r["watch"]),
    ]


def watch_text(w: dict[str, Any]) -> str:
    if w["stable"]:
        return (
            f"It then kept every partition ready for the {w['seconds']:.0f} s watched, with no "
            "second restore and no failed heartbeat."
        )
    after = f" after {w['lost_after']:.0f} s" if w["lost_after"] is not None else ""
    return (
        f"**It did not stay up**: watched for {w['seconds']:.0f} s after it first answered, "
        f"{w['problem'] or 'its consumer failed heartbeats'}{after}; the worker log shows "
        f'{w["heartbeat_failures"]} failed heartbeats ("local member_id was not recognized; '
        'resetting and re-joining group"), and it had restored '
        f"{w['restored_keys']:,} changelog records by the end. The restore runs inside the "
        "consumer's rebalance listener (`Governor.acquire`), and aiokafka sends no "
        "heartbeats while a rebalance (listener included) is in progress: a restore longer "
        "than the session timeout (aiokafka's default, 10 s) gets the member expelled, it "
        "re-joins, is assigned the partitions again and restores them again from the "
        "start, in a loop. With this much state a worker never becomes stable."
    )


def admission_report(f: dict[str, Any]) -> list[str]:
    runs = [r for r in f["admission"] if not r.get("profiled")]
    rows = []
    for r in runs:
        if r["mode"] == "open":
            load = f"open loop, {r['target_rate']:,.0f}/s"
        else:
            load = f"closed loop, {r['clients']} client{'s' if r['clients'] > 1 else ''}"
        decisions = ", ".join(f"{k} {v:,}" for k, v in sorted(r["decisions"].items()))
        cpu = r.get("cpu_seconds", {})
        per = " / ".join(
            f"{1000 * cpu[k] / max(r['ok'], 1):.2f}" if k in cpu else "-"
            for k in ("worker", "broker", "loadgen")
        )
        rows.append(
            f"| {load} | {r['requests']:,} | {r['achieved_rate']:,.0f} | {_ms(r['p50_ms'])} | "
            f"{_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | {r['non_2xx']:,} | {r['errors']:,} | "
            f"{_ms(r['late_p99_ms']) if r['mode'] == 'open' else '-'} | {per} | {decisions} |"
        )
    at_1000 = next(r for r in runs if r["mode"] == "open" and r["target_rate"] == 1000)
    met = "met" if at_1000["p99_ms"] <= 10 and not at_1000["non_2xx"] else "not met"
    closed = runs[-1]
    return [
        "## Admission under load",
        "",
        "`POST /v1/admission/turn` against the governor-only worker of the first phase, "
        f"restarted over its state ({f['sessions']:,} sessions; answering "
        f"{f['admission_worker']['marks']['admission']:.1f} s after its process started), "
        "on loopback. Log-first: each "
        "request is appended to the tenant's log (acks=all) and answered when the fold "
        "reaches it. The load generator (bench/loadgen.py, aiohttp) runs in its own "
        "process; it, the worker and the Kafka broker share the machine's "
        f"{os.cpu_count()} cores. Open loop: a fixed arrival schedule, latency from each "
        "request's scheduled send time (coordinated omission counted); `late p99` is how "
        "far the generator itself was behind its schedule. Each run has 20 tenants of its "
        "own (profiles with budgets large enough that turns are allowed; every limit is "
        "still checked), 2,000 sessions and 50 workflows, 800 estimated tokens per turn. "
        "The load sends no TurnCompleted, so every admitted turn's reservation stays open "
        "for the rest of the run (it lapses after 60 s of log time). CPU per answer: "
        "user + system time of each process over the measured part of the run, divided by "
        "the answers.",
        "",
        "| load | requests | achieved/s | p50 ms | p99 ms | max ms | non-2xx | errors "
        "| late p99 ms | CPU ms per answer: worker / broker / generator | answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *rows,
        "",
        f"Target: p99 <= 10 ms at 1,000 requests/s: **{met}** ({at_1000['p99_ms']:.1f} ms). "
        f"For context, {LITELLM}. Closed loop with {closed['clients']} clients that never "
        f"pause: by Little's law {closed['clients']} in flight / "
        f"{closed['achieved_rate']:,.0f} requests/s = "
        f"{1000 * closed['clients'] / max(closed['achieved_rate'], 1e-9):.0f} ms per request "
        "on average; that row is the saturation throughput, not a latency target.",
        "",
        admission_notes(f, runs),
    ]


def admission_notes(f: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """What the figures say: the floor, the checkpoint tail, the CPU ceiling."""
    single = next((r for r in runs if r["mode"] == "closed" and r["clients"] == 1), None)
    low = next((r for r in runs if r.get("target_rate") == OPEN_RATES[0]), None)
    notes = []
    if single is not None:
        notes.append(
            f"One client alone sees p50 {single['p50_ms']:.1f} ms (append with acks=all, the "
            f"consumer's fetch wake-up, the fold, the answer) but p99 {single['p99_ms']:.1f} ms"
        )
    worker = f.get("admission_worker", {})
    before, after = worker.get("state") or {}, worker.get("after") or {}
    count = after.get("checkpoints", 0) - before.get("checkpoints", 0)
    if count > 0:
        spent = after.get("checkpoint_seconds", 0.0) - before.get("checkpoint_seconds", 0.0)
        waited = after.get("checkpoint_wait_seconds", 0.0) - before.get(
            "checkpoint_wait_seconds", 0.0
        )
        notes[-1:] = [
            (notes[-1] + ": " if notes else "")
            + f"over the admission runs the worker made {count:,} checkpoints of "
            f"{1000 * spent / count:.0f} ms on average (transactions run beside the fold; "
            f"the loop waited for one in flight {waited:.2f} s in all), and the fold, the "
            "changelog's serialisation and the producer share one core with the web server"
        ]
    if low is not None and low.get("cpu_seconds"):
        cpu = 1000 * sum(low["cpu_seconds"].values()) / max(low["ok"], 1)
        cores = os.cpu_count() or 1
        notes.append(
            f"At {OPEN_RATES[0]:,}/s the worker, the broker and the generator used "
            f"{cpu:.1f} ms of CPU per answer together, so the {cores} cores run out at about "
            f"{1000 * cores / cpu:,.0f} answers/s: above that requests queue, which is what "
            "the 1,000/s and 2,000/s rows show (the generator's own lateness included)"
        )
    top = [name for name, _ in (f.get("admission_profile") or {}).get("top", [])[:4]]
    if any(name.startswith(("Balance.held", "Balance.to_json")) for name in top):
        notes.append(
            "The admission profile below puts `Balance.held` and `Balance.to_json` near the "
            "top: every check sums all the reservations held in each budget it checks "
            "(session, workflow, tenant day and month), and every checkpoint writes every "
            "changed balance with all its reservations to the changelog again, so the cost "
            "per admission grows with the reservations held (here up to rate x 10 s per run, "
            "as the load sends no TurnCompleted)"
        )
    return ". ".join(notes) + "." if notes else ""


def profiled_line(f: dict[str, Any]) -> str:
    run = next((r for r in f.get("admission", ()) if r.get("profiled")), None)
    if run is None:
        return "not recorded"
    return f"p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms"


def profile_tables(p: dict[str, Any]) -> list[str]:
    shares = [
        f"| {c} | {whole:.1%} | {'' if c == WAITING else f'{busy:.1%}'} |"
        for c, whole, busy in p["shares"]
    ]
    top = [f"| `{frame}` | {share:.1%} |" for frame, share in p["top"]]
    return [
        "| where | share of samples | share of busy samples |",
        "|---|---:|---:|",
        *shares,
        "",
        "The functions the busy samples were in (own time, top 10):",
        "",
        "| function | share of busy samples |",
        "|---|---:|",
        *top,
    ]


def profile_section(f: dict[str, Any]) -> list[str]:
    p = f["profile"]
    functions = [f"| `{label}` | {share:.1%} |" for label, share in p["functions"]]
    busy = {c: b for c, _, b in p["shares"]}

    def total(prefix: str) -> float:
        return sum(b for c, b in busy.items() if c.startswith(prefix))

    per_record = 1e6 * p["busy"] / 200 / f["events"]

    lines = [
        "## Where the time goes (governor alone, py-spy)",
        "",
        f"Of the busy samples: the fold (`step`: dedupe, lifecycle, signed policy, budgets, "
        f"memory) {total('fold:'):.0%}, decoding {total('decode:'):.0%} (fastavro "
        f"{total('decode: Avro'):.0%}, pydantic validation {total('decode: dict'):.0%}), "
        f"the ingest rules {total('ingest rules'):.0%}, checkpoints "
        f"{total('checkpoint:'):.0%} (of which the changelog's canonical JSON "
        f"{total('checkpoint: changed state'):.0%}), aiokafka's producer in the background "
        f"{total('producer:'):.0%}, the consumer {total('consumer:'):.0%}, the adapter's own "
        f"loops {total('adapter:'):.0%}, the event loop and the rest "
        f"{sum(total(k) for k in ('event loop', 'Kafka conn', 'web server', 'ConsumerRec')):.0%}.",
        "",
        f"Per record that is about {per_record:.0f} us of Python time under the profiler (busy "
        f"samples / 200 per second / {f['events']:,} records): the fold {per_record * total('fold:'):.0f} us, "
        f"decoding {per_record * total('decode:'):.0f} us, the ingest rules "
        f"{per_record * total('ingest rules'):.0f} us, checkpoints and the producer "
        f"{per_record * (total('checkpoint:') + total('producer:')):.0f} us. The ceiling's "
        f"loop needs {1e6 / f['ceiling_rate']:.0f} us per record; 30% of the ceiling "
        f"({0.3 * f['ceiling_rate']:,.0f} records/s) leaves {1e6 / (0.3 * f['ceiling_rate']):.0f} "
        "us per record for everything, waits included.",
        "",
        f"{p['version']} (`record --rate 200`, which pauses the process for each sample) "
        "attached to a governor-only worker with a group of its own over the same backlog, "
        "from its first record to "
        f"zero lag ({p['seconds']:.1f} s, {p['rate']:,.0f} records/s under the profiler): "
        f"{p['samples']:,} samples over {p['recorded']:.1f} s of recording (start-up and the "
        "lag check's last seconds included; idle threads are not sampled). A sample goes to "
        "the pipeline stage its stack is in "
        "(`bench/run.py: classify`), so the shares add up to 100%; the last column leaves out "
        "the samples that were waiting for I/O.",
        "",
        *profile_tables(p),
        "",
        "Inclusive shares of busy samples (a function and everything it calls):",
        "",
        "| function | share of busy samples |",
        "|---|---:|",
        *functions,
    ]
    a = f.get("admission_profile")
    if a:
        lines += [
            "",
            f"### Admission at {OPEN_RATES[0]:,} requests/s (py-spy, same settings)",
            "",
            f"The worker of the admission runs, profiled during one more open-loop run at "
            f"{OPEN_RATES[0]:,} requests/s with tenants of its own: {a['samples']:,} samples. "
            "py-spy stops the process for every sample, so the latencies of that run "
            f"({profiled_line(f)}) say nothing about admission; the shares do.",
            "",
            *profile_tables(a),
        ]
    return lines


def write_report(text: str) -> None:
    """Replace the run section (between the markers), keeping every other section; a
    file from before the markers has its unmarked head replaced."""
    section = f"{BEGIN}\n{text}\n{FINISH}"
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if BEGIN in current and FINISH in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(FINISH, 1)[1]
        BENCHMARKS.write_text(head + section + tail)
        return
    others = current.find("\n<!-- ")
    tail = current[others:] if others >= 0 else ""
    BENCHMARKS.write_text(f"# Benchmarks\n\n{section}\n{tail}")


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=17_000, help="~13 events per session")
    parser.add_argument(
        "--restore-sessions", type=int, default=100_000, help="sessions of state to restore"
    )
    parser.add_argument("--admission-seconds", type=float, default=10.0, help="per load")
    parser.add_argument("--skip", default="", help="comma list of: whole,profile,admission,restore")
    parser.add_argument("--faust-probe", action="store_true", help="also a no-op Faust agent")
    parser.add_argument("--report", type=Path, help="only write the report of saved figures")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.report is not None:
        text = report(json.loads(args.report.read_text()))
        write_report(text)
        say(text)
        return 0

    base = load()
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    bench_dir = (base.home / "bench").resolve()
    bench_dir.mkdir(parents=True, exist_ok=True)
    started_broker = False
    broker_pid = None
    if base.kafka_bootstrap is None:
        handle = ensure_broker(base)
        started_broker, bootstrap, broker_pid = handle.started, handle.bootstrap, handle.pid
    else:
        bootstrap = base.kafka_bootstrap

    def variant(suffix: str, **update: Any) -> Settings:
        shutil.rmtree(bench_dir / f"clickhouse{suffix}", ignore_errors=True)
        return base.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "topic_prefix": f"bench-{run_id}",
                "app_id": f"bench-{run_id}{suffix}",
                "clickhouse_path": bench_dir / f"clickhouse{suffix}",
                "web_port": free_port(),
                "worker_agents": "governor",
                "api_keys": f"{BENCH_KEY}:*",
                "backlog_interval_seconds": 0,
                **update,
            }
        )

    settings = variant("-g")
    figures: dict[str, Any] = {
        "machine": machine(),
        "kafka_version": settings.kafka_version,
        "partitions": settings.topic_partitions,
        "sessions": args.sessions,
        "checkpoint_records": settings.governor_checkpoint_records,
        "checkpoint_ms": settings.governor_checkpoint_ms,
    }
    try:
        say(f"emitting a fleet of {args.sessions:,} sessions ...")
        sim, figures["generate_s"] = fleet(args.sessions)
        n, figures["emit_s"] = asyncio.run(send_fleet(settings, sim))
        figures["events"] = n
        say(f"  emit: {n:,} records in {figures['emit_s']:.2f}s = {n / figures['emit_s']:,.0f}/s")

        say("ceiling: bare consume + decode ...")
        figures["ceiling_n"], figures["ceiling_s"] = asyncio.run(ceiling(settings, n))
        figures["ceiling_rate"] = figures["ceiling_n"] / figures["ceiling_s"]
        say(f"  ceiling: {figures['ceiling_n']:,} in {figures['ceiling_s']:.2f}s = "
            f"{figures['ceiling_rate']:,.0f}/s")  # fmt: skip
        if args.faust_probe:
            say("faust: a no-op agent over the same topic ...")
            figures["faust"] = faust_probe(settings, n)

        say("governor alone over the backlog ...")
        gov = governor_backlog(settings, n, bench_dir / f"governor-{run_id}.log")
        figures["governor"] = gov
        stats = {k: v for k, v in gov["stats"].items() if k not in ("partitions", "reason")}
        say(f"  governor: {n:,} in {gov['seconds']:.2f}s = {gov['rate']:,.0f}/s "
            f"({gov['rate'] / figures['ceiling_rate']:.0%} of the ceiling); {stats}")  # fmt: skip

        if "whole" not in skip:
            whole_settings = variant("-w", topic_prefix=f"bench-{run_id}-w", worker_agents="all")
            say("whole worker: the same fleet under a new prefix ...")
            asyncio.run(send_fleet(whole_settings, sim))
            whole = whole_worker(whole_settings, n, bench_dir / f"whole-{run_id}.log")
            figures["whole"] = whole
            say(f"  whole worker: {n:,} in {whole['seconds']:.2f}s = {whole['rate']:,.0f}/s "
                f"({whole['rate'] / figures['ceiling_rate']:.0%} of the ceiling)")  # fmt: skip
        del sim

        if "profile" not in skip and not PY_SPY.exists():
            say(f"profile: skipped, no py-spy at {PY_SPY} (`make bench` installs it)")
            skip.add("profile")
        if "profile" not in skip:
            say("profile: the governor alone again, under py-spy ...")
            raw = bench_dir / f"profile-{run_id}.txt"
            prof = governor_backlog(
                variant("-p"), n, bench_dir / f"profile-{run_id}.log", profile=raw
            )
            if not raw.exists():
                say(f"  py-spy wrote no profile (is it installed, may it ptrace?): {PY_SPY}")
            else:
                profiled = profile_report(raw)
                version = subprocess.run(
                    [str(PY_SPY), "--version"], capture_output=True, text=True
                ).stdout.strip()
                figures["profile"] = {
                    **profiled, "seconds": prof["seconds"], "rate": prof["rate"],
                    "recorded": prof["recorded"],
                    "version": version,
                }  # fmt: skip
                for category, share, _ in profiled["shares"]:
                    say(f"  {share:6.1%}  {category}")

        if "admission" not in skip:
            # The worker of the governor-alone phase again, restarted over its state.
            adm_settings = settings.model_copy(update={"web_port": free_port()})
            send_bench_profiles(adm_settings)
            say("admission: the governor-alone worker restarted over its state ...")
            worker, marks = start_answering(adm_settings, bench_dir / f"admission-{run_id}.log")
            figures["admission_worker"] = {"marks": marks, "state": health(worker)["governor"]}
            say(f"  answering after {marks['admission']:.2f}s")
            raw = None if "profile" in skip else bench_dir / f"profile-admission-{run_id}.txt"
            try:
                figures["admission"] = admission(worker, args.admission_seconds, broker_pid, raw)
                figures["admission_worker"]["after"] = health(worker)["governor"]
            finally:
                worker.stop()
            if raw is not None and raw.exists():
                figures["admission_profile"] = profile_report(raw)

        if "restore" not in skip:
            restore_settings = variant("-r", topic_prefix=f"bench-{run_id}-r")
            figures["restore"] = restore(restore_settings, args.restore_sessions, bench_dir, run_id)
    finally:
        if started_broker:
            stop_broker(base)
    figures["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["load"] = load_average()
    saved = bench_dir / f"figures-{run_id}.json"
    saved.write_text(json.dumps(figures, indent=1, default=str))
    say(f"figures saved to {saved} (`python -m bench.run --report {saved}` writes them again)")
    text = report(figures)
    write_report(text)
    say(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
