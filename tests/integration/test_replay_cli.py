"""`govstream replay session`, `export session` and `verify` against a real broker and worker.

One crafted session goes through the worker (tier C, a 1,000-token session
budget): started -> a turn (60%) -> a retry of that turn (suppressed) -> a
proposal the plan denies -> the tool call rejected -> a second turn (120%):
exceeded, and tier C suspends. Two noise sessions of the same tenant share
the topics. The CLI finds the session through the ClickHouse archive (held
by the worker: the CLI reaches it through the worker's owner proxy) and reads
those records from Kafka.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.evidence import read_export
from events.models import TenantBudgets, ToolCallCompleted
from govstream.cli import main
from govstream.processes import WorkerProcess
from govstream.settings import Settings, as_environment
from sql.client import open_clickhouse
from tests.conftest import BACKENDS, Backend, isolated_settings
from tests.factories import session_started, tenant_profile, tool_proposal, turn
from tests.kafka_io import send_events as _send
from tests.unit.test_evidence import _rechain, _rewrite

pytestmark = pytest.mark.integration
WAIT_SECONDS = 60
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
SID = f"s-replay-{uuid.uuid4().hex[:6]}"
TENANT = f"t-replay-{uuid.uuid4().hex[:6]}"
# the session's records in timeline order (producer record first on a tie)
EXPECTED = [
    "SessionStarted",
    "TurnCompleted",  # 600 of 1,000 tokens
    "BudgetWarning",  # 50%
    "TurnCompleted",  # the retry
    "DuplicateSuppressed",
    "ToolCallProposed",
    "PolicyDecided",  # deny
    "ToolCallCompleted",  # rejected: back to active
    "TurnCompleted",  # 1,200 of 1,000
    "BudgetWarning",  # 80%
    "BudgetWarning",  # 100%
    "BudgetExceeded",
    "SessionSuspended",
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _events() -> list[Any]:
    common = {"tenant_id": TENANT, "session_id": SID}
    first = {
        "idempotency_key": f"{SID}/turn-1",
        "input_tokens": 400,
        "output_tokens": 200,
        "cost_usd_micros": 1_000,
        **common,
    }
    noise = [
        e
        for n in range(2)
        for e in (
            session_started(tenant_id=TENANT, session_id=f"{SID}-noise-{n}", occurred_at=at(n)),
            turn(
                tenant_id=TENANT,
                session_id=f"{SID}-noise-{n}",
                occurred_at=at(n + 1.2),
                input_tokens=10,
                output_tokens=5,
            ),
        )
    ]
    return [
        session_started(tier="C", occurred_at=at(0), **common),
        noise[0],
        turn(occurred_at=at(1), **first),
        noise[1],
        turn(occurred_at=at(1.5), attempt=2, **first),
        tool_proposal(
            event_id=str(uuid.uuid4()),
            idempotency_key=f"{SID}/prop-1",
            operation_key=f"{SID}/op-1",
            tool="shell",
            action="exec",
            occurred_at=at(2),
            **common,
        ),
        ToolCallCompleted(
            event_id=str(uuid.uuid4()),
            idempotency_key=f"{SID}/done-1",
            operation_key=f"{SID}/op-1",
            status="rejected",
            latency_ms=3,
            occurred_at=at(3),
            **common,
        ),
        turn(
            occurred_at=at(4),
            idempotency_key=f"{SID}/turn-2",
            input_tokens=400,
            output_tokens=200,
            cost_usd_micros=2_000,
            model="gpt-4o",
            **common,
        ),
        *noise[2:],
    ]


def _wait_for_archive(settings: Settings) -> None:
    """Until the sink has archived every record of the session (through the worker)."""
    deadline = time.monotonic() + WAIT_SECONDS
    kinds: list[str] = []
    while time.monotonic() < deadline:
        with open_clickhouse(settings, role="client") as ch:
            kinds = [
                row[0]
                for row in ch.query(
                    "SELECT event_type FROM events_archive FINAL WHERE session_id = {s:String}",
                    {"s": SID},
                ).rows
            ]
        if len(kinds) >= len(EXPECTED) and "SessionSuspended" in kinds:
            return
        time.sleep(0.3)
    raise AssertionError(f"archive holds {sorted(kinds)} for {SID}")


@pytest.fixture(scope="module", params=BACKENDS[:1], ids=str)
def settings(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    backend: Backend = request.param
    base = tmp_path_factory.mktemp("replay")
    settings = isolated_settings(
        base, brokers.bootstrap(backend.kafka), clickhouse_servers.url(backend.clickhouse)
    )
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        # The profile first: the budget processor charges by the profile in the log then.
        profile = tenant_profile(
            tenant_id=TENANT,
            plan="team",
            occurred_at=at(-60),
            budgets=TenantBudgets(tokens_per_session=1_000),
        )
        _send(settings, [profile])
        _send(settings, _events())
        _wait_for_archive(settings)
        yield settings
    finally:
        worker.stop()


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `govstream ARGS` in this process with the worker's settings: (status, out, err)."""
    for name, value in as_environment(settings).items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _table_events(out: str) -> list[str]:
    """The event column of the timeline table (rows start with the time)."""
    return [line.split()[1] for line in out.splitlines() if line[:4].isdigit()]


