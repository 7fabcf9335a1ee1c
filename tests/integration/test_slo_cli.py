"""`govstream slo` over embedded ClickHouse: counts equal the Python reference, alerts fire right.

A crafted fleet in the `turns`, `sessions` and `events_archive` tables (no
Kafka needed: this is about the SQL and the evaluation): three healthy
tenants and one with an incident (30% of its turns failing for the last hour),
one tenant spending its daily budget too fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from govstream.commands.slo import read_budgets, read_scopes
from govstream.settings import Settings, as_environment
from projections.slo import load_slo, slo_status, tally_turns
from sql.client import open_clickhouse
from sql.migrate import apply_migrations

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
TENANTS = {"t-ok-1": "A", "t-ok-2": "A", "t-ok-3": "B", "t-incident": "A"}


def _turns(tenant: str) -> list[tuple[datetime, str, int]]:
    """Three turns a minute for 6 hours; the incident tenant fails 3 minutes in 10 in the
    last hour. Enough turns for the burn rules' minimum event count."""
    turns = []
    for minute in range(360):
        for k in range(3):
            at = NOW - timedelta(minutes=minute, seconds=10 + 20 * k)
            failing = tenant == "t-incident" and minute < 60 and minute % 10 < 3
            outcome = "error" if failing else ("cancelled" if minute % 97 == 5 else "ok")
            latency = 2500 if minute % 50 == 7 else 800  # a few slow turns everywhere
            turns.append((at, outcome, latency))
    return turns


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("slo")
    settings = Settings(home=home, clickhouse_database="slo_test")
    with open_clickhouse(settings, role="owner") as ch:
        apply_migrations(ch)
        sessions, turns = [], []
        for tenant, tier in TENANTS.items():
            sid = f"s-{tenant}"
            sessions.append((sid, tenant, "wf-1", tier, "team", "u", "v1", "production",
                             NOW - timedelta(hours=7), f"e-{sid}"))  # fmt: skip
            for n, (at, outcome, latency) in enumerate(_turns(tenant)):
                turns.append((f"e-{tenant}-{n}", at, tenant, sid, "wf-1", "production", "gpt-4o",
                              "v1", 100, 50, 2_000, 100, latency, outcome, None, 1,
                              f"k-{tenant}-{n}"))  # fmt: skip
        ch.insert("sessions", sessions, ["session_id", "tenant_id", "workflow_id", "tier",
                  "plan", "actor_id", "policy_version", "environment", "started_at",
                  "event_id"])  # fmt: skip
        ch.insert("turns", turns, ["event_id", "occurred_at", "tenant_id", "session_id",
                  "workflow_id", "environment", "model", "prompt_version", "input_tokens",
                  "output_tokens", "cost_usd_micros", "first_token_ms", "latency_ms", "outcome",
                  "error_class", "attempt", "idempotency_key"])  # fmt: skip
        # t-incident's plan allows $3 a day; it has spent 1080 * $0.002 = $2.16 today and
        # $0.36 in the last hour: $0.36/h for 6 more hours reaches $4.32 > $3.
        profile = {"tenant_id": "t-incident", "plan": "team",
                   "budgets": {"cost_per_day_usd_micros": 3_000_000}}  # fmt: skip
        ch.insert("events_archive", [("tenants", 0, 0, "p-1", "TenantProfileUpdated", 20,
                  "t-incident", "", NOW - timedelta(days=2), orjson.dumps(profile).decode())],
                  ["topic", "partition", "offset", "event_id", "event_type", "schema_id",
                   "tenant_id", "session_id", "occurred_at", "payload"])  # fmt: skip
    return settings


def test_sql_counts_equal_the_python_reference(settings: Settings) -> None:
    doc = load_slo(settings.resolved_slo_path)
    with open_clickhouse(settings, role="owner") as ch:
        scopes = read_scopes(ch, doc, NOW)
    by_scope = {(s.scope.tenant, s.scope.workflow): s for s in scopes}
    assert set(by_scope) == {(t, w) for t in TENANTS for w in (None, "wf-1")}
    for tenant, tier in TENANTS.items():
        expected = tally_turns(doc, tier, _turns(tenant), NOW)
        for workflow in (None, "wf-1"):
            row = by_scope[(tenant, workflow)]
            assert row.tier == tier
            assert row.counts == expected, (tenant, workflow)
    incident = by_scope[("t-incident", None)].counts["success"]
    # 180 turns in the hour, the 3 of minute 5 cancelled (not counted); 18 minutes failed
    assert (incident["1h"].total, incident["1h"].bad) == (177, 54)


def test_the_incident_pages_and_healthy_tenants_stay_silent(settings: Settings) -> None:
    doc = load_slo(settings.resolved_slo_path)
    with open_clickhouse(settings, role="owner") as ch:
        report = slo_status(doc, read_scopes(ch, doc, NOW), read_budgets(ch, doc, NOW))
    burn = [a for a in report["alerts"] if a["kind"] == "burn_rate"]
    assert {a["tenant"] for a in burn} == {"t-incident"}
    assert {(a["severity"], a["sli"]) for a in burn} >= {("page", "success")}
    budget = [a for a in report["alerts"] if a["kind"] == "budget_burn"]
    assert [(a["tenant"], a["period"], a["severity"]) for a in budget] == [
        ("t-incident", "day", "ticket")
    ]


def test_the_cli_prints_the_alerts_and_json(settings: Settings) -> None:
    env = {**os.environ, **as_environment(settings)}
    base = [sys.executable, "-m", "govstream.cli", "slo", "--at", NOW.isoformat()]
    text = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "PAGE" in text.stdout and "t-incident" in text.stdout
    machine = subprocess.run([*base, "--json", "--tenant", "t-ok-1"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert machine.returncode == 0, machine.stderr
    report = json.loads(machine.stdout)
    assert report["alerts"] == []
    assert {s["tenant"] for s in report["scopes"]} == {"t-ok-1"}


def test_a_bad_slo_document_is_one_line(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "slo.yaml"
    bad.write_text("schema_version: 1\nversion: x\nperiod: 30d\nbogus: 1\n")
    env = {**os.environ, **as_environment(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "slo", "--slo", str(bad)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
