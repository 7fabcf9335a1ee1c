"""Retry storm: every event sent 3 times -> the same totals, decisions and states.

One seeded fleet is sent twice on the real broker, each to its own topic
prefix with its own worker (all agents, exactly_once) and ClickHouse database:
once as a single send, once with retries=3, where every producer event
(tenant profiles included) goes out as the original, an exact redelivery
(same bytes, same event_id) and a runtime retry (same idempotency_key, new
event_id, attempt 2, later occurred_at). Malformed records go out once.

The simulated runtimes never break the session state machine, so a
misbehaving tenant is sent after the fleet, stormed the same way: one session
with two invalid transitions (retries must not push it to the quarantine
threshold of three) and one with three (quarantined, then a proposal).

After both workers have consumed everything (sink and session processor lag
zero), both runs must equal the ground truth (which does not change with
retries) and each other: ClickHouse totals, the turns and sessions rows
themselves, and the derived events apart from the DuplicateSuppressed a
retry earns. The archive keeps every record by design, so it must hold 3
records per event.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.codec import Codec
from events.emitter import Emitter
from events.models import (
    DuplicateSuppressed,
    Event,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionQuarantined,
    SessionStarted,
    ToolCallCompleted,
    ToolCallProposed,
)
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation, send_simulation
from govstream.processes import WorkerProcess
from govstream.settings import Settings, record_signer
from govstream.simulate import FleetConfig, SimRecord, Simulation, simulate, storm_copies
from sql.client import ClickHouse, open_clickhouse
from tests.conftest import BACKENDS, Backend, isolated_settings
from tests.kafka_io import read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RETRIES = 3
# Small enough for well under a minute on two cores; big enough for every
# event type, approvals, denials and dead letters of each kind.
FLEET = FleetConfig(
    seed=29,
    tenants=5,
    sessions=200,
    start=datetime(2026, 11, 22, tzinfo=UTC),
    malformed_rate=0.01,
)
RUNS = {"single": FLEET, "storm": replace(FLEET, retries=RETRIES)}

MISBEHAVING = "t-misbehaving"
TWICE, THRICE = "s-misbehaving-2", "s-misbehaving-3"


def _misbehaving_sessions() -> list[SessionEvent]:
    """Deterministic ids, so both runs send the same events. No turns: the
    tenant stays out of the turns table (and the latency summary)."""
    at = FLEET.start + timedelta(hours=12)
    events: list[SessionEvent] = []

    def add(cls: type[SessionEvent], session_id: str, **fields: Any) -> None:
        n = len(events)
        events.append(
            cls(
                event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:retry-storm:{n}")),
                occurred_at=at + timedelta(seconds=n),
                tenant_id=MISBEHAVING,
                session_id=session_id,
                idempotency_key=f"{session_id}:{n}",
                **fields,
            )
        )

    for session_id, invalid in ((TWICE, 2), (THRICE, 3)):
        add(SessionStarted, session_id, tier="B", plan="team", actor_id="u-1", policy_version="v1")
        for op in range(invalid):  # completions of calls never proposed
            add(ToolCallCompleted, session_id, operation_key=f"{session_id}:op-{op}",
                status="succeeded", latency_ms=5)  # fmt: skip
    add(ToolCallProposed, THRICE, tool="web.search", action="query",
        operation_key=f"{THRICE}:op-late", destination_host="api.search.example.com",
        method="GET", payload_bytes=100, risk_level="low")  # fmt: skip
    add(SessionClosed, TWICE, reason="completed")
    return events


def _misbehaving_records(retries: int) -> list[SimRecord]:
    rng = random.Random("retry-storm")
    records = []
    for event in _misbehaving_sessions():
        records.append(SimRecord(event, None, event.session_id, "event"))
        for kind, copy in storm_copies(event, retries, rng):
            records.append(SimRecord(copy, None, event.session_id, kind))
    return records


# ClickHouse measurements of the fleet (the misbehaving tenant is left out),
# the same for both runs. An event is one (tenant_id, idempotency_key); the
# archive payload is the event's JSON.
_KEY = "JSONExtractString(payload, 'idempotency_key')"
_FLEET = f"tenant_id != '{MISBEHAVING}'"
# The archive also holds the derived topic (the processors' facts); the
# producer records are the rest.
_PRODUCED = "NOT endsWith(topic, '.derived')"
QUERIES = {
    "events_by_type": (
        f"SELECT event_type, uniqExact(tenant_id, {_KEY}) FROM events_archive FINAL"
        f" WHERE {_FLEET} AND {_PRODUCED} GROUP BY event_type ORDER BY event_type"
    ),
    "archive_by_type": (
        "SELECT event_type, count(), uniqExact(event_id) FROM events_archive FINAL"
        f" WHERE {_FLEET} AND {_PRODUCED} GROUP BY event_type ORDER BY event_type"
    ),
    # How each event arrived: (records, distinct event ids, attempts) -> events.
    "archive_per_event": (
        "SELECT records, ids, attempts, count() FROM ("
        " SELECT count() AS records, uniqExact(event_id) AS ids,"
        "  arraySort(groupUniqArray(JSONExtractUInt(payload, 'attempt'))) AS attempts"
        f" FROM events_archive FINAL WHERE {_FLEET} AND {_PRODUCED}"
        f" GROUP BY tenant_id, event_type, {_KEY}"
        ") GROUP BY records, ids, attempts ORDER BY records, ids"
    ),
    "misbehaving_archive": (
        f"SELECT count(), uniqExact(event_id), uniqExact(tenant_id, {_KEY}) FROM events_archive"
        f" FINAL WHERE NOT {_FLEET} AND {_PRODUCED}"
    ),
    "turns": (
        "SELECT count(), uniqExact(tenant_id, idempotency_key), uniqExact(event_id),"
        " max(attempt) FROM turns FINAL"
    ),
    "turn_rows": "SELECT * FROM turns FINAL ORDER BY tenant_id, idempotency_key",
    "per_tenant": (
        "SELECT tenant_id, count(), sum(input_tokens), sum(output_tokens), sum(cost_usd_micros)"
        " FROM turns FINAL GROUP BY tenant_id ORDER BY tenant_id"
    ),
    "cost_by_day": (
        "SELECT tenant_id, toString(toDate(occurred_at)), sum(cost_usd_micros) FROM turns FINAL"
        " GROUP BY tenant_id, toDate(occurred_at) ORDER BY 1, 2"
    ),
    "sessions": (
        f"SELECT count(), uniqExact(session_id), max(attempt) FROM sessions FINAL WHERE {_FLEET}"
    ),
    "sessions_per_tier": (
        f"SELECT tier, count() FROM sessions FINAL WHERE {_FLEET} GROUP BY tier ORDER BY tier"
    ),
    "sessions_per_tenant": (
        "SELECT tenant_id, count() FROM sessions FINAL GROUP BY tenant_id ORDER BY tenant_id"
    ),
    # Every column: sessions keeps the lowest attempt of each (tenant_id,
    # session_id) (migration 0002), so a storm leaves the original SessionStarted.
    "session_rows": "SELECT * FROM sessions FINAL ORDER BY tenant_id, session_id",
    "dead_letters": (
        "SELECT reason_code, count() FROM dead_letters FINAL GROUP BY reason_code ORDER BY 1"
    ),
    "latency_by_tier": (REPO / "sql/queries/summary_latency_by_tier.sql").read_text(),
    "summary_events": (REPO / "sql/queries/summary_events.sql").read_text(),
}


@dataclass
class Run:
    name: str
    prefix: str
    # What was sent, fleet then misbehaving tenant (the simulator is pure:
    # recomputed, not read back).
    sent: list[SimRecord]
    truth: dict[str, Any]
    clickhouse: dict[str, list[tuple[Any, ...]]]
    derived: list[Event]

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.derived if isinstance(e, kind)]


def _measure(ch: ClickHouse) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(row) for row in ch.query(sql).rows] for name, sql in QUERIES.items()}


async def _send(settings: Settings, records: list[SimRecord]) -> None:
    topics = Topics(settings.topic_prefix)
    async with Emitter(
        settings.kafka_bootstrap or "", topics=topics, signer=record_signer(settings)
    ) as emitter:
        await send_simulation(emitter, Simulation(records, truth={}))


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def runs(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Run]]:
    backend: Backend = request.param
    base = tmp_path_factory.mktemp("retry-storm")
    bootstrap = brokers.bootstrap(backend.kafka)
    url = clickhouse_servers.url(backend.clickhouse)
    settings = {name: isolated_settings(base / name, bootstrap, url) for name in RUNS}
    workers: dict[str, WorkerProcess] = {}
    try:
        # Both workers at once: they share nothing but the broker.
        for name, s in settings.items():
            workers[name] = WorkerProcess(s, log_path=base / name / "worker.log")
        for worker in workers.values():
            worker.wait_ready()
        truths = {}
        for name, config in RUNS.items():
            truths[name] = asyncio.run(run_simulation(settings[name], config, progress=False))
            asyncio.run(_send(settings[name], _misbehaving_records(config.retries)))
        codec = Codec(EmbeddedRegistry())
        out: dict[str, Run] = {}
        for name, s in settings.items():
            asyncio.run(wait_for_zero_lag(s, bootstrap, timeout=120, which="all"))
            with open_clickhouse(s, role="client") as ch:
                measured = _measure(ch)
            records = asyncio.run(read_topic(bootstrap, Topics(s.topic_prefix).derived))
            derived: list[Event] = [codec.decode(r.value).event for r in records]  # type: ignore[misc]
            sent = simulate(RUNS[name]).records + _misbehaving_records(RUNS[name].retries)
            out[name] = Run(name, s.topic_prefix, sent, truths[name], measured, derived)
        yield out
    finally:
        # Together, and killed after 10 s: a Faust worker can hang on exit.
        with ThreadPoolExecutor(max_workers=len(RUNS)) as pool:
            list(pool.map(lambda worker: worker.stop(timeout=10), workers.values()))


# --- ClickHouse: both runs equal the ground truth ----------------------------------


def test_the_truth_does_not_change_with_retries(runs: dict[str, Run]) -> None:
    single, storm = runs["single"].truth, runs["storm"].truth
    assert {k: v for k, v in storm.items() if k != "sink"} == {
        k: v for k, v in single.items() if k != "sink"
    }
    assert sum(single["malformed_sent"].values()) > 0
    kinds = Counter(r.kind for r in simulate(RUNS["storm"]).records)
    assert kinds["event"] == kinds["redelivery"] == kinds["retry"] == single["events_total"]


@pytest.mark.parametrize("name", RUNS)
def test_events_per_type_equal_the_truth(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert dict(run.clickhouse["events_by_type"]) == run.truth["events_by_type"]
    # Typed tables: one row per TurnCompleted and per SessionStarted.
    turns, keys, ids, max_attempt = run.clickhouse["turns"][0]
    assert turns == keys == ids == run.truth["events_by_type"]["TurnCompleted"]
    assert turns == run.truth["turns"]["count"]
    assert max_attempt == 1  # the original stays, the retry collapses into it
    sessions, distinct, max_attempt = run.clickhouse["sessions"][0]
    assert sessions == distinct == run.truth["events_by_type"]["SessionStarted"]
    assert max_attempt == 1  # the original SessionStarted stays, not the retry
    # The demo's summary counts events by idempotency key, so a storm is not inflated.
    by_topic = {row[0]: row[2] for row in run.clickhouse["summary_events"]}
    misbehaving = len(_misbehaving_sessions())
    # The admin's profiles are signed into the tenant logs: the tenants topic stays empty.
    profiles = run.truth["tenants"]
    assert by_topic[f"{run.prefix}.sessions"] == (
        run.truth["session_events_total"] + misbehaving + profiles
    )
    assert f"{run.prefix}.tenants" not in by_topic
    records, ids, events = run.clickhouse["misbehaving_archive"][0]
    assert events == misbehaving
    sends, new_ids = (1, 1) if name == "single" else (RETRIES, 2)
    assert (records, ids) == (sends * misbehaving, new_ids * misbehaving)


@pytest.mark.parametrize("name", RUNS)
def test_tokens_and_cost_per_tenant_equal_the_truth(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    want = {
        tenant: (t["turns"], t["input_tokens"], t["output_tokens"], t["cost_usd_micros"])
        for tenant, t in run.truth["per_tenant"].items()
        if t["turns"]
    }
    assert {row[0]: row[1:] for row in run.clickhouse["per_tenant"]} == want
    by_day = {
        (tenant, day): cost
        for tenant, t in run.truth["per_tenant"].items()
        for day, cost in t["cost_usd_micros_by_day"].items()
    }
    assert {(t, d): c for t, d, c in run.clickhouse["cost_by_day"]} == by_day


@pytest.mark.parametrize("name", RUNS)
def test_sessions_and_latency_equal_the_truth(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    per_tier = run.truth["per_tier"]
    assert dict(run.clickhouse["sessions_per_tier"]) == {
        t: v["sessions"] for t, v in per_tier.items()
    }
    assert dict(run.clickhouse["sessions_per_tenant"]) == {
        **{t: v["sessions"] for t, v in run.truth["per_tenant"].items() if v["sessions"]},
        MISBEHAVING: 2,
    }
    for tier, turns, p95_latency, p95_first in run.clickhouse["latency_by_tier"]:
        assert turns == per_tier[tier]["turns"]
        assert p95_latency == per_tier[tier]["latency_ms_p95"]
        assert p95_first == per_tier[tier]["first_token_ms_p95"]


@pytest.mark.parametrize("name", RUNS)
def test_malformed_records_are_dead_lettered_once(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert dict(run.clickhouse["dead_letters"]) == {
        code: n for code, n in run.truth["malformed_sent"].items() if n
    }


def test_the_storm_leaves_the_same_rows(runs: dict[str, Run]) -> None:
    single, storm = runs["single"].clickhouse, runs["storm"].clickhouse
    # Row for row: same event_id, occurred_at and attempt as the single send.
    assert storm["turn_rows"] == single["turn_rows"]
    assert len(single["turn_rows"]) == runs["single"].truth["turns"]["count"]
    # The same for sessions: event_id, started_at and attempt of the original.
    assert storm["session_rows"] == single["session_rows"]
    sessions = runs["single"].truth["events_by_type"]["SessionStarted"] + 2  # + misbehaving
    assert len(single["session_rows"]) == sessions


def test_the_archive_keeps_every_record(runs: dict[str, Run]) -> None:
    truth = runs["single"].truth
    by_type = truth["events_by_type"]
    events = truth["events_total"]
    # Single send: one record, one event id, attempt 1 per event.
    assert runs["single"].clickhouse["archive_by_type"] == [
        (t, n, n) for t, n in sorted(by_type.items())
    ]
    assert runs["single"].clickhouse["archive_per_event"] == [(1, 1, [1], events)]
    # Storm: three records per event (original, redelivery, retry), two event ids.
    assert runs["storm"].clickhouse["archive_by_type"] == [
        (t, RETRIES * n, 2 * n) for t, n in sorted(by_type.items())
    ]
    assert runs["storm"].clickhouse["archive_per_event"] == [(3, 2, [1, 2], events)]


# --- the session processor: same decisions and states ------------------------------


# Every derived event is compared, the budget processor's included: the tenant
# profile join is by log time (streams/profiles.py), so the budget events do
# not depend on how fast each topic was read. (Before that join, two single
# sends of this log differed by one BudgetWarning.)
NOT_COMPARED: tuple[type[Event], ...] = ()


def _without_measurements(event: Event) -> dict[str, Any]:
    # evaluation_us is a measurement of each run's policy evaluation (not signed).
    exclude = {"evaluation_us"} if isinstance(event, PolicyDecided) else None
    return {"type": type(event).__name__, **event.model_dump(mode="json", exclude=exclude)}


def test_one_signed_decision_per_operation_in_both_runs(runs: dict[str, Run]) -> None:
    proposed = runs["single"].truth["tool_calls"]["proposed"] + 1  # + the misbehaving one
    assert proposed > 0

    def decisions(run: Run) -> set[tuple[str, str, str, str, str]]:
        found = run.of(PolicyDecided)
        assert len(found) == proposed, run.name  # nothing re-emitted for a retry
        assert len({d.operation_key for d in found}) == proposed, run.name
        return {
            (d.operation_key, d.event_id, d.decision, d.reason_code, d.signature) for d in found
        }

    single = decisions(runs["single"])
    assert decisions(runs["storm"]) == single
    assert {decision for _, _, decision, _, _ in single} >= {"allow", "deny"}, single


def test_each_retry_is_suppressed_once_and_redeliveries_silently(runs: dict[str, Run]) -> None:
    assert runs["single"].of(DuplicateSuppressed) == []
    storm = runs["storm"]
    records = storm.sent
    # The retries that reach the session processor: new event ids on the sessions topic.
    expected = {
        (records[i - 2].event.event_id, r.event.event_id)  # type: ignore[union-attr]
        for i, r in enumerate(records)
        if r.kind == "retry" and isinstance(r.event, SessionEvent)
    }
    assert all(records[i - 2].kind == "event" for i, r in enumerate(records) if r.kind == "retry")
    suppressed = storm.of(DuplicateSuppressed)
    session_events = storm.truth["session_events_total"] + len(_misbehaving_sessions())
    assert len(suppressed) == len(expected) == session_events
    assert {(d.original_event_id, d.duplicate_event_id) for d in suppressed} == expected
    assert {(d.original_attempt, d.duplicate_attempt) for d in suppressed} == {(1, 2)}


def test_retries_do_not_count_towards_quarantine(runs: dict[str, Run]) -> None:
    def rejections(run: Run) -> list[tuple[str, str, str, str | None]]:
        return sorted(
            (e.session_id, e.attempted, e.from_state, e.causation_id)
            for e in run.of(InvalidTransitionRejected)
        )

    single, storm = runs["single"], runs["storm"]
    assert rejections(storm) == rejections(single)
    by_session = Counter(session for session, *_ in rejections(single))
    # Two invalid completions, and three plus the proposal in the quarantined session.
    assert by_session == {TWICE: 2, THRICE: 4}
    for run in (single, storm):
        quarantined = [e.session_id for e in run.of(SessionQuarantined)]
        assert quarantined == [THRICE], run.name
        (late,) = [d for d in run.of(PolicyDecided) if d.session_id == THRICE]
        assert (late.decision, late.reason_code) == ("deny", "QUARANTINED"), run.name


def test_the_same_derived_events_apart_from_suppressions(runs: dict[str, Run]) -> None:
    single, storm = runs["single"], runs["storm"]

    def states(run: Run) -> Counter[str]:
        return Counter(
            json.dumps(_without_measurements(e), sort_keys=True, default=str)
            for e in run.derived
            if not isinstance(e, (DuplicateSuppressed, *NOT_COMPARED))
        )

    only_single = sorted((states(single) - states(storm)).elements())
    only_storm = sorted((states(storm) - states(single)).elements())
    assert not only_single and not only_storm, "\n".join(
        ["only in the single send:", *only_single, "only in the storm:", *only_storm]
    )


# --- the migration on tables 0001 filled -------------------------------------------

_UPGRADE = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from sql.client import Embedded
from sql.migrate import apply_migrations, load_migrations

root = Path(sys.argv[1])
ch = Embedded(root / "db", "upgrade")
def upto(version):
    folder = root / f"upto-{version}"
    folder.mkdir()
    for m in load_migrations():
        if m.version <= version:
            (folder / m.name).write_text(m.text)
    return apply_migrations(ch, folder)
first = upto(1)
at = datetime(2026, 11, 22, tzinfo=UTC)
old = ["event_id", "occurred_at", "tenant_id", "session_id", "workflow_id", "environment",
       "model", "prompt_version", "input_tokens", "output_tokens", "cost_usd_micros",
       "first_token_ms", "latency_ms", "outcome", "error_class", "attempt"]
def turn(event_id, attempt, seconds, cost):
    return [event_id, at + timedelta(seconds=seconds), "t-1", "s-1", None, "production",
            "gpt-4o", "v1", 10, 5, cost, 100, 200, "ok", None, attempt]
ch.insert("turns", [turn("e-1", 1, 0, 100), turn("e-2", 1, 1, 200)], old)
ch.insert("turns", [turn("e-1", 1, 0, 100)], old)  # a redelivery under 0001
old_s = ["session_id", "tenant_id", "workflow_id", "tier", "plan", "actor_id",
         "policy_version", "environment", "started_at", "event_id"]
def session(session_id, event_id, seconds):
    return [session_id, "t-1", None, "A", "team", "u-1", "v1", "production",
            at + timedelta(seconds=seconds), event_id]
# Under 0001 the SessionStarted inserted last stays: s-1's retry.
ch.insert("sessions", [session("s-1", "e-s1", 0), session("s-2", "e-s2", 1)], old_s)
ch.insert("sessions", [session("s-1", "e-s1r", 5)], old_s)
SESSIONS = ("SELECT session_id, event_id, toString(started_at), attempt FROM sessions FINAL"
            " ORDER BY session_id")
then = upto(2)
copied = ch.query(SESSIONS).rows
# After 0002: a retry (new event id, same key, later) and an old-style insert.
new = old + ["idempotency_key"]
ch.insert("turns", [turn("e-3", 1, 2, 300) + ["k-3"]], new)
ch.insert("turns", [turn("e-3r", 2, 3, 300) + ["k-3"]], new)
ch.insert("turns", [turn("e-4", 1, 4, 400)], old)
rows = ch.query("SELECT event_id, idempotency_key, attempt, cost_usd_micros FROM turns FINAL"
                " ORDER BY event_id").rows
new_s = old_s + ["attempt"]
ch.insert("sessions", [session("s-1", "e-s1", 0) + [1]], new_s)  # the original, sent again
ch.insert("sessions", [session("s-2", "e-s2r", 6) + [2]], new_s)  # a late retry
ch.insert("sessions", [session("s-3", "e-s3r", 7) + [2]], new_s)  # the retry first,
ch.insert("sessions", [session("s-3", "e-s3", 2) + [1]], new_s)  # then its original
ch.insert("sessions", [session("s-4", "e-s4", 3)], old_s)
sessions = ch.query(SESSIONS).rows
engines = dict(ch.query("SELECT name, engine_full FROM system.tables"
                        " WHERE database = 'upgrade'").rows)
print(json.dumps({"first": first, "then": then, "rows": rows, "copied": copied,
                  "sessions": sessions, "engines": engines}))
"""


