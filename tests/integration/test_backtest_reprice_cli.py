"""`govstream policy backtest` and `govstream reprice` against a real broker and worker.

Crafted sessions go through a real worker (the session processor decides
every proposal with the packaged policy); then both commands read the log
back from Kafka and must report the known changes and the exact differences.

- t-free (no profile, sessions on plan free): two web_search proposals and
  one http_request; the new policy denies web_search on free, so exactly the
  two searches change allow/ALLOWED -> deny/TOOL_NOT_PERMITTED.
- t-team (profile plan team, its session started as free): a web_search that
  stays allowed (the profile's plan wins, as it did live).
- turns: t-free 2 x gpt-4o-mini 1200/300 (recorded 360 each; one retried),
  t-team 1 x gpt-4o 1000/500 (recorded 7500). With output prices doubled:
  t-free +360 (180 a turn), t-team +5000.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.models import Event, PolicyDecided, ToolCallProposed
from events.topics import Topics
from govstream.cli import main
from govstream.commands.lag import wait_for_zero_lag
from govstream.processes import WorkerProcess
from govstream.settings import Settings, as_environment
from tests.conftest import isolated_settings
from tests.factories import session_started, tenant_profile, turn
from tests.kafka_io import read_events_until
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
POLICY = Settings().resolved_policy_path


def _proposal(tenant: str, sid: str, op: str, tool: str = "web_search") -> ToolCallProposed:
    event_id = str(uuid.uuid4())
    return ToolCallProposed(
        event_id=event_id, occurred_at=T0 + timedelta(seconds=5), tenant_id=tenant,
        session_id=sid, idempotency_key=f"key-{event_id}", tool=tool, action="run",
        operation_key=op, destination_host="api.good.com", method="GET", payload_bytes=100,
        risk_level="low",
    )  # fmt: skip


def _session(tenant: str, sid: str, turns: list[dict[str, Any]], tools: list[str]) -> list[Event]:
    events: list[Event] = [
        session_started(
            tenant_id=tenant,
            session_id=sid,
            plan="free",
            occurred_at=T0,
            event_id=str(uuid.uuid4()),
        )
    ]
    for n, fields in enumerate(turns):
        events.append(
            turn(
                tenant_id=tenant,
                session_id=sid,
                idempotency_key=f"{sid}/turn-{n}",
                occurred_at=T0 + timedelta(seconds=1 + n),
                event_id=str(uuid.uuid4()),
                **fields,
            )
        )
    events += [_proposal(tenant, sid, f"{sid}/op-{n}", tool) for n, tool in enumerate(tools)]
    return events


MINI = {"model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 300, "cost_usd_micros": 360}
FOUR_O = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500, "cost_usd_micros": 7500}


@pytest.fixture(scope="module")
def settings(local_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = tmp_path_factory.mktemp("backtest")
    settings = isolated_settings(base, local_bootstrap)
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        free_1 = _session("t-free", "s-free-1", [MINI], ["web_search", "http_request"])
        free_2 = _session("t-free", "s-free-2", [MINI], ["web_search"])
        retried = free_2[1].model_copy(update={"event_id": str(uuid.uuid4()), "attempt": 2,
                                               "output_tokens": 9999})  # fmt: skip
        team = _session("t-team", "s-team", [FOUR_O], ["web_search"])
        _send(settings, [tenant_profile(tenant_id="t-team", plan="team")])
        _send(settings, [*free_1, *free_2, retried, *team])
        bootstrap = local_bootstrap
        # Twice: a forward between the processors can add lag back.
        asyncio.run(wait_for_zero_lag(settings, bootstrap, 90, "processors"))
        time.sleep(1.0)
        asyncio.run(wait_for_zero_lag(settings, bootstrap, 30, "processors"))
        read_events_until(
            bootstrap,
            Topics(settings.topic_prefix).derived,
            lambda events: sum(isinstance(e, PolicyDecided) for e in events) >= 4,
            timeout=30,
        )
        yield settings
    finally:
        worker.stop()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in as_environment(settings).items():
        monkeypatch.setenv(name, value)
    return settings


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def new_policy(tmp_path: Path) -> Path:
    text = POLICY.read_text().replace('version: "2026-11-01"', 'version: "2026-12-01"')
    # free: web_search medium -> deny
    text = text.replace("      web_search: medium\n", "      web_search: deny\n", 1)
    path = tmp_path / "new.yaml"
    path.write_text(text)
    return path


def test_backtest_lists_exactly_the_changed_decisions(
    env: Settings, new_policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _cli(capsys, "policy", "backtest", "--policy", str(new_policy), "--json")
    assert status == 0, err
    report = json.loads(out)
    assert (report["policy_version"], report["re_evaluated"], report["undecided"]) == (
        "2026-12-01", 4, 0,
    )  # fmt: skip
    assert sorted(
        (c["tenant_id"], c["session_id"], c["operation_key"], c["tool"], c["old_decision"],
         c["old_reason_code"], c["new_decision"], c["new_reason_code"])
        for c in report["changes"]
    ) == [
        ("t-free", sid, f"{sid}/op-0", "web_search", "allow", "ALLOWED", "deny",
         "TOOL_NOT_PERMITTED")
        for sid in ("s-free-1", "s-free-2")
    ]  # fmt: skip
    assert report["changed"] == 2

    status, out, _ = _cli(capsys, "policy", "backtest", "--policy", str(new_policy))
    assert status == 0
    assert out.splitlines()[-1] == "policy 2026-12-01: 4 proposals re-evaluated, 2 changed"
    assert "web_search.run" in out and "TOOL_NOT_PERMITTED" in out

    status, out, _ = _cli(capsys, "policy", "backtest", "--policy", str(new_policy),
                          "--tenant", "t-team")  # fmt: skip
    assert out.strip() == "policy 2026-12-01: 1 proposals re-evaluated, 0 changed"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, out, _ = _cli(capsys, "policy", "backtest", "--policy", str(new_policy),
                          "--since", future)  # fmt: skip
    assert out.strip() == "policy 2026-12-01: 0 proposals re-evaluated, 0 changed"
    # the packaged policy itself: what the stream decided, nothing changes
    status, out, _ = _cli(capsys, "policy", "backtest", "--policy", str(POLICY))
    assert out.strip() == "policy 2026-11-01: 4 proposals re-evaluated, 0 changed"


def test_backtest_bad_since_is_one_line(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _cli(capsys, "policy", "backtest", "--policy", str(POLICY),
                          "--since", "yesterday")  # fmt: skip
    assert status == 2 and err == "govstream: --since 'yesterday': expected an ISO 8601 time\n"


def test_reprice_reports_the_exact_difference_per_tenant(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "gpt-4o: {input: '2.50', output: '20.00'}\ngpt-4o-mini: {input: '0.15', output: '1.20'}\n"
    )
    status, out, err = _cli(capsys, "reprice", "--prices", str(prices), "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["tenants"] == [
        {"tenant": "t-free", "turns": 2, "old_cost_usd_micros": 720,
         "new_cost_usd_micros": 1080, "difference_usd_micros": 360},
        {"tenant": "t-team", "turns": 1, "old_cost_usd_micros": 7500,
         "new_cost_usd_micros": 12500, "difference_usd_micros": 5000},
    ]  # fmt: skip
    assert report["total"]["difference_usd_micros"] == 5360
    assert report["duplicates"] == 1

    status, out, _ = _cli(capsys, "reprice", "--prices", str(prices))
    lines = out.splitlines()
    assert lines[0].split() == ["tenant", "turns", "old", "cost", "USD", "new", "cost", "USD",
                                "difference", "USD"]  # fmt: skip
    assert lines[1].split() == ["t-free", "2", "0.000720", "0.001080", "+0.000360"]
    assert lines[3].split() == ["TOTAL", "3", "0.008220", "0.013580", "+0.005360"]

    only_mini = tmp_path / "mini.yaml"
    only_mini.write_text("gpt-4o-mini: {input: '0.15', output: '1.20'}\n")
    status, _, err = _cli(capsys, "reprice", "--prices", str(only_mini))
    assert status == 2 and err.count("\n") == 1 and "'gpt-4o' (1 turns)" in err
