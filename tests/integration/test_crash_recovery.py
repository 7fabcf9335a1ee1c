"""Kill -9 the worker mid-stream, three times, then let it finish.

The log is sent first; the worker is killed at a random point while it is
sinking, restarted, killed again, and finally runs to the end. ClickHouse must
then equal the ground truth exactly (the sink is at-least-once into
idempotent tables), the session processor's decisions must be exactly one
per proposed operation (exactly_once plus deterministic event ids), and the
budget processor's tables must have charged every tenant's cost exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.codec import Codec
from events.models import PolicyDecided
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.processes import WorkerProcess
from govstream.simulate import FleetConfig
from sql.client import open_clickhouse
from tests.conftest import isolated_settings
from tests.kafka_io import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
OPERATOR_KEY = "drill-operator-key"


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _wait_for_records(worker: WorkerProcess, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            records = int(worker.health()["sink"]["records"])
        except Exception:  # still starting
            records = 0
        if records >= at_least:
            return records
        time.sleep(0.05)
    raise AssertionError(f"sink never reached {at_least} records: {worker.tail(5)}")


def _month_costs(
    url: str, tenants: list[str], expected: dict[str, int], timeout: float = 120
) -> dict[str, int]:
    """Tenant -> cost charged to its month balances, once it stops changing or matches."""
    deadline = time.monotonic() + timeout
    costs: dict[str, int] = {}
    while time.monotonic() < deadline:
        for tenant in tenants:
            reply = httpx.get(
                f"{url}/v1/budgets/{tenant}",
                headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
                timeout=10,
            )
            if reply.status_code != 200:
                break
            balances = reply.json()["balances"]
            costs[tenant] = sum(
                b["used"] for name, b in balances.items() if name.startswith("tenant_cost_month|")
            )
        if costs == expected:
            break
        time.sleep(1)
    return costs


def test_kill_9_three_times_then_totals_are_exact(local_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(
        tmp_path, local_bootstrap, sink_batch_size=2000, api_keys=f"{OPERATOR_KEY}:*"
    )
    config = FleetConfig(
        seed=23,
        tenants=8,
        sessions=1200,
        start=datetime(2026, 11, 21, tzinfo=UTC),
        duplicate_rate=0.02,
        malformed_rate=0.002,
    )
    truth: dict[str, Any] = asyncio.run(run_simulation(settings, config, progress=False))
    total = truth["records_sent"]
    rng = random.Random(99)

    sunk = 0
    for round_ in range(3):
        worker = WorkerProcess(settings, log_path=tmp_path / f"worker-{round_}.log")
        worker.wait_ready()
        # Kill somewhere in the part not yet sunk: mid-stream, mid-batch.
        target = rng.randint(1, max(2, (total - sunk) // 3))
        sunk_now = _wait_for_records(worker, target)
        decoders = _children_of(worker.proc.pid)
        worker.kill()
        sunk += sunk_now
        # The decoder processes notice their parent died and exit too.
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in decoders):
            assert time.monotonic() < deadline, "decoder processes outlived a killed worker"
            time.sleep(0.1)

    worker = WorkerProcess(settings, log_path=tmp_path / "worker-final.log")
    try:
        worker.wait_ready()
        asyncio.run(wait_for_zero_lag(settings, local_bootstrap, timeout=300))
        topics = Topics(settings.topic_prefix)
        produced = "topic IN ({sessions:String}, {tenants:String})"
        params = {"sessions": topics.sessions, "tenants": topics.tenants}
        with open_clickhouse(settings, role="client") as ch:
            by_type = dict(
                ch.query(
                    # The producer topics (sessions, tenants): the archive
                    # also holds the derived topic.
                    "SELECT event_type, uniqExact(event_id) FROM events_archive FINAL"
                    f" WHERE {produced} GROUP BY event_type",
                    params,
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
            archived = ch.query(
                f"SELECT count() FROM events_archive FINAL WHERE {produced}", params
            ).rows[0][0]
        # Wait for the processor too, then count its decisions.
        decisions: list[PolicyDecided] = []
        codec = Codec(EmbeddedRegistry())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            derived = asyncio.run(
                read_topic(local_bootstrap, Topics(settings.topic_prefix).derived)
            )
            decisions = [
                e
                for e in (codec.decode(r.value).event for r in derived)
                if isinstance(e, PolicyDecided)
            ]
            if len({d.event_id for d in decisions}) >= truth["tool_calls"]["proposed"]:
                break
            time.sleep(1)
        # The budget processor's tables: every tenant's month cost, charged once.
        expected_cost = {t: v["cost_usd_micros"] for t, v in truth["per_tenant"].items()}
        month_cost = _month_costs(worker.url, list(expected_cost), expected_cost)
    finally:
        worker.stop()

    assert by_type == truth["events_by_type"]
    assert per_tenant == {
        t: (v["turns"], v["cost_usd_micros"]) for t, v in truth["per_tenant"].items() if v["turns"]
    }
    assert dead == {k: v for k, v in truth["malformed_sent"].items() if v}
    # Every record of the log once, duplicates sent by the producer included.
    assert archived == total - sum(truth["malformed_sent"].values())
    assert month_cost == expected_cost
    # One decision per proposed operation: a re-delivery re-emits the same event id.
    assert len({d.event_id for d in decisions}) == truth["tool_calls"]["proposed"]
    assert len({d.operation_key for d in decisions}) == truth["tool_calls"]["proposed"]