def test_0002_rebuilds_filled_0001_turns_and_sessions(tmp_path: Path) -> None:
    # Its own process: chDB opens one data directory per process.
    result = subprocess.run(
        [sys.executable, "-c", _UPGRADE, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["first"] == ["0001_foundation.sql"]
    assert got["then"] == ["0002_first_attempt_wins.sql"]
    assert got["engines"]["turns"].startswith(
        "ReplacingMergeTree(first_attempt_version) ORDER BY (tenant_id, idempotency_key)"
    )
    assert got["engines"]["sessions"].startswith(
        "ReplacingMergeTree(first_attempt_version) ORDER BY (tenant_id, session_id)"
    )
    assert got["rows"] == [
        ["e-1", "e-1", 1, 100],  # 0001 rows keep their event id as the key
        ["e-2", "e-2", 1, 200],
        ["e-3", "k-3", 1, 300],  # the retry e-3r collapsed into its original
        ["e-4", "e-4", 1, 400],  # a writer without the column: keyed by event id
    ]
    # The rows 0001 showed, as attempt 1 (0001 did not store the attempt).
    assert got["copied"] == [
        ["s-1", "e-s1r", "2026-11-22 00:00:05.000000", 1],
        ["s-2", "e-s2", "2026-11-22 00:00:01.000000", 1],
    ]
    assert got["sessions"] == [
        ["s-1", "e-s1", "2026-11-22 00:00:00.000000", 1],  # the original replaced its retry
        ["s-2", "e-s2", "2026-11-22 00:00:01.000000", 1],  # a later retry does not win
        ["s-3", "e-s3", "2026-11-22 00:00:02.000000", 1],  # nor one that came first
        ["s-4", "e-s4", "2026-11-22 00:00:03.000000", 1],  # a writer without the column
    ]
