"""The governor under faults, on a real broker: kill -9 mid-stream and mid-checkpoint,
a rebalance where one of two workers dies, a paused zombie that wakes up after its
partitions moved, four restarts over a settled fleet, a fold that raises, and
budgets crossed under a slowed consumer.

The bar everywhere: totals exact (each tenant's month cost equals the ground
truth), exactly one PolicyDecided per operation key, no derived event id twice
in what a read_committed consumer sees, and the live state equal to a rebuild
from offset zero. Waits are by progress (records folded, lag reaching zero),
with deadlines generous enough for a machine 3x slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.codec import Codec
from events.models import (
    BudgetExceeded,
    PolicyDecided,
    SessionEvent,
    SessionSuspended,
    TenantBudgets,
)
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings, governor_config
from govstream.simulate import FleetConfig
from sql.client import open_clickhouse
from streams.admission import partition_for
from streams.rebuild import rebuild
from tests.conftest import bearer, isolated_settings
from tests.factories import session_started, tenant_profile, tool_proposal, turn
from tests.kafka_io import read_topic, send_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
OPERATOR_KEY = "drill-operator-key"
WAIT = 300.0  # seconds, for a slow machine; every wait ends as soon as progress shows
CODEC = Codec(EmbeddedRegistry())
# A consumer slowed on purpose: small fetches with a pause after each, so that kills
# land mid-stream and checkpoints interleave with everything else.
SLOW = {"governor_fetch_records": 200, "governor_drill_fetch_pause_ms": 20}


def _settings(base: Path, bootstrap: str, **overrides: Any) -> Settings:
    return isolated_settings(base, bootstrap, api_keys=f"{OPERATOR_KEY}:*", **overrides)


def _second(settings: Settings, base: Path, **overrides: Any) -> Settings:
    """A second worker in the same group: governor only (one embedded ClickHouse per home)."""
    update = {"web_port": free_port(), "worker_agents": "governor", "home": base, **overrides}
    return settings.model_copy(update=update)


def _wait(what: str, probe: Callable[[], Any], ready: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            value = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            value = None
        if value is not None and ready(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {WAIT:.0f}s")
        time.sleep(0.05)


def _folded(worker: WorkerProcess) -> int:
    return int(worker.health()["governor"]["records"])


def _logged(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log_path.read_text(errors="replace")


def _budgets(url: str, tenant: str) -> httpx.Response:
    return httpx.get(
        f"{url}/v1/budgets/{tenant}",
        headers=bearer(OPERATOR_KEY),
        timeout=10,
    )


def _budgets_answered(url: str, tenant: str) -> dict[str, Any]:
    """The tenant's budgets once its partition's owner answers: a rebalance (a worker
    woke up or joined) makes the new owner restore first, and it answers 503 meanwhile."""
    reply = _wait(f"budgets of {tenant}", lambda: _budgets(url, tenant), lambda r: r.is_success)
    return reply.json()  # type: ignore[no-any-return]


def _month_costs(url: str, tenants: list[str]) -> dict[str, int]:
    return {
        t: int(_budgets_answered(url, t)["balances"]["tenant_cost_month"]["used"]) for t in tenants
    }


def _derived(settings: Settings) -> list[SessionEvent]:
    topic = Topics(settings.topic_prefix).derived
    records = asyncio.run(read_topic(settings.kafka_bootstrap or "", topic, timeout=120))
    return [CODEC.decode(r.value).event for r in records]  # type: ignore[misc]


def _assert_exactly_once(settings: Settings, truth: dict[str, Any], url: str) -> None:
    """Month costs equal the truth; one decision per operation; no derived id twice; the
    live state and derived events equal a rebuild from offset zero."""
    expected = {t: v["cost_usd_micros"] for t, v in truth["per_tenant"].items()}
    assert _month_costs(url, sorted(expected)) == expected
    derived = _derived(settings)
    ids = Counter(e.event_id for e in derived)
    assert [i for i, n in ids.items() if n > 1] == []
    decisions = [e for e in derived if isinstance(e, PolicyDecided)]
    proposed = truth["tool_calls"]["proposed"]
    assert len(decisions) == len({d.operation_key for d in decisions}) == proposed
    report = asyncio.run(
        rebuild(settings, governor_config(settings), settings.kafka_bootstrap or "")
    )
    assert report.divergences == []


def _sink_truth(settings: Settings, truth: dict[str, Any]) -> None:
    topics = Topics(settings.topic_prefix)
    with open_clickhouse(settings, role="client") as ch:
        by_type = dict(
            ch.query(
                "SELECT event_type, uniqExact(event_id) FROM events_archive FINAL"
                " WHERE topic = {t:String} GROUP BY event_type",
                {"t": topics.sessions},
            ).rows
        )
        per_tenant = {
            row[0]: (row[1], row[2])
            for row in ch.query(
                "SELECT tenant_id, count(), sum(cost_usd_micros) FROM turns FINAL"
                " GROUP BY tenant_id"
            ).rows
        }
        dead = dict(
            ch.query(
                "SELECT reason_code, count() FROM dead_letters FINAL GROUP BY reason_code"
            ).rows
        )
    # The tenant log holds the producers' events and the worker's admission requests.
    by_type.pop("AdmissionRequested", None)
    assert by_type == truth["events_by_type"]
    assert per_tenant == {
        t: (v["turns"], v["cost_usd_micros"]) for t, v in truth["per_tenant"].items() if v["turns"]
    }
    assert dead == {k: v for k, v in truth["malformed_sent"].items() if v}


# --- drills in the background ----------------------------------------------------------
#
# Two drills spend most of their time idle: after each kill -9 the next worker waits for
# the dead member's session to expire (10 s) before its groups hand it the partitions.
# Each runs in a background thread from the module's start (when its test is selected)
# while the other drills run; its test, at the module's end, waits for it and raises
# whatever it raised.


@pytest.fixture(scope="module", autouse=True)
def background(
    request: pytest.FixtureRequest, local_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Any]]]:
    """The BACKGROUND drills whose tests are selected, started: test name -> future."""
    selected = {item.name for item in request.session.items} & set(BACKGROUND)
    started: list[WorkerProcess] = []  # by every drill: all stopped at the end
    with ThreadPoolExecutor(max_workers=max(1, len(selected))) as pool:
        futures = {
            name: pool.submit(
                BACKGROUND[name], tmp_path_factory.mktemp(name[5:29]), local_bootstrap, started
            )
            for name in sorted(selected)
        }
        try:
            yield futures
        finally:
            for future in futures.values():
                with contextlib.suppress(Exception):
                    future.result()  # their own waits are bounded
            for worker in started:
                worker.stop()


# --- kill -9: three times mid-stream, once mid-checkpoint --------------------------------


@dataclass
class Kill9Drill:
    settings: Settings
    truth: dict[str, Any]
    final: WorkerProcess  # running, at zero lag


def _kill_9_drill(base: Path, bootstrap: str, started: list[WorkerProcess]) -> Kill9Drill:
    """Send a fleet, kill -9 three workers mid-stream and one mid-checkpoint, start the
    final worker and wait until it has consumed everything (both groups at zero lag).
    Every worker started goes in `started` (to be stopped whatever happens)."""

    def start(settings: Settings, log: str) -> WorkerProcess:
        worker = WorkerProcess(settings, log_path=base / log)
        started.append(worker)  # a list the other background drill appends to as well
        worker.wait_ready()
        return worker

    settings = _settings(base, bootstrap, sink_batch_size=2000, **SLOW)
    fleet = FleetConfig(
        seed=23, tenants=8, sessions=1200, start=datetime(2026, 11, 21, tzinfo=UTC),
        duplicate_rate=0.02, malformed_rate=0.002,
    )  # fmt: skip
    truth: dict[str, Any] = asyncio.run(run_simulation(settings, fleet, progress=False))
    total = truth["records_sent"]
    rng = random.Random(99)
    for round_ in range(3):
        worker = start(settings, f"worker-{round_}.log")
        target = rng.randint(1, max(2, total // 4))
        _wait("records folded", lambda w=worker: _folded(w), lambda n, t=target: n >= t)
        worker.kill()
    # Once inside a checkpoint's transaction: sent, not committed.
    paused = settings.model_copy(update={"governor_drill_checkpoint_pause_ms": 120_000})
    worker = start(paused, "worker-paused.log")
    _wait("a checkpoint paused", lambda: _logged(worker, "paused before commit"), bool)
    worker.kill()

    worker = start(settings, "worker-final.log")
    asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=WAIT, which="all"))
    return Kill9Drill(settings, truth, worker)


# --- rebalance: two workers, one killed ----------------------------------------------------


def test_a_rebalance_after_one_of_two_workers_dies(local_bootstrap: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, local_bootstrap, worker_agents="governor", **SLOW)
    fleet = FleetConfig(
        seed=31, tenants=6, sessions=700, start=datetime(2026, 11, 22, tzinfo=UTC),
        duplicate_rate=0.02,
    )  # fmt: skip
    first = WorkerProcess(settings, log_path=tmp_path / "a.log")
    second = WorkerProcess(_second(settings, tmp_path / "b"), log_path=tmp_path / "b.log")
    try:
        first.wait_ready()
        second.wait_ready()
        _wait("both own partitions", lambda: second.health()["assigned"], bool)
        truth: dict[str, Any] = asyncio.run(run_simulation(settings, fleet, progress=False))
        _wait("the second folding", lambda: _folded(second), lambda n: n >= 500)
        second.kill()  # no goodbye: the group notices when its session times out
        asyncio.run(wait_for_zero_lag(settings, local_bootstrap, timeout=WAIT, which="governor"))
        assert first.health()["assigned"] == [0, 1, 2]
        _assert_exactly_once(settings, truth, first.url)
    finally:
        first.stop()
        second.stop()


# --- a zombie: paused inside a transaction, woken after its partitions moved -----------


def test_a_paused_owner_wakes_up_fenced(local_bootstrap: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, local_bootstrap, worker_agents="governor", **SLOW)
    fleet = FleetConfig(
        seed=37, tenants=6, sessions=500, start=datetime(2026, 11, 23, tzinfo=UTC),
    )  # fmt: skip
    first = WorkerProcess(settings, log_path=tmp_path / "a.log")
    zombie_settings = _second(settings, tmp_path / "z", governor_drill_checkpoint_pause_ms=1_500)
    zombie = WorkerProcess(zombie_settings, log_path=tmp_path / "z.log")
    try:
        first.wait_ready()
        zombie.wait_ready()
        _wait("both own partitions", lambda: zombie.health()["assigned"], bool)
        truth: dict[str, Any] = asyncio.run(run_simulation(settings, fleet, progress=False))
        _wait("the zombie mid-transaction", lambda: _logged(zombie, "paused before commit"), bool)
        zombie.proc.send_signal(signal.SIGSTOP)
        try:
            _wait("its partitions moved", lambda: first.health()["assigned"], lambda a: len(a) == 3)
        finally:
            zombie.proc.send_signal(signal.SIGCONT)
        # It wakes inside the transaction it had open and tries to commit it.
        _wait("the zombie fenced", lambda: _logged(zombie, "fenced by a newer owner"), bool)
        asyncio.run(wait_for_zero_lag(settings, local_bootstrap, timeout=WAIT, which="governor"))
        _assert_exactly_once(settings, truth, first.url)
    finally:
        first.stop()
        zombie.stop()


# --- four restarts over a settled fleet ------------------------------------------------------


def _restart_answers(url: str, expected: dict[str, dict[str, Any]]) -> Counter[int]:
    """Poll every tenant's budgets from the moment the worker starts until each has
    answered 200: until then a tenant gets 503 (or no answer yet), and its first 200
    is its state from before the restart, never an empty one."""
    seen: Counter[int] = Counter()
    waiting = set(expected)
    deadline = time.monotonic() + WAIT
    while waiting and time.monotonic() < deadline:
        for tenant in sorted(waiting):
            try:
                reply = _budgets(url, tenant)
            except httpx.HTTPError:
                seen[0] += 1
                continue
            seen[reply.status_code] += 1
            if reply.status_code == 200:
                assert reply.json() == expected[tenant]
                waiting.discard(tenant)
            else:
                assert reply.status_code == 503, reply.text
        time.sleep(0.02)
    assert not waiting, f"no answer after {WAIT:.0f}s for {sorted(waiting)}: {dict(seen)}"
    return seen


def _four_restarts_drill(base: Path, bootstrap: str, started: list[WorkerProcess]) -> None:
    """The whole drill, assertions included (run in the background: see BACKGROUND)."""
    settings = _settings(
        base, bootstrap, worker_agents="governor", compaction_threshold_tokens=4_000
    )
    fleet = FleetConfig(seed=41, tenants=5, sessions=600, start=datetime(2026, 11, 24, tzinfo=UTC))
    truth: dict[str, Any] = asyncio.run(run_simulation(settings, fleet, progress=False))
    tenants = sorted(truth["per_tenant"])
    worker = WorkerProcess(settings, log_path=base / "worker-0.log")
    started.append(worker)
    try:
        worker.wait_ready()
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=WAIT, which="governor"))
        settled = worker.health(digest=True)["governor"]["partitions"]
        assert sum(p["keys"] for p in settled.values()) >= fleet.sessions + fleet.tenants
        budgets = {t: _budgets_answered(worker.url, t) for t in tenants}
        assert {t: b["balances"]["tenant_cost_month"]["used"] for t, b in budgets.items()} == {
            t: truth["per_tenant"][t]["cost_usd_micros"] for t in tenants
        }

        def sigterm_after_a_pause(w: WorkerProcess) -> None:
            w.proc.send_signal(signal.SIGSTOP)
            time.sleep(1)
            w.proc.send_signal(signal.SIGCONT)
            w.stop()

        ways: list[tuple[str, Callable[[WorkerProcess], Any]]] = [
            ("SIGTERM", WorkerProcess.stop),
            ("kill -9", WorkerProcess.kill),
            ("SIGTERM after a pause", sigterm_after_a_pause),
            ("kill -9", WorkerProcess.kill),
        ]
        for n, (how, stop) in enumerate(ways, start=1):
            clock = time.monotonic()
            stop(worker)
            stopped = time.monotonic() - clock
            worker = WorkerProcess(settings, log_path=base / f"worker-{n}.log")
            started.append(worker)
            seen = _restart_answers(worker.url, budgets)
            print(
                f"restart {n} ({how}): stopped in {stopped:.1f}s, answering after"
                f" {time.monotonic() - clock - stopped:.1f}s; answers before {dict(seen)}"
            )
            restored = worker.health(digest=True)["governor"]["partitions"]
            assert restored == {k: {**v, "folded": 0} for k, v in settled.items()}, (
                how
            )  # every key, byte for byte (the digest), nothing folded again
            assert {t: _budgets(worker.url, t).json() for t in tenants} == budgets, how
    finally:
        worker.stop()


# --- a fold that raises halts its partition ------------------------------------------------


def test_a_fold_that_raises_halts_and_commits_nothing_past_it(
    local_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path, local_bootstrap, worker_agents="governor", topic_partitions=2,
        governor_drill_fail_on="ToolCallProposed",
    )  # fmt: skip
    at = datetime(2026, 11, 25, tzinfo=UTC)
    sid = f"s-halt-{uuid.uuid4().hex[:6]}"
    halted = partition_for("t-halt", 2)
    # A tenant on the other partition: its records are folded and committed regardless.
    other = next(t for t in (f"t-ok-{n}" for n in range(64)) if partition_for(t, 2) != halted)
    healthy = [
        session_started(tenant_id=other, session_id="s-ok", occurred_at=at),
        turn(tenant_id=other, session_id="s-ok", occurred_at=at + timedelta(seconds=1)),
    ]
    events = [
        session_started(tenant_id="t-halt", session_id=sid, occurred_at=at),
        turn(tenant_id="t-halt", session_id=sid, occurred_at=at + timedelta(seconds=1)),
        tool_proposal(
            tenant_id="t-halt",
            session_id=sid,
            operation_key=f"{sid}/op-1",
            occurred_at=at + timedelta(seconds=2),
        ),
        turn(tenant_id="t-halt", session_id=sid, occurred_at=at + timedelta(seconds=3)),
    ]
    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log")
    worker.wait_ready()
    send_events(settings, [*healthy, *events])
    try:
        failed = _wait("health red", worker.health, lambda h: h["status"] == "failed")
        # The other partition goes on: both of its records folded and committed.
        _wait(
            "the other partition folded",
            lambda: worker.health()["governor"]["partitions"][str(1 - halted)]["folded"],
            lambda n: n == len(healthy),
        )
    finally:
        code = _wait("the worker gives up", worker.proc.poll, lambda c: c is not None)
    # The reason names the record; the worker exits non-zero saying why.
    assert "ToolCallProposed" in failed["reason"] and "@2" in failed["reason"], failed
    assert code != 0
    assert _logged(worker, "the governor stopped")
    # Nothing past the failing record committed: its offset is where a restart reads.
    topics = Topics(settings.topic_prefix)

    async def committed(partition: int) -> int | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=local_bootstrap, group_id=settings.governor_group,
            enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(topics.sessions, partition))
        finally:
            await consumer.stop()

    assert (asyncio.run(committed(halted)) or 0) <= 2
    assert asyncio.run(committed(1 - halted)) == len(healthy)  # unaffected
    assert not any(isinstance(e, PolicyDecided) for e in _derived(settings))


# --- budgets in log order, whatever the consumer's pace ---------------------------------------

BUDGET_AT = datetime(2026, 11, 26, tzinfo=UTC)


def _spend(tenant: str, sid: str, wf: str, seconds: float) -> Any:
    """A turn of 600 tokens and 600 micro-USD."""
    return turn(
        tenant_id=tenant, session_id=sid, workflow_id=wf, input_tokens=500, output_tokens=100,
        cost_usd_micros=600, occurred_at=BUDGET_AT + timedelta(seconds=seconds),
    )  # fmt: skip


def _ask(tenant: str, sid: str, op: str, seconds: float) -> Any:
    return tool_proposal(
        event_id=str(uuid.uuid4()), idempotency_key=op, tenant_id=tenant, session_id=sid,
        operation_key=op, destination_host="api.example.com",
        occurred_at=BUDGET_AT + timedelta(seconds=seconds),
    )  # fmt: skip


def _crossing(scope: str, budget: dict[str, int], run: str) -> tuple[list[Any], tuple[str, ...]]:
    """A tenant whose budget of `scope` a known turn crosses: (events, (tenant, the
    operation proposed before that turn, the one right after it))."""
    tenant, wf = f"t-{scope.replace('_', '-')}-{run}", f"w-{run}"
    s1, s2 = f"s-{scope}-1-{run}", f"s-{scope}-2-{run}"
    # The session budget is crossed by one session's own turns, the others by a second
    # session's turn on top of the first's.
    crosser = s1 if scope == "session" else s2
    before, after = f"{crosser}/op-before", f"{crosser}/op-after"
    profile = tenant_profile(
        tenant_id=tenant, plan="team", occurred_at=BUDGET_AT, budgets=TenantBudgets(**budget),
        egress_allowlist=["api.example.com"],
    )  # fmt: skip
    events = [
        profile,
        session_started(
            tenant_id=tenant, session_id=s1, workflow_id=wf, tier="C", occurred_at=BUDGET_AT
        ),
        session_started(
            tenant_id=tenant, session_id=s2, workflow_id=wf, tier="C", occurred_at=BUDGET_AT
        ),
        _spend(tenant, s1, wf, 2),
        _ask(tenant, crosser, before, 3),
        _spend(tenant, crosser, wf, 4),  # 1,200 of 1,000: crosses the budget
        _ask(tenant, crosser, after, 5),  # the very next record of that session
    ]
    return events, (tenant, before, after)


def test_the_record_after_a_crossing_turn_is_refused_with_a_slow_consumer(
    local_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path, local_bootstrap, worker_agents="governor",
        # one record per fetch, a pause after each, a checkpoint every record
        governor_fetch_records=1, governor_drill_fetch_pause_ms=15,
        governor_checkpoint_records=1,
    )  # fmt: skip
    run = uuid.uuid4().hex[:6]
    cases = {
        "session": {"tokens_per_session": 1_000},
        "workflow": {"tokens_per_workflow": 1_000},
        "tenant_day": {"cost_per_day_usd_micros": 1_000},
    }
    events: list[Any] = []
    ops: dict[str, tuple[str, ...]] = {}
    for scope, budget in cases.items():
        crafted, ops[scope] = _crossing(scope, budget, run)
        events += crafted
    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log")
    try:
        worker.wait_ready()
        send_events(settings, events)
        asyncio.run(wait_for_zero_lag(settings, local_bootstrap, timeout=WAIT, which="governor"))
        derived = _derived(settings)
        decided = {e.operation_key: e for e in derived if isinstance(e, PolicyDecided)}
        exceeded = {e.tenant_id: e for e in derived if isinstance(e, BudgetExceeded)}
        suspended = {e.tenant_id for e in derived if isinstance(e, SessionSuspended)}
        for scope, (tenant, before, after) in ops.items():
            assert (decided[before].decision, decided[before].reason_code) == ("allow", "ALLOWED")
            assert (decided[after].decision, decided[after].reason_code) == (
                "deny", "BUDGET_EXCEEDED",
            ), scope  # fmt: skip
            assert (exceeded[tenant].scope, exceeded[tenant].used) == (scope, 1_200)
            assert tenant in suspended
    finally:
        worker.stop()


# The tests of the drills run in the background come last: see `background`.

BACKGROUND: dict[str, Callable[[Path, str, list[WorkerProcess]], Any]] = {
    "test_four_restarts_restore_every_key": _four_restarts_drill,
    "test_kill_9_mid_stream_and_mid_checkpoint": _kill_9_drill,
}


def test_four_restarts_restore_every_key(background: dict[str, Future[Any]]) -> None:
    background["test_four_restarts_restore_every_key"].result()  # raises what it raised


def test_kill_9_mid_stream_and_mid_checkpoint(background: dict[str, Future[Any]]) -> None:
    drill: Kill9Drill = background["test_kill_9_mid_stream_and_mid_checkpoint"].result()
    _sink_truth(drill.settings, drill.truth)
    _assert_exactly_once(drill.settings, drill.truth, drill.final.url)
