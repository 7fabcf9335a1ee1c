"""The simulated fleet: deterministic, self-consistent, valid on the wire.

The ground truth is checked by recounting it from the records with code
written independently of the generator's own bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from events.codec import HEADER, Codec, DecodeError
from events.jsonl import parse_lines
from events.models import (
    ApprovalRecorded,
    CheckpointCreated,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.registry import EmbeddedRegistry
from govstream.errors import UsageError
from govstream.simulate import (
    MALFORMED_CODES,
    PRODUCER,
    FleetConfig,
    SimRecord,
    Simulation,
    default_start,
    quantile_exact,
    simulate,
)
from projections.pricing import DEFAULT_PRICES, cost_usd_micros

START = datetime(2026, 3, 1, tzinfo=UTC)
TERMINAL = (SessionClosed, SessionFailed, SessionQuarantined)


def _config(**overrides: Any) -> FleetConfig:
    base: dict[str, Any] = {
        "seed": 11,
        "tenants": 6,
        "sessions": 300,
        "start": START,
        "duplicate_rate": 0.05,
        "malformed_rate": 0.03,
    }
    return FleetConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(_config())


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def _fingerprint(records: list[SimRecord]) -> list[tuple[Any, ...]]:
    return [
        (r.kind, r.key, r.raw, type(r.event).__name__, r.event.model_dump() if r.event else None)
        for r in records
    ]


def _by_session(sim: Simulation) -> dict[str, list[SessionEvent]]:
    sessions: dict[str, list[SessionEvent]] = defaultdict(list)
    for event in sim.unique_events():
        if isinstance(event, SessionEvent):
            sessions[event.session_id].append(event)
    return sessions


def _p(values: list[int], level: float) -> int:
    # Independent statement of ClickHouse quantileExact: floor(level * n) of sorted values.
    ordered = sorted(values)
    return ordered[math.floor(level * len(ordered))]


# --- determinism ----------------------------------------------------------------


def test_same_seed_same_records_and_truth(sim: Simulation) -> None:
    again = simulate(_config())
    assert _fingerprint(again.records) == _fingerprint(sim.records)
    assert again.truth == sim.truth


def test_different_seed_differs(sim: Simulation) -> None:
    other = simulate(_config(seed=12))
    assert _fingerprint(other.records) != _fingerprint(sim.records)
    assert other.truth["turns"] != sim.truth["turns"]
    ids = {e.event_id for e in sim.unique_events()}  # type: ignore[attr-defined]
    assert not ids & {e.event_id for e in other.unique_events()}  # type: ignore[attr-defined]


def test_different_start_shifts_time_only_where_asked(sim: Simulation) -> None:
    later = simulate(_config(start=START + timedelta(days=3)))
    assert later.truth["start"] != sim.truth["start"]
    assert min(e.occurred_at for e in later.unique_events()) >= START + timedelta(days=3)  # type: ignore[attr-defined]


def test_noise_leaves_the_valid_events_unchanged(sim: Simulation) -> None:
    clean = simulate(_config(duplicate_rate=0.0, malformed_rate=0.0))
    assert clean.unique_events() == sim.unique_events()
    assert clean.truth["turns"] == sim.truth["turns"]
    assert clean.truth["per_tenant"] == sim.truth["per_tenant"]


# --- truth equals a recount -------------------------------------------------------


def test_truth_is_json_able(sim: Simulation) -> None:
    assert json.loads(json.dumps(sim.truth)) == sim.truth


def test_truth_counts_match_the_records(sim: Simulation) -> None:
    truth = sim.truth
    kinds = Counter(r.kind for r in sim.records)
    unique = [r.event for r in sim.records if r.kind == "event"]
    assert truth["records_sent"] == len(sim.records)
    assert truth["events_total"] == len(unique) == kinds["event"]
    assert truth["events_by_type"] == dict(Counter(type(e).__name__ for e in unique))
    assert truth["session_events_total"] == sum(isinstance(e, SessionEvent) for e in unique)
    assert truth["session_events_total"] == truth["events_total"] - truth["tenants"]
    assert truth["duplicates_sent"] == kinds["duplicate"] > 0
    assert truth["malformed_sent"] == {code: kinds[code] for code in MALFORMED_CODES}
    assert all(n > 0 for n in truth["malformed_sent"].values())
    # Each malformed kind comes in turn, so the counts differ by at most one.
    counts = list(truth["malformed_sent"].values())
    assert max(counts) - min(counts) <= 1
    assert truth["events_by_type"]["SessionStarted"] == truth["sessions"] == 300
    assert truth["events_by_type"]["TenantProfileUpdated"] == truth["tenants"] == 6


def test_truth_sums_match_the_records(sim: Simulation) -> None:
    truth = sim.truth
    turns = [e for e in sim.unique_events() if isinstance(e, TurnCompleted)]
    assert truth["turns"]["count"] == len(turns)
    assert truth["turns"]["input_tokens"] == sum(t.input_tokens for t in turns)
    assert truth["turns"]["output_tokens"] == sum(t.output_tokens for t in turns)
    assert truth["turns"]["cost_usd_micros"] == sum(t.cost_usd_micros for t in turns)
    assert truth["turns"]["by_outcome"] == {
        o: sum(t.outcome == o for t in turns) for o in ("ok", "error", "timeout", "cancelled")
    }

    plans = {
        e.tenant_id: e.plan for e in sim.unique_events() if isinstance(e, TenantProfileUpdated)
    }
    per_tenant: dict[str, Counter[str]] = defaultdict(Counter)
    for e in sim.unique_events():
        if isinstance(e, SessionStarted):
            per_tenant[e.tenant_id]["sessions"] += 1
        elif isinstance(e, TurnCompleted):
            c = per_tenant[e.tenant_id]
            c["turns"] += 1
            c["input_tokens"] += e.input_tokens
            c["output_tokens"] += e.output_tokens
            c["cost_usd_micros"] += e.cost_usd_micros
    assert set(truth["per_tenant"]) == set(plans)
    for tenant_id, row in truth["per_tenant"].items():
        assert row["plan"] == plans[tenant_id]
        for field in ("sessions", "turns", "input_tokens", "output_tokens", "cost_usd_micros"):
            assert row[field] == per_tenant[tenant_id][field], (tenant_id, field)
        assert sum(row["cost_usd_micros_by_day"].values()) == row["cost_usd_micros"]

    per_model: dict[str, Counter[str]] = defaultdict(Counter)
    for t in turns:
        per_model[t.model]["turns"] += 1
        per_model[t.model]["cost_usd_micros"] += t.cost_usd_micros
    assert set(truth["per_model"]) == set(per_model)
    for model, row in truth["per_model"].items():
        assert row["turns"] == per_model[model]["turns"]
        assert row["cost_usd_micros"] == per_model[model]["cost_usd_micros"]


def test_truth_per_tier_matches_the_records(sim: Simulation) -> None:
    tier_of = {e.session_id: e.tier for e in sim.unique_events() if isinstance(e, SessionStarted)}
    latencies: dict[str, list[int]] = defaultdict(list)
    first: dict[str, list[int]] = defaultdict(list)
    for e in sim.unique_events():
        if isinstance(e, TurnCompleted):
            latencies[tier_of[e.session_id]].append(e.latency_ms)
            first[tier_of[e.session_id]].append(e.first_token_ms)
    for tier, row in sim.truth["per_tier"].items():
        assert row["sessions"] == sum(t == tier for t in tier_of.values())
        assert row["turns"] == len(latencies[tier])
        assert row["latency_ms_p95"] == _p(latencies[tier], 0.95)
        assert row["first_token_ms_p95"] == _p(first[tier], 0.95)
        assert row["latency_ms_p50"] == _p(latencies[tier], 0.5)
        assert row["latency_ms_p99"] == _p(latencies[tier], 0.99)
    # Tier C (async, bigger prompts) is the slow one.
    tiers = sim.truth["per_tier"]
    assert tiers["C"]["first_token_ms_p50"] > tiers["A"]["first_token_ms_p50"]


def test_quantile_exact_is_clickhouses_formula() -> None:
    values = list(range(1, 101))  # x[k] = k + 1
    assert quantile_exact(values, 0.95) == 96  # x[floor(95.0)]
    assert quantile_exact(values, 0.5) == 51
    assert quantile_exact(list(range(1, 21)), 0.95) == 20  # x[19]
    assert quantile_exact(list(range(1, 11)), 0.95) == 10  # x[9]
    assert quantile_exact([5], 0.95) == 5
    assert quantile_exact([1, 2, 3], 1.0) == 3
    assert quantile_exact([], 0.95) is None


# --- shape of sessions ------------------------------------------------------------


def test_tenant_profiles_come_first_one_per_tenant(sim: Simulation) -> None:
    events = sim.unique_events()
    profiles = [e for e in events if isinstance(e, TenantProfileUpdated)]
    assert [p.tenant_id for p in profiles] == [f"t-{i:03d}" for i in range(6)]
    assert all(isinstance(e, TenantProfileUpdated) for e in events[:6])
    for p in profiles:
        assert p.plan in ("free", "team", "enterprise")
        assert p.budgets.tokens_per_session is not None
        assert p.tool_permissions and p.egress_allowlist


def test_send_order_is_by_time_and_keeps_each_session_in_order(sim: Simulation) -> None:
    times = [e.occurred_at for e in sim.unique_events()]  # type: ignore[attr-defined]
    assert times == sorted(times)
    span_end = START + timedelta(hours=24)
    for session_id, events in _by_session(sim).items():
        assert isinstance(events[0], SessionStarted)
        assert isinstance(events[-1], TERMINAL)
        assert sum(isinstance(e, TERMINAL) for e in events) == 1
        stamps = [e.occurred_at for e in events]
        assert all(a < b for a, b in pairwise(stamps)), session_id
        assert stamps[0] >= START and stamps[-1] < span_end
        # Causation chain, stable idempotency keys, one correlation id per session.
        assert events[0].causation_id is None
        for prev, cur in pairwise(events):
            assert cur.causation_id == prev.event_id
        assert [e.idempotency_key for e in events] == [
            f"{session_id}:{i}" for i in range(len(events))
        ]
        assert len({e.correlation_id for e in events}) == 1
        assert len({e.workflow_id for e in events}) == 1
        assert len({e.tenant_id for e in events}) == 1
        for e in events:
            assert (e.attempt, e.producer, e.environment) == (1, PRODUCER, "production")


def test_ids_and_idempotency_keys_are_unique(sim: Simulation) -> None:
    events = sim.unique_events()
    assert len({e.event_id for e in events}) == len(events)  # type: ignore[attr-defined]
    assert len({e.idempotency_key for e in events}) == len(events)  # type: ignore[attr-defined]


def test_turns_are_plausible_and_priced(sim: Simulation) -> None:
    turns = [e for e in sim.unique_events() if isinstance(e, TurnCompleted)]
    outcomes = Counter(t.outcome for t in turns)
    assert outcomes["ok"] / len(turns) > 0.85
    assert outcomes["error"] > 0
    for t in turns:
        assert t.first_token_ms < t.latency_ms
        assert t.input_tokens <= 20_000 and t.output_tokens <= 4_000
        assert t.cost_usd_micros == cost_usd_micros(
            DEFAULT_PRICES, t.model, t.input_tokens, t.output_tokens
        )
        if t.outcome == "ok":
            assert t.input_tokens >= 200 and t.output_tokens >= 50 and t.error_class is None
        if t.outcome == "error":
            assert t.error_class


def test_tool_calls_follow_the_protocol(sim: Simulation) -> None:
    seen_approval = False
    for events in _by_session(sim).values():
        for i, e in enumerate(events):
            if not isinstance(e, ToolCallProposed):
                continue
            following = events[i + 1 : i + 3]
            approval = next((x for x in following if isinstance(x, ApprovalRecorded)), None)
            done = next(x for x in following if isinstance(x, ToolCallCompleted))
            assert done.operation_key == e.operation_key
            if approval is not None:
                seen_approval = True
                assert e.risk_level in ("high", "critical")
                assert approval.operation_key == e.operation_key
                assert events[i + 1] is approval and events[i + 2] is done
                if not approval.granted:
                    assert done.status == "rejected"
            else:
                assert events[i + 1] is done
        # Every completion answers a proposal of the same session.
        proposed = {e.operation_key for e in events if isinstance(e, ToolCallProposed)}
        completed = [e.operation_key for e in events if isinstance(e, ToolCallCompleted)]
        assert sorted(completed) == sorted(proposed)
    assert seen_approval


def test_suspensions_are_checkpointed_and_resumed(sim: Simulation) -> None:
    suspended = 0
    for events in _by_session(sim).values():
        for i, e in enumerate(events):
            if isinstance(e, SessionSuspended):
                suspended += 1
                assert isinstance(events[i - 1], CheckpointCreated)
                assert isinstance(events[i + 1], SessionResumed)
    assert suspended > 0


def test_workflows_group_a_few_sessions_of_one_tenant(sim: Simulation) -> None:
    starts = [e for e in sim.unique_events() if isinstance(e, SessionStarted)]
    with_wf = [s for s in starts if s.workflow_id]
    assert 0.6 < len(with_wf) / len(starts) < 0.8
    members: dict[str, set[str]] = defaultdict(set)
    sizes: Counter[str] = Counter()
    for s in with_wf:
        members[s.workflow_id].add(s.tenant_id)  # type: ignore[index]
        sizes[s.workflow_id] += 1  # type: ignore[index]
    assert all(len(tenants) == 1 for tenants in members.values())
    assert max(sizes.values()) > 1 and max(sizes.values()) <= 4
    assert sim.truth["workflows"] == len(sizes)


def test_session_plan_matches_its_tenant(sim: Simulation) -> None:
    plans = {
        e.tenant_id: e.plan for e in sim.unique_events() if isinstance(e, TenantProfileUpdated)
    }
    for e in sim.unique_events():
        if isinstance(e, SessionStarted):
            assert e.plan == plans[e.tenant_id]


# --- the wire ---------------------------------------------------------------------


def test_every_event_validates_and_round_trips(sim: Simulation, codec: Codec) -> None:
    for event in sim.unique_events():
        model = type(event)
        assert model.model_validate(event.model_dump()) == event
        assert model.model_validate_json(event.model_dump_json()) == event
        decoded = codec.decode(codec.encode(event))
        assert decoded.event == event
        assert decoded.schema_id == codec.schema_id_of(model.__name__)


def test_duplicates_are_the_same_event_right_after(sim: Simulation, codec: Codec) -> None:
    for prev, record in pairwise(sim.records):
        if record.kind == "duplicate":
            assert prev.kind == "event" and record.event is prev.event
            assert record.key == prev.key
            assert isinstance(record.event, BaseModel)
            assert codec.encode(record.event) == codec.encode(prev.event)  # type: ignore[arg-type]


def test_malformed_records_fail_with_their_reason_code(sim: Simulation, codec: Codec) -> None:
    tenants = {r.event.tenant_id for r in sim.records if r.event is not None}  # type: ignore[attr-defined]
    bad = [r for r in sim.records if r.event is None]
    assert {r.kind for r in bad} == set(MALFORMED_CODES)
    for record in bad:
        # Keyed by a tenant: on the partition of the tenant log it would belong to.
        assert record.raw is not None and record.key in tenants
        with pytest.raises(DecodeError) as info:
            codec.decode(record.raw)
        assert info.value.code == record.kind, info.value
        if record.kind == "invalid_event":
            _, schema_id = HEADER.unpack_from(record.raw)
            assert schema_id == codec.schema_id_of("TurnCompleted")
            # Framing and Avro are fine: only the model's constraints fail.
            codec.decode_raw(record.raw)


def test_rates_zero_mean_no_noise() -> None:
    clean = simulate(_config(sessions=50, duplicate_rate=0.0, malformed_rate=0.0))
    assert {r.kind for r in clean.records} == {"event"}
    assert clean.truth["duplicates_sent"] == 0
    assert clean.truth["malformed_sent"] == dict.fromkeys(MALFORMED_CODES, 0)
    assert clean.truth["records_sent"] == clean.truth["events_total"]


def test_rate_one_duplicates_everything() -> None:
    noisy = simulate(_config(sessions=20, duplicate_rate=1.0, malformed_rate=1.0))
    total = noisy.truth["events_total"]
    assert noisy.truth["duplicates_sent"] == total
    assert sum(noisy.truth["malformed_sent"].values()) == total
    assert noisy.truth["records_sent"] == 3 * total


@pytest.mark.parametrize(
    "bad",
    [
        {"tenants": 0},
        {"sessions": 0},
        {"duplicate_rate": -0.1},
        {"malformed_rate": 1.5},
        {"duplicate_rate": float("nan")},
        {"span": timedelta(0)},
        {"start": datetime(2026, 1, 1)},  # naive
        {"environment": ""},
    ],
)
def test_fleet_config_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _config(**bad)


def test_default_start_is_yesterday_midnight_utc() -> None:
    now = datetime(2026, 5, 17, 13, 45, tzinfo=UTC)
    assert default_start(now) == datetime(2026, 5, 16, tzinfo=UTC)


def test_default_fleet_generates_quickly() -> None:
    started = time.perf_counter()
    fleet = simulate(FleetConfig(seed=7, start=START))
    elapsed = time.perf_counter() - started
    truth = fleet.truth
    print(
        f"\ndefault fleet: {truth['events_total']} events, {truth['turns']['count']} turns, "
        f"generated in {elapsed:.2f}s"
    )
    assert truth["sessions"] == 2000 and truth["tenants"] == 20
    assert elapsed < 60  # the target is < 5 s; only a gross regression fails here


# --- the command (no Kafka) -------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    from govstream.commands import simulate as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duplicate-rate", "-0.1"], "--duplicate-rate"),
        (["--malformed-rate", "1.01"], "--malformed-rate"),
        (["--sessions", "0"], "--sessions"),
        (["--tenants", "-3"], "--tenants"),
        (["--span-hours", "0"], "--span-hours"),
        (["--start", "yesterday"], "--start"),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], message: str) -> None:
    from govstream.commands.simulate import config_from_args

    with pytest.raises(UsageError, match=message) as info:
        config_from_args(_args(*argv))
    assert "\n" not in str(info.value)


def test_flags_become_a_config() -> None:
    from govstream.commands.simulate import config_from_args

    config = config_from_args(
        _args(
            "--seed",
            "3",
            "--tenants",
            "4",
            "--sessions",
            "9",
            "--start",
            "2026-02-03",
            "--span-hours",
            "2",
            "--duplicate-rate",
            "0.1",
        )
    )
    assert config == FleetConfig(
        seed=3,
        tenants=4,
        sessions=9,
        start=datetime(2026, 2, 3, tzinfo=UTC),
        span=timedelta(hours=2),
        duplicate_rate=0.1,
    )
    offset = config_from_args(_args("--start", "2026-02-03T01:00:00+01:00"))
    assert offset.start == datetime(2026, 2, 3, tzinfo=UTC)
    assert config_from_args(_args()).start == default_start()


def test_run_simulation_writes_jsonl_and_truth(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from govstream.commands.simulate import run_simulation
    from govstream.settings import load

    settings = load(home=tmp_path / "home")
    config = _config(sessions=40, tenants=3)
    out = tmp_path / "fleet.jsonl"
    truth = asyncio.run(run_simulation(settings, config, out=out, progress=False))
    expected = simulate(config)

    lines = out.read_text().splitlines()
    events, errors = parse_lines(lines)
    assert errors == []
    assert events == [r.event for r in expected.records if r.event is not None]
    skipped = sum(expected.truth["malformed_sent"].values())
    assert len(lines) == expected.truth["records_sent"] - skipped
    assert truth["records_sent"] == len(lines)
    assert truth["malformed_sent"] == dict.fromkeys(MALFORMED_CODES, 0)
    assert truth["malformed_skipped"] == expected.truth["malformed_sent"]
    assert json.loads((tmp_path / "home" / "truth.json").read_text()) == truth

    captured = capsys.readouterr()
    assert f"skipped {skipped} malformed records" in captured.err
    final = captured.out.strip().splitlines()[-1]
    assert f"{len(lines)} records" in final and "rec/s" in final


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_send_simulation_keeps_the_order(sim: Simulation, codec: Codec) -> None:
    from events.emitter import Emitter
    from govstream.commands.simulate import send_simulation

    async def run() -> tuple[dict[str, int], list[tuple[str, bytes | None, bytes]], list[int]]:
        emitter = Emitter("127.0.0.1:1", registry=EmbeddedRegistry())
        producer = _FakeProducer()
        emitter._producer = producer  # type: ignore[assignment]
        progress: list[int] = []
        counts = await send_simulation(emitter, sim, progress.append, window=500)
        return counts, producer.sent, progress

    counts, sent, progress = asyncio.run(run())
    assert len(sent) == len(sim.records) == counts["records"]
    assert progress[-1] == len(sim.records)
    assert counts["events"] == sim.truth["events_total"]
    assert counts["duplicates"] == sim.truth["duplicates_sent"]
    assert counts["malformed"] == sum(sim.truth["malformed_sent"].values())
    for record, (topic, key, value) in zip(sim.records, sent, strict=True):
        assert key == record.key.encode()
        if record.event is None:
            assert (topic, value) == ("govstream.sessions", record.raw)
        else:
            tenant = isinstance(record.event, TenantProfileUpdated)
            assert topic == ("govstream.tenants" if tenant else "govstream.sessions")
            assert value == codec.encode(record.event)


def test_the_admin_signs_profiles_into_the_tenant_log(codec: Codec) -> None:
    """With the deployment's signer a profile goes, signed, to the tenant's log (folded
    where it was written); without one to the tenants topic, for the worker to relay."""
    from events.emitter import Emitter
    from tests.factories import SIGNER, tenant_profile

    profile = tenant_profile(tenant_id="t-7")

    async def prepare(signer: object) -> tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]:
        emitter = Emitter("127.0.0.1:1", registry=EmbeddedRegistry(), signer=signer)  # type: ignore[arg-type]
        return emitter.prepare(profile)

    topic, key, value, headers = asyncio.run(prepare(SIGNER))
    assert (topic, key, value) == ("govstream.sessions", b"t-7", codec.encode(profile))
    assert headers is not None and SIGNER.signed_by_worker(headers, key, value)
    unsigned = asyncio.run(prepare(None))
    assert unsigned[0] == "govstream.tenants" and unsigned[3] is None