def test_replay_prints_the_timeline_and_final_state(cli: Any) -> None:
    status, out, err = cli("replay", "session", SID)
    assert status == 0, err
    assert out.splitlines()[0].split()[:3] == ["time", "event", "decision"]
    assert _table_events(out) == EXPECTED
    assert SID + "-noise" not in out
    assert "deny TOOL_NOT_PERMITTED shell.exec" in out
    assert "session exceeded 1,200/1,000 -> suspend" in out
    assert "[retry (attempt 2), not applied]" in out
    assert "status        suspended [suspended]" in out
    assert "spent         1,200 tok (in 800, out 400), $0.003000" in out

    status, out, err = cli("replay", "session", SID, "--json")
    assert status == 0, err
    result = json.loads(out)
    rows = result["timeline"]
    assert [r["event"] for r in rows] == EXPECTED
    assert [r["tokens_after"] for r in rows] == [0, 600, 600, 600, 600, 600, 600, 600] + [1200] * 5
    assert rows[1]["time"] == at(1).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    state = result["state"]
    assert (state["status"], state["suspended"], state["quarantined"]) == ("suspended", True, False)
    assert (state["turns"], state["retries"], state["cost_usd_micros"]) == (2, 1, 3_000)
    assert state["tools"]["decisions"] == {"allow": 0, "deny": 1, "require_approval": 0}
    assert state["budget"]["exceeded"][0]["action"] == "suspend"
    assert [w["threshold_pct"] for w in state["budget"]["warnings"]] == [50, 80, 100]
    assert state["memory"]["turn_tokens"] == 1200


def test_replay_at_an_instant_mid_session(cli: Any) -> None:
    status, out, err = cli("replay", "session", SID, "--at", at(2.5).isoformat(), "--json")
    assert status == 0, err
    state = json.loads(out)["state"]
    assert state["status"] == "waiting_for_tool"
    assert (state["turns"], state["tokens"]["total"], state["cost_usd_micros"]) == (1, 600, 1_000)
    assert state["tools"]["last_decision"]["reason_code"] == "TOOL_NOT_PERMITTED"
    assert state["budget"]["exceeded"] == [] and not state["suspended"]
    assert state["records"] == 7
    # the text table marks where the instant falls
    status, out, _ = cli("replay", "session", SID, "--at", at(2.5).isoformat())
    lines = out.splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("---- state at"))
    assert lines[marker - 1].split()[1] == "PolicyDecided"
    assert lines[marker + 1].split()[1] == "ToolCallCompleted"


