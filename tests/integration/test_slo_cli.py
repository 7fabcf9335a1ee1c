"""`govstream slo` over embedded ClickHouse: counts equal the Python reference, alerts fire right.

A crafted fleet in the `turns`, `sessions` and `events_archive` tables (no
Kafka needed: this is about the SQL and the evaluation): three healthy
tenants and one with an incident (30% of its turns failing for the last hour),
one tenant spending its daily budget too fast, and a tenant whose small tier-A
workflow fails every turn in the last hour but has too few turns for the burn
rules' min_events (the scope `govstream slo` must not hide).
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
from projections.slo import WindowCounts, load_slo, slo_status, tally_turns
from sql.client import open_clickhouse
from sql.migrate import apply_migrations

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
TENANTS = {"t-ok-1": "A", "t-ok-2": "A", "t-ok-3": "B", "t-incident": "A", "t-mixed": "A"}
# t-mixed's second workflow: 12 turns in the last hour, all failed (min_events is 100).
QUIET = "wf-quiet"


def _quiet_turns() -> list[tuple[datetime, str, int]]:
    return [(NOW - timedelta(minutes=5 * k, seconds=30), "error", 900) for k in range(12)]


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


def build_fleet(settings: Settings) -> None:
    """Write the crafted fleet into `settings`' ClickHouse (also used to reproduce by hand)."""
    with open_clickhouse(settings, role="owner") as ch:
        apply_migrations(ch)
        sessions, turns = [], []
        fleet = [(t, tier, "wf-1", _turns(t)) for t, tier in TENANTS.items()]
        fleet.append(("t-mixed", "A", QUIET, _quiet_turns()))
        for tenant, tier, workflow, tenant_turns in fleet:
            sid = f"s-{tenant}-{workflow}"
            sessions.append((sid, tenant, workflow, tier, "team", "u", "v1", "production",
                             NOW - timedelta(hours=7), f"e-{sid}"))  # fmt: skip
            for n, (at, outcome, latency) in enumerate(tenant_turns):
                turns.append((f"e-{sid}-{n}", at, tenant, sid, workflow, "production", "gpt-4o",
                              "v1", 100, 50, 2_000, 100, latency, outcome, None, 1,
                              f"k-{sid}-{n}"))  # fmt: skip
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


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("slo"), clickhouse_database="slo_test")
    build_fleet(settings)
    return settings


def test_sql_counts_equal_the_python_reference(settings: Settings) -> None:
    doc = load_slo(settings.resolved_slo_path)
    with open_clickhouse(settings, role="owner") as ch:
        scopes = read_scopes(ch, doc, NOW)
    by_scope = {(s.scope.tenant, s.scope.workflow): s for s in scopes}
    quiet = ("t-mixed", QUIET)
    assert set(by_scope) == {(t, w) for t in TENANTS for w in (None, "wf-1")} | {quiet}
    for tenant, tier in TENANTS.items():
        expected = tally_turns(doc, tier, _turns(tenant), NOW)
        assert by_scope[(tenant, "wf-1")].counts == expected, tenant
        assert by_scope[(tenant, "wf-1")].tier == tier
        if tenant == "t-mixed":
            expected = tally_turns(doc, tier, _turns(tenant) + _quiet_turns(), NOW)
        assert by_scope[(tenant, None)].counts == expected, tenant
    assert by_scope[quiet].counts == tally_turns(doc, "A", _quiet_turns(), NOW)
    assert by_scope[quiet].counts["success"]["1h"] == WindowCounts(12, 12)
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
    text = _slo(settings)
    assert "PAGE" in text and "t-incident" in text
    report = json.loads(_slo(settings, "--json", "--tenant", "t-ok-1"))
    assert report["alerts"] == []
    assert {s["tenant"] for s in report["scopes"]} == {"t-ok-1"}


def _slo(settings: Settings, *args: str) -> str:
    """`govstream slo --at NOW *args`'s output (exit 0)."""
    env = {**os.environ, **as_environment(settings)}
    command = [sys.executable, "-m", "govstream.cli", "slo", "--at", NOW.isoformat(), *args]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _slo_text(settings: Settings, *args: str) -> list[str]:
    return _slo(settings, *args).splitlines()


def test_the_text_shows_a_suppressed_scope_and_why(settings: Settings) -> None:
    """The user's report: 12/12 bad turns on a tier-A workflow printed "no alerts firing"
    and nothing else. The text now names the scope, its burn and why it stays quiet."""
    lines = _slo_text(settings, "--tenant", "t-mixed")
    assert lines[:3] == [
        "SLO 2026-11-01 at 2026-11-23T18:00:00+00:00: 3 scopes (tenant[/workflow], tier), "
        "0 money budgets",
        "no alerts firing",
        "suppressed: 1 scope SLI burning fast enough to alert, with fewer turns than "
        "min_events 100 (SUPPRESSED below)",
    ]
    table = lines[lines.index("") + 2 :]
    assert table[:3] == [
        "  state       scope             tier  sli      objective     5m    30m     1h     6h"
        "    30d  events 1h  events 6h  why (deciding rule)",
        "  SUPPRESSED  t-mixed/wf-quiet  A     success       0.99  100.0  100.0  100.0  100.0"
        "  100.0      12/12      12/12  [page] not firing: 12 events < min_events 100 in 1h, "
        "though burn 100.0 over 1h and 100.0 over 5m >= 14.4",
        "  bad turns   t-mixed           A     success       0.99    6.2    6.5    6.3    1.1"
        "    1.1     12/189    12/1080  [page] not firing: burn 6.3 over 1h and 6.2 over 5m "
        "< 14.4",
    ]
    assert (
        "  (2 scope SLIs with no bad turn in the burn rules' windows not shown; --all lists them)"
        in lines
    )
    cut = _slo_text(settings, "--tenant", "t-mixed", "--limit", "0")
    assert [line.split()[0] for line in cut[6:-3]] == ["SUPPRESSED"]  # always listed
    assert cut[-3] == (
        "  (3 more scope SLIs with bad turns (--limit) and 2 scope SLIs with no bad turn in "
        "the burn rules' windows not shown; --all lists them)"
    )
    every = _slo_text(settings, "--tenant", "t-mixed", "--all")
    assert len([line for line in every if line.startswith("  ok ")]) == 2
    # --json carries the same why, computed once in projections/slo.py.
    machine = json.loads("\n".join(_slo_text(settings, "--tenant", "t-mixed", "--json")))
    (quiet,) = [s for s in machine["scopes"] if s["workflow"] == QUIET]
    assert quiet["state"] == "suppressed"
    assert quiet["slis"]["success"]["why"] in table[1]


def test_the_text_shows_a_firing_scope_and_its_budget(settings: Settings) -> None:
    lines = _slo_text(settings, "--tenant", "t-incident")
    assert lines[1] == "alerts firing: 3"
    assert lines[2].startswith("  PAGE t-incident tier A success: burning the 30d error budget")
    assert "  FIRING page  t-incident       A     success       0.99  60.0  31.0  30.5  5.1  5.1" \
        "     54/177    54/1068  [page] FIRING: burn 30.5 over 1h and 60.0 over 5m >= 14.4" \
        in lines  # fmt: skip
    assert lines[-2:] == [
        "  state          tenant      period   used  limit  spent 1h  projected  why",
        "  FIRING ticket  t-incident  day     $2.16  $3.00     $0.36      $4.32  FIRING: $0.36/h "
        "(last 1h) for the 6.0 h left projects $4.32 > $3.00; runs out in 2.3 h",
    ]


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
