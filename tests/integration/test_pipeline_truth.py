"""Simulated fleet -> real Kafka -> worker -> ClickHouse equals the ground truth.

The fleet carries duplicates (the same event sent twice) and malformed records
of every kind, so this one run checks exactness, idempotency and dead letters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.processes import WorkerProcess
from govstream.simulate import FleetConfig
from sql.client import ClickHouse, open_clickhouse
from tests.conftest import BACKENDS, Backend, isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def run(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, Any], ClickHouse]]:
    backend: Backend = request.param
    base: Path = tmp_path_factory.mktemp("truth")
    settings = isolated_settings(
        base,
        brokers.bootstrap(backend.kafka),
        clickhouse_servers.url(backend.clickhouse),
    )
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        config = FleetConfig(
            seed=11,
            tenants=6,
            sessions=400,
            start=datetime(2026, 11, 20, tzinfo=UTC),
            duplicate_rate=0.03,
            malformed_rate=0.01,
        )
        truth = asyncio.run(run_simulation(settings, config, progress=False))
        asyncio.run(wait_for_zero_lag(settings, settings.kafka_bootstrap or "", timeout=180))
        ch = open_clickhouse(settings, role="client")
        yield truth, ch
        ch.close()
    finally:
        worker.stop()


def test_fleet_had_duplicates_and_malformed_records(run: tuple[dict[str, Any], Any]) -> None:
    truth, _ = run
    assert truth["duplicates_sent"] > 0
    assert all(truth["malformed_sent"].get(code, 0) > 0 for code in (
        "bad_framing", "unknown_schema", "invalid_event",
    ))  # fmt: skip


def test_event_counts_per_type_equal_the_truth(run: tuple[dict[str, Any], ClickHouse]) -> None:
    truth, ch = run
    result = ch.query(
        # Producer records only: the archive also holds the derived topic.
        "SELECT event_type, uniqExact(event_id) FROM events_archive FINAL"
        " WHERE NOT endsWith(topic, '.derived') GROUP BY event_type"
    )
    assert dict(result.rows) == truth["events_by_type"]


def test_duplicates_leave_one_row(run: tuple[dict[str, Any], ClickHouse]) -> None:
    truth, ch = run
    turns, distinct = ch.query("SELECT count(), uniqExact(event_id) FROM turns FINAL").rows[0]
    assert turns == distinct == truth["turns"]["count"]


def test_tokens_and_cost_per_tenant_are_exact(run: tuple[dict[str, Any], ClickHouse]) -> None:
    truth, ch = run
    result = ch.query(
        "SELECT tenant_id, count(), sum(input_tokens), sum(output_tokens), sum(cost_usd_micros)"
        " FROM turns FINAL GROUP BY tenant_id"
    )
    got = {row[0]: tuple(row[1:]) for row in result.rows}
    want = {
        tenant: (t["turns"], t["input_tokens"], t["output_tokens"], t["cost_usd_micros"])
        for tenant, t in truth["per_tenant"].items()
        if t["turns"]
    }
    assert got == want
    # Cost to the cent, as dashboards show it.
    total_cents = ch.query("SELECT round(sum(cost_usd_micros) / 10000) FROM turns FINAL").rows[0][0]
    assert int(total_cents) == round(truth["turns"]["cost_usd_micros"] / 10_000)


def test_sessions_per_tier(run: tuple[dict[str, Any], ClickHouse]) -> None:
    truth, ch = run
    result = ch.query("SELECT tier, count() FROM sessions FINAL GROUP BY tier")
    assert dict(result.rows) == {tier: t["sessions"] for tier, t in truth["per_tier"].items()}


def test_p95_latency_by_tier_matches(run: tuple[dict[str, Any], ClickHouse]) -> None:
    truth, ch = run
    query = (Path(__file__).parents[2] / "sql/queries/summary_latency_by_tier.sql").read_text()
    result = ch.query(query)
    for tier, turns, p95_latency, p95_first in result.rows:
        assert turns == truth["per_tier"][tier]["turns"]
        assert p95_latency == truth["per_tier"][tier]["latency_ms_p95"]
        assert p95_first == truth["per_tier"][tier]["first_token_ms_p95"]


def test_malformed_records_are_dead_lettered_by_reason(
    run: tuple[dict[str, Any], ClickHouse],
) -> None:
    truth, ch = run
    result = ch.query("SELECT reason_code, count() FROM dead_letters FINAL GROUP BY reason_code")
    assert dict(result.rows) == truth["malformed_sent"]
