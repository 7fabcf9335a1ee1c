"""The simulator's retry storm (`retries=N`, `govstream simulate --retries N`).

Every valid event is sent N times: the original, then alternately an exact
redelivery and a runtime retry (same idempotency key, new event id, next
attempt). The storm adds records, never facts: the valid events, the noise
and the ground truth stay what a single send gives.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.codec import Codec
from events.jsonl import parse_lines
from events.models import Event, SessionEvent, TenantProfileUpdated
from events.registry import EmbeddedRegistry
from govstream.cli import build_parser
from govstream.errors import UsageError
from govstream.simulate import (
    MALFORMED_CODES,
    MAX_RETRIES,
    RETRY_NAMESPACE,
    FleetConfig,
    SimRecord,
    Simulation,
    retry_event_id,
    simulate,
)

START = datetime(2026, 3, 1, tzinfo=UTC)
ENVELOPE_CHANGES = {"event_id", "attempt", "occurred_at"}


def _config(**overrides: Any) -> FleetConfig:
    base: dict[str, Any] = {
        "seed": 5,
        "tenants": 4,
        "sessions": 120,
        "start": START,
        "duplicate_rate": 0.0,
        "malformed_rate": 0.03,
    }
    return FleetConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def single() -> Simulation:
    return simulate(_config())


@pytest.fixture(scope="module")
def storm() -> Simulation:
    return simulate(_config(retries=3))


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


def _wire(records: list[SimRecord], codec: Codec) -> list[tuple[str, str, bytes]]:
    """What goes on the wire: (kind, key, bytes) per record."""
    return [
        (r.kind, r.key, codec.encode(r.event) if r.event is not None else r.raw)  # type: ignore[arg-type, misc]
        for r in records
    ]


def _groups(sim: Simulation) -> list[list[SimRecord]]:
    """The records split at each original event: [event, its copies..., noise...]."""
    groups: list[list[SimRecord]] = []
    for record in sim.records:
        if record.kind == "event":
            groups.append([])
        groups[-1].append(record)
    return groups


# --- determinism and truth --------------------------------------------------------


def test_same_seed_same_bytes(storm: Simulation, codec: Codec) -> None:
    again = simulate(_config(retries=3))
    assert _wire(again.records, codec) == _wire(storm.records, codec)


@pytest.mark.parametrize("retries", [2, 3, 4, 7])
def test_truth_does_not_change_with_retries(single: Simulation, retries: int) -> None:
    assert simulate(_config(retries=retries)).truth == single.truth


def test_truth_is_unchanged_with_duplicates_too() -> None:
    noisy = _config(duplicate_rate=0.05)
    assert simulate(noisy).truth == simulate(_config(duplicate_rate=0.05, retries=3)).truth


def test_without_the_copies_the_storm_is_the_single_send(
    single: Simulation, storm: Simulation, codec: Codec
) -> None:
    # Valid events and noise (malformed records) are byte for byte a single send's.
    originals = [r for r in storm.records if r.kind not in ("redelivery", "retry")]
    assert _wire(originals, codec) == _wire(single.records, codec)
    assert storm.unique_events() == single.unique_events()


def test_records_are_three_per_event_plus_malformed(storm: Simulation) -> None:
    truth = storm.truth
    events = truth["events_total"]
    malformed = sum(truth["malformed_sent"].values())
    assert malformed > 0
    assert len(storm.records) == 3 * events + malformed
    kinds = Counter(r.kind for r in storm.records)
    assert kinds["event"] == kinds["redelivery"] == kinds["retry"] == events
    assert {code: kinds[code] for code in MALFORMED_CODES} == truth["malformed_sent"]
    # The truth's records_sent counts one send: retries are not new facts.
    assert truth["records_sent"] == events + malformed


def test_duplicates_are_not_multiplied() -> None:
    sim = simulate(_config(duplicate_rate=0.1, retries=3))
    kinds = Counter(r.kind for r in sim.records)
    assert kinds["duplicate"] == sim.truth["duplicates_sent"] > 0
    assert len(sim.records) == 3 * kinds["event"] + kinds["duplicate"] + sum(
        sim.truth["malformed_sent"].values()
    )


# --- the shape of each storm --------------------------------------------------------


def test_original_redelivery_retry_then_noise(storm: Simulation, codec: Codec) -> None:
    profiles = 0
    for group in _groups(storm):
        original, redelivery, retry, *noise = group
        assert [r.kind for r in group[:3]] == ["event", "redelivery", "retry"]
        assert all(r.event is None and r.kind in MALFORMED_CODES for r in noise)
        assert len(noise) <= 1  # malformed records are not multiplied
        first, again, later = original.event, redelivery.event, retry.event
        assert isinstance(first, Event) and isinstance(later, Event)
        assert original.key == redelivery.key == retry.key
        # The redelivery: the same bytes, the same event_id.
        assert again is first
        assert codec.encode(again) == codec.encode(first)  # type: ignore[arg-type]
        # The retry: same operation, a new deterministic event_id, attempt 2, later.
        assert later.idempotency_key == first.idempotency_key
        assert later.event_id == retry_event_id(first.event_id, 2) != first.event_id
        assert later.event_id == str(uuid.uuid5(RETRY_NAMESPACE, f"{first.event_id}/attempt/2"))
        assert (first.attempt, later.attempt) == (1, 2)
        assert later.occurred_at > first.occurred_at
        assert later.model_dump(exclude=ENVELOPE_CHANGES) == first.model_dump(
            exclude=ENVELOPE_CHANGES
        )
        # It is a valid event on the wire.
        assert codec.decode(codec.encode(later)).event == later
        profiles += isinstance(first, TenantProfileUpdated)
        if isinstance(first, SessionEvent):
            assert retry.key == first.tenant_id  # the tenant log is keyed by tenant
    assert profiles == storm.truth["tenants"]  # tenant profiles are retried too


def test_more_retries_alternate_redelivery_and_new_attempts() -> None:
    sim = simulate(_config(sessions=10, malformed_rate=0.0, retries=6))
    groups = _groups(sim)
    assert len(groups) == sim.truth["events_total"]
    for group in groups:
        assert [r.kind for r in group] == [
            "event", "redelivery", "retry", "redelivery", "retry", "redelivery",
        ]  # fmt: skip
        events = [r.event for r in group]
        original = events[0]
        assert isinstance(original, Event)
        # Each redelivery repeats the attempt sent just before it.
        assert events[1] is events[0] and events[3] is events[2] and events[5] is events[4]
        attempts = [e.attempt for e in events]  # type: ignore[union-attr]
        assert attempts == [1, 1, 2, 2, 3, 3]
        assert [e.event_id for e in events[::2]] == [  # type: ignore[union-attr]
            original.event_id,
            retry_event_id(original.event_id, 2),
            retry_event_id(original.event_id, 3),
        ]
        times = [e.occurred_at for e in events[::2]]  # type: ignore[union-attr]
        assert times == sorted(times) and len(set(times)) == 3
        assert {e.idempotency_key for e in events} == {original.idempotency_key}  # type: ignore[union-attr]


def test_retry_ids_are_unique_across_the_fleet(storm: Simulation) -> None:
    ids = [r.event.event_id for r in storm.records if r.kind in ("event", "retry")]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)) == 2 * storm.truth["events_total"]


# --- configuration and the command --------------------------------------------------


@pytest.mark.parametrize("retries", [0, -1, 1001])
def test_fleet_config_rejects_bad_retries(retries: int) -> None:
    with pytest.raises(ValueError, match="retries"):
        _config(retries=retries)


def _args(*argv: str) -> Any:
    return build_parser().parse_args(["simulate", *argv])


def test_retries_flag_becomes_the_config() -> None:
    from govstream.commands.simulate import config_from_args

    assert config_from_args(_args("--start", "2026-03-01")).retries == 1
    assert config_from_args(_args("--start", "2026-03-01", "--retries", "3")).retries == 3


@pytest.mark.parametrize("value", ["0", "-2", "1001"])
def test_bad_retries_is_a_one_line_usage_error(value: str) -> None:
    from govstream.commands.simulate import config_from_args

    with pytest.raises(UsageError, match="--retries") as info:
        config_from_args(_args("--retries", value))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "message"), [("0", "--retries"), ("three", "--retries")])
def test_bad_retries_on_the_command_line_exits_2(value: str, message: str) -> None:
    argv = ["simulate", "--retries", value, "--out", "/dev/null"]
    result = subprocess.run(
        [sys.executable, "-m", "govstream.cli", *argv],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_simulation_writes_the_storm_and_the_same_truth(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from govstream.commands.simulate import run_simulation
    from govstream.settings import load

    settings = load(home=tmp_path / "home")
    config = _config(sessions=30, tenants=3, retries=3)
    out = tmp_path / "storm.jsonl"
    truth = asyncio.run(run_simulation(settings, config, out=out, progress=False))
    plain = asyncio.run(
        run_simulation(
            settings, _config(sessions=30, tenants=3), out=tmp_path / "one.jsonl", progress=False
        )
    )
    assert truth == {**plain, "sink": truth["sink"]}

    events, errors = parse_lines(out.read_text().splitlines())
    assert errors == []
    expected = simulate(config)
    assert events == [r.event for r in expected.records if r.event is not None]
    assert len(events) == 3 * truth["events_total"]
    assert json.loads((tmp_path / "home" / "truth.json").read_text()) == plain
    final = capsys.readouterr().out.strip().splitlines()
    storm_line = final[1]  # run 1: "ground truth: ...", then the summary
    n = truth["events_total"]
    assert f"{3 * n} records ({n} events, 0 duplicates, {n} redeliveries, {n} retries" in (
        storm_line
    )


def test_the_most_retries_stay_valid() -> None:
    sim = simulate(_config(sessions=1, tenants=1, malformed_rate=0.0, retries=MAX_RETRIES))
    (first, *rest) = _groups(sim)[0]
    assert len(rest) == MAX_RETRIES - 1
    last = rest[-1].event
    assert isinstance(last, Event) and isinstance(first.event, Event)
    assert last.attempt == MAX_RETRIES // 2  # within the envelope's attempt limit
    assert last.occurred_at > first.event.occurred_at