def test_export_verify_and_replay_from_the_file(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "evidence.avro"
    status, out, err = cli("export", "session", SID, "--out", str(path))
    assert status == 0, err
    _, entries = read_export(path)
    # The evidence: the tenant's log up to the session's last record (the profile, the
    # session, the noise session interleaved with it), then the session's derived records.
    log = [e["event_type"] for e in entries if e["topic"].endswith(".sessions")]
    derived = [e["event_type"] for e in entries if e["topic"].endswith(".derived")]
    assert len(log) + len(derived) == len(entries)
    assert log[0] == "TenantProfileUpdated" and log.count("SessionStarted") == 2
    assert sorted(log[1:] + derived) == sorted([*EXPECTED, "SessionStarted", "TurnCompleted"])
    assert out.strip().startswith(f"wrote {len(entries)} records of session {SID}")
    assert out.strip().endswith(f"last hash {entries[-1]['hash']}")

    status, out, err = cli("verify", str(path))
    assert (status, out.count("\n")) == (0, 1), err
    assert out.startswith(f"OK: {len(entries)} records of session {SID}")

    _, kafka, _ = cli("replay", "session", SID, "--json")
    status, from_file, err = cli("replay", "session", SID, "--json", "--source", str(path))
    assert status == 0, err
    assert json.loads(from_file) == json.loads(kafka)
    _, text_kafka, _ = cli("replay", "session", SID, "--at", at(3).isoformat())
    _, text_file, _ = cli(
        "replay", "session", SID, "--at", at(3).isoformat(), "--source", str(path)
    )
    assert text_file == text_kafka


def _first(entries: list[dict[str, Any]], kind: str, n: int = 0) -> int:
    return [i for i, e in enumerate(entries) if e["event_type"] == kind][n]


def test_tampered_exports_fail_naming_the_record(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "evidence.avro"
    assert cli("export", "session", SID, "--out", str(path))[0] == 0
    _, entries = read_export(path)
    turn_at = _first(entries, "TurnCompleted", 1)  # the retry, model gpt-4o-mini
    offset = entries[turn_at]["offset"]

    def change(es: list[dict[str, Any]]) -> list[dict[str, Any]]:
        value = es[turn_at]["value"]
        assert value.count(b"gpt-4o-mini") == 1
        es[turn_at]["value"] = value.replace(b"gpt-4o-mini", b"gpt-4o-mine")  # one byte
        return es

    cases = {
        "changed": (change, f"seq {turn_at} ", f"@{offset})"),
        "dropped": (lambda es: es[:4] + es[5:], "seq 4 is missing", f"@{entries[5]['offset']})"),
        "reordered": (
            lambda es: [*es[:2], es[3], es[2], *es[4:]],
            "position 2 holds seq 3",
            f"@{entries[3]['offset']})",
        ),
    }
    for problem, (edit, where, position) in cases.items():
        tampered = tmp_path / f"{problem}.avro"
        tampered.write_bytes(path.read_bytes())
        _rewrite(tampered, edit)
        status, out, err = cli("verify", str(tampered))
        assert status == 1, (problem, out, err)
        assert out.count("\n") == 1 and out.startswith(f"FAIL {problem}:"), out
        assert where in out and position in out, out

    # the untouched file still verifies
    assert cli("verify", str(path))[0] == 0

    # Replay refuses what verify refuses, naming the record; --no-verify replays it.
    changed = str(tmp_path / "changed.avro")
    status, out, err = cli("replay", "session", SID, "--source", changed)
    assert (status, out, err.count("\n")) == (1, "", 1), err
    assert "FAIL changed:" in err and f"seq {turn_at} " in err and "--no-verify" in err
    status, out, err = cli("replay", "session", SID, "--source", changed, "--no-verify")
    assert status == 0 and SID in out and "without verification" in err

    # A whole-file rewrite (the chain recomputed) passes the chain, not the signature.
    forged = tmp_path / "forged.avro"
    forged.write_bytes(path.read_bytes())

    def to_mine(entry: dict[str, Any]) -> None:
        entry["value"] = entry["value"].replace(b"gpt-4o-mini", b"gpt-4o-mine")

    _rechain(forged, to_mine, at=turn_at)
    status, out, _ = cli("verify", str(forged))
    assert status == 1 and out.startswith("FAIL signature:"), out
    status, _, err = cli("replay", "session", SID, "--source", str(forged))
    assert status == 1 and "FAIL signature:" in err, err


def test_errors_are_one_line(cli: Any, tmp_path: Path) -> None:
    status, out, err = cli("replay", "session", "s-nobody")
    assert (status, out) == (1, "")
    assert err == "govstream: no records for session s-nobody in the archive\n"
    status, _, err = cli("export", "session", "s-nobody", "--out", str(tmp_path / "x.avro"))
    assert status == 1 and err.count("\n") == 1 and "no records for session s-nobody" in err
    assert not (tmp_path / "x.avro").exists()
    status, _, err = cli("replay", "session", SID, "--at", "yesterday-ish")
    assert status == 2 and err == "govstream: --at 'yesterday-ish': expected an ISO 8601 time\n"
    status, _, err = cli("verify", str(tmp_path / "absent.avro"))
    assert status == 2 and err.count("\n") == 1 and "no such file" in err
    status, _, err = cli("replay", "session", SID, "--source", str(tmp_path / "absent.avro"))
    assert status == 2 and err.count("\n") == 1 and "no such file" in err


def test_the_console_script_runs_replay(settings: Settings) -> None:
    env = {**os.environ, **as_environment(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "govstream.cli", "replay", "session", SID],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert _table_events(result.stdout) == EXPECTED
    assert "status        suspended" in result.stdout
