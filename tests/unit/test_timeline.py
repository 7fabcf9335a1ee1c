"""Session replay (projections/timeline.py): timeline rows and the state at chosen instants."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from events.evidence import LogRecord
from events.models import (
    BudgetExceeded,
    BudgetWarning,
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionEvent,
    SessionQuarantined,
    SessionSuspended,
    ToolCallCompleted,
)
from projections.timeline import (
    COLUMNS,
    format_time,
    merge,
    render_state,
    render_table,
    replay,
    state_at,
    timeline,
)
from tests.factories import T0, session_started, tool_proposal, turn

SID = "s-replay"
SESSIONS, DERIVED = "gs.sessions", "gs.derived"


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def _env(seconds: float, **overrides: Any) -> dict[str, Any]:
    event_id = overrides.pop("event_id", str(uuid.uuid4()))
    return {
        "event_id": event_id,
        "occurred_at": at(seconds),
        "tenant_id": "t-001",
        "session_id": SID,
        "idempotency_key": f"key-{event_id}",
        **overrides,
    }


def _decided(seconds: float, op: str, decision: str, reason: str, tool: str) -> PolicyDecided:
    return PolicyDecided(
        **_env(seconds),
        operation_key=op,
        tool=tool,
        action="exec",
        decision=decision,  # type: ignore[arg-type]
        reason_code=reason,
        policy_version="2026-11-01",
        rule_id=f"plan.team.tool.{tool}",
        evaluation_us=12,
        key_id="k1",
        signature="00",
        expires_at=at(seconds + 300),
    )


class Log:
    """Builds a session's records with log positions: producer events on one
    partition of the sessions topic, derived facts on the derived topic."""

    def __init__(self) -> None:
        self.items: list[tuple[LogRecord, SessionEvent]] = []
        self.offsets = {SESSIONS: 100, DERIVED: 500}

    def add(self, event: SessionEvent, topic: str = SESSIONS) -> SessionEvent:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        partition = 1 if topic == SESSIONS else 0
        self.items.append((LogRecord(topic, partition, offset, 0, b""), event))
        return event

    def derived(self, event: SessionEvent) -> SessionEvent:
        return self.add(event, DERIVED)


@pytest.fixture(scope="module")
def log() -> Log:
    """started -> 2 turns (one retried) -> proposal denied -> tool rejected -> a third turn
    exceeds the session budget -> suspended -> a proposal while suspended is rejected."""
    log = Log()
    log.add(session_started(session_id=SID, tier="C", occurred_at=at(0)))
    first = log.add(
        turn(
            session_id=SID,
            occurred_at=at(1),
            idempotency_key="turn-1",
            input_tokens=1000,
            output_tokens=200,
            cost_usd_micros=500,
        )
    )
    retry = log.add(
        turn(
            session_id=SID,
            occurred_at=at(1.5),
            idempotency_key="turn-1",
            attempt=2,
            input_tokens=1000,
            output_tokens=200,
            cost_usd_micros=500,
        )
    )
    log.derived(
        DuplicateSuppressed(
            **_env(1.5),
            duplicate_event_id=retry.event_id,
            original_event_id=first.event_id,
            duplicate_attempt=2,
            original_attempt=1,
            suppressed_by="session-processor",
        )
    )
    log.add(
        turn(
            session_id=SID,
            occurred_at=at(2),
            idempotency_key="turn-2",
            input_tokens=900,
            output_tokens=300,
            cost_usd_micros=700,
            model="gpt-4o",
        )
    )
    log.add(
        tool_proposal(
            event_id="p-1",
            session_id=SID,
            occurred_at=at(3),
            tool="shell",
            action="exec",
            operation_key="op-1",
            idempotency_key="prop-1",
        )
    )
    log.derived(_decided(3, "op-1", "deny", "TOOL_NOT_PERMITTED", "shell"))
    log.add(ToolCallCompleted(**_env(4), operation_key="op-1", status="rejected", latency_ms=1))
    log.add(
        turn(
            session_id=SID,
            occurred_at=at(5),
            idempotency_key="turn-3",
            input_tokens=1000,
            output_tokens=200,
            cost_usd_micros=800,
        )
    )
    log.derived(
        BudgetWarning(
            **_env(5), scope="session", scope_key=SID, limit=3000, used=3600, threshold_pct=100
        )
    )
    log.derived(
        BudgetExceeded(
            **_env(5), scope="session", scope_key=SID, limit=3000, used=3600, action="suspend"
        )
    )
    log.derived(SessionSuspended(**_env(5), reason=f"budget exceeded: session {SID}"))
    log.add(
        tool_proposal(
            event_id="p-2",
            session_id=SID,
            occurred_at=at(6),
            tool="web_search",
            action="exec",
            operation_key="op-2",
            idempotency_key="prop-2",
        )
    )
    log.derived(
        InvalidTransitionRejected(
            **_env(6),
            from_state="suspended",
            attempted="ToolCallProposed",
            reason="invalid_transition: no transition from suspended",
        )
    )
    log.derived(_decided(6, "op-2", "deny", "BUDGET_EXCEEDED", "web_search"))
    return log


def test_state_before_the_first_event_is_empty(log: Log) -> None:
    state = state_at(log.items, at(-1))
    assert (state["status"], state["records"], state["turns"]) == (None, 0, 0)
    assert state["tokens"]["total"] == 0 and state["cost_usd_micros"] == 0
    assert state["records_total"] == len(log.items)
    assert state["memory"] is None


def test_after_the_retried_turn_it_counts_once(log: Log) -> None:
    state = state_at(log.items, at(1.5))
    assert state["status"] == "active"
    assert (state["turns"], state["retries"]) == (1, 1)
    assert state["tokens"] == {"input": 1000, "output": 200, "total": 1200}
    assert state["cost_usd_micros"] == 500
    assert state["tools"]["decisions"] == {"allow": 0, "deny": 0, "require_approval": 0}


def test_at_the_denied_proposal_the_session_waits_with_one_denial(log: Log) -> None:
    state = state_at(log.items, at(3))
    assert state["status"] == "waiting_for_tool"
    assert state["tools"]["pending"] == ["op-1"]
    assert (state["turns"], state["tokens"]["total"], state["cost_usd_micros"]) == (2, 2400, 1200)
    assert state["tools"]["proposed"] == 1
    assert state["tools"]["decisions"]["deny"] == 1
    last = state["tools"]["last_decision"]
    assert (last["decision"], last["reason_code"], last["tool"]) == (
        "deny",
        "TOOL_NOT_PERMITTED",
        "shell",
    )
    assert state["budget"]["exceeded"] == [] and not state["suspended"]


def test_between_events_the_state_is_the_one_before(log: Log) -> None:
    assert state_at(log.items, at(4.5))["status"] == "active"
    assert state_at(log.items, at(4.5))["tools"]["pending"] == []


def test_at_the_budget_exceeded_the_session_is_suspended(log: Log) -> None:
    state = state_at(log.items, at(5))
    assert (state["status"], state["suspended"], state["quarantined"]) == ("suspended", True, False)
    assert (state["turns"], state["tokens"]["total"], state["cost_usd_micros"]) == (3, 3600, 2000)
    assert state["budget"]["action"] == "suspend"
    assert state["budget"]["exceeded"] == [
        {
            "scope": "session",
            "action": "suspend",
            "used": 3600,
            "limit": 3000,
            "fallback_model": None,
        }
    ]
    assert [w["threshold_pct"] for w in state["budget"]["warnings"]] == [100]
    assert state["invalid_transitions"] == 0


def test_final_state_after_the_last_event(log: Log) -> None:
    state = state_at(log.items)
    assert state["at"] is None and state["records"] == len(log.items)
    assert state["status"] == "suspended"  # the proposal while suspended was rejected
    assert state["invalid_transitions"] == 1
    assert state["tools"]["proposed"] == 2  # decided even when the lifecycle rejected it
    assert state["tools"]["decisions"] == {"allow": 0, "deny": 2, "require_approval": 0}
    assert state["tools"]["last_decision"]["reason_code"] == "BUDGET_EXCEEDED"
    assert state["lifecycle"]["invalid_count_in_window"] == 1
    assert (state["tier"], state["plan"]) == ("C", "team")
    # memory strata (projections.memory): turns deduplicated, both decisions in policy memory
    memory = state["memory"]
    assert len(memory["turns"]) == 3 and memory["turn_tokens"] == 3600
    assert [r["decision"] for r in memory["policy"]] == ["deny", "deny"]


def test_timeline_rows(log: Log) -> None:
    rows = timeline(log.items)
    assert len(rows) == len(log.items)
    assert [r.event for r in rows] == [
        "SessionStarted",
        "TurnCompleted",
        "TurnCompleted",
        "DuplicateSuppressed",
        "TurnCompleted",
        "ToolCallProposed",
        "PolicyDecided",
        "ToolCallCompleted",
        "TurnCompleted",
        "BudgetWarning",
        "BudgetExceeded",
        "SessionSuspended",
        "ToolCallProposed",
        "InvalidTransitionRejected",
        "PolicyDecided",
    ]
    assert rows[0].time == "2026-11-22T12:00:00.000Z"
    assert rows[2].time == "2026-11-22T12:00:01.500Z"
    assert rows[0].decision == "-> created"
    assert rows[1].decision == "ok gpt-4o-mini"
    assert rows[2].decision == "ok gpt-4o-mini [retry (attempt 2), not applied]"
    assert rows[5].decision == "proposed shell.exec (low risk) -> waiting_for_tool"
    assert rows[6].decision == "deny TOOL_NOT_PERMITTED shell.exec"
    assert rows[7].decision == "rejected (op-1) -> active"
    assert rows[9].decision == "session 100% (used 3,600/3,000, 120%)"
    assert rows[10].decision == "session exceeded 3,600/3,000 -> suspend"
    assert rows[11].decision == f"-> suspended (budget exceeded: session {SID})"
    assert rows[12].decision.endswith("[rejected: invalid_transition]")
    assert rows[13].decision.startswith("ToolCallProposed from suspended: invalid_transition")
    assert rows[14].decision == "deny BUDGET_EXCEEDED web_search.exec"
    # budget after: cumulative session tokens and cost, the retry adds nothing
    assert [r.tokens_after for r in rows[:5]] == [0, 1200, 1200, 1200, 2400]
    assert rows[1].budget_after == "1,200 tok $0.000500"
    assert rows[-1].budget_after == "3,600 tok $0.002000"
    assert [r.status_after for r in rows[10:13]] == ["active", "suspended", "suspended"]
    assert (rows[6].topic, rows[6].partition, rows[6].offset) == (DERIVED, 0, 501)


def test_merge_puts_causes_before_their_facts_then_log_position() -> None:
    log = Log()
    log.derived(_decided(3, "op-1", "allow", "ALLOWED", "web_search"))  # offset 500
    log.add(tool_proposal(session_id=SID, occurred_at=at(3)))  # offset 100
    log.derived(_decided(3, "op-9", "allow", "ALLOWED", "web_search"))  # offset 501
    log.add(session_started(session_id=SID, occurred_at=at(0)))
    order = [(rec.topic, rec.offset) for rec, _ in merge(reversed(log.items))]
    assert order == [(SESSIONS, 101), (SESSIONS, 100), (DERIVED, 500), (DERIVED, 501)]


def test_merge_refuses_two_sessions() -> None:
    log = Log()
    log.add(session_started(session_id="a"))
    log.add(session_started(session_id="b"))
    with pytest.raises(ValueError, match="2 sessions"):
        merge(log.items)


def test_first_attempt_wins_even_when_the_retry_is_logged_first() -> None:
    log = Log()
    log.add(session_started(session_id=SID, occurred_at=at(0)))
    log.add(
        turn(
            session_id=SID,
            occurred_at=at(1),
            idempotency_key="k",
            attempt=2,
            input_tokens=10,
            output_tokens=0,
            cost_usd_micros=9,
        )
    )
    log.add(
        turn(
            session_id=SID,
            occurred_at=at(2),
            idempotency_key="k",
            attempt=1,
            input_tokens=100,
            output_tokens=0,
            cost_usd_micros=90,
        )
    )
    assert state_at(log.items, at(1))["tokens"]["total"] == 10
    final = state_at(log.items)
    assert (final["turns"], final["tokens"]["total"], final["cost_usd_micros"]) == (1, 100, 90)


def test_repeated_invalid_transitions_quarantine() -> None:
    log = Log()
    log.add(session_started(session_id=SID, occurred_at=at(0)))
    for i in range(3):
        log.add(
            ToolCallCompleted(
                **_env(1 + i), operation_key=f"nope-{i}", status="succeeded", latency_ms=1
            )
        )
    log.derived(SessionQuarantined(**_env(3), reason="repeated invalid transitions"))
    assert state_at(log.items, at(2))["status"] == "created"
    state = state_at(log.items)
    assert (state["status"], state["quarantined"]) == ("quarantined", True)
    assert state["quarantine_reason"] == "repeated invalid transitions"
    rows = timeline(log.items)
    assert rows[3].decision.endswith("[rejected: invalid_transition, session quarantined]")
    assert rows[4].decision == "-> quarantined (repeated invalid transitions)"


def test_redelivered_fact_counts_once() -> None:
    log = Log()
    log.add(session_started(session_id=SID, occurred_at=at(0)))
    decided = _decided(1, "op-1", "deny", "TENANT_DENIED", "shell")
    log.derived(decided)
    log.derived(decided)  # the same record at another offset
    rows = timeline(log.items)
    assert rows[2].decision.endswith("[redelivered]")
    assert state_at(log.items)["tools"]["decisions"]["deny"] == 1


def test_text_output(log: Log) -> None:
    result = replay(log.items, at(3))
    table = render_table(result.rows, at=at(3))
    lines = table.splitlines()
    header = lines[0].split()
    assert header[:3] == ["time", "event", "decision"] and COLUMNS[3] == "budget after"
    # aligned: every column starts at the same place on every row
    start = lines[0].index("event")
    assert all(line[start - 2 : start] == "  " for line in lines[2:] if not line.startswith("--"))
    marker = lines.index(f"---- state at {format_time(at(3))} ----")
    assert lines[marker - 1].split()[1] == "PolicyDecided"
    assert lines[marker + 1].split()[1] == "ToolCallCompleted"
    text = render_state(result.state)
    assert "status        waiting_for_tool" in text
    assert "deny 1" in text and "2,400 tok" in text
    assert "last decision deny TOOL_NOT_PERMITTED shell.exec" in text
