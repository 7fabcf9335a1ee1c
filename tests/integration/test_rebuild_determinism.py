"""Determinism: live memory state equals state rebuilt from offset zero, byte for byte.

A seeded fleet of more than 50,000 producer events (with 3% duplicates and
malformed records) goes through a real worker (all agents, exactly_once).
Then `govstream replay rebuild` folds the log into its own namespace and
compares every session-memory and tenant-memory key with the live tables'
changelogs: equal bytes, and the same ContextCompactionRequested events.

Then one live changelog value is overwritten with a tampered one: the
rebuild must exit 1 and name that key first.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.processes import WorkerProcess
from govstream.settings import as_environment
from govstream.simulate import FleetConfig
from projections.memory import canonical_json, policy_chain_ok
from streams.admission import partition_for
from streams.memory import SESSION_TABLE, changelog_topic
from streams.rebuild import rebuild
from tests.conftest import isolated_settings
from tests.kafka_io import read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLEET = FleetConfig(
    seed=50,
    tenants=12,
    sessions=3800,
    start=datetime(2026, 11, 20, tzinfo=UTC),
    duplicate_rate=0.03,
    malformed_rate=0.005,
)


def _cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govstream.cli", *args],
        cwd=REPO,
        env={**as_environment(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def _overwrite(bootstrap: str, topic: str, key: str, value: bytes, partitions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            value,
            key=json.dumps(key).encode(),
            partition=partition_for(key, partitions),
        )
    finally:
        await producer.stop()


def test_live_memory_equals_rebuilt_state_byte_for_byte(
    brokers: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("rebuild")
    bootstrap = brokers.bootstrap("local")
    # A low threshold so sessions request compaction, and the archive is not needed.
    settings = isolated_settings(
        base, bootstrap, None, compaction_threshold_tokens=6_000, backlog_interval_seconds=0
    )
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        asyncio.run(run_simulation(settings, FLEET, progress=False))
        started = time.monotonic()
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=400, which="processors"))
        time.sleep(2.0)
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=120, which="processors"))
        print(f"processors at zero lag after {time.monotonic() - started:.1f}s")

        result = _cli(settings, "replay", "rebuild", "--out", str(base / "ns"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "byte for byte" in result.stdout

        report = asyncio.run(rebuild(settings, bootstrap))
        assert not report.divergences
        topics = Topics(settings.topic_prefix)
        sessions_in = asyncio.run(read_topic(bootstrap, topics.sessions, timeout=60))
        assert len(sessions_in) >= 50_000
        assert report.keys[SESSION_TABLE] >= FLEET.sessions
        assert report.keys["tenant-memory"] == FLEET.tenants
        assert report.keys["compaction-requests"] > 0  # the threshold was passed, once each

        # The namespace holds the rebuilt state; the live changelog the same bytes.
        lines = (base / "ns" / f"{SESSION_TABLE}.jsonl").read_bytes().splitlines()
        rebuilt = {json.loads(line)["key"]: json.loads(line)["value"] for line in lines}
        assert len(rebuilt) == report.keys[SESSION_TABLE]
        broken = [k for k, v in rebuilt.items() if policy_chain_ok(v) is not None]
        assert broken == []
        compactions = Counter(
            s["compaction"] is not None for s in rebuilt.values() if s["turn_tokens"]
        )
        assert compactions[True] > 0

        # Tamper one live value: the rebuild must fail and name that key first.
        victim = sorted(rebuilt)[0]
        tampered = dict(rebuilt[victim], turn_tokens=rebuilt[victim]["turn_tokens"] + 1)
        asyncio.run(
            _overwrite(
                bootstrap,
                changelog_topic(settings, SESSION_TABLE),
                victim,
                canonical_json(tampered),
                settings.topic_partitions,
            )
        )
        result = _cli(settings, "replay", "rebuild", "--out", str(base / "ns2"))
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{SESSION_TABLE}/{victim}: $.turn_tokens" in result.stdout
    finally:
        worker.stop(timeout=10)
