"""Session replay (projections/timeline.py): the governor's fold over a tenant's log,
the session's timeline rows and its state at chosen instants."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from events.evidence import LogRecord
from events.models import Event, TenantBudgets, ToolCallCompleted
from govstream.settings import Settings, governor_config
from projections.timeline import COLUMNS, SessionReplay, render_state, render_table, replay
from tests.factories import T0, session_started, tenant_profile, tool_proposal, turn

SID = "s-replay"
TENANT = "t-001"
CONFIG = governor_config(Settings(home="/nonexistent"))


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


class Log:
    """A tenant's records on one partition of the tenant log, with positions."""

    def __init__(self) -> None:
        self.items: list[tuple[LogRecord, Event]] = []

    def add(self, event: Event) -> Event:
        offset = 100 + len(self.items)
        ts = int(event.occurred_at.timestamp() * 1000)
        self.items.append((LogRecord("gs.sessions", 1, offset, ts, b""), event))
        return event


def _turn(seconds: float, key: str, tokens: int, cost: int, **fields: Any) -> Any:
    return turn(
        event_id=str(uuid.uuid4()), session_id=SID, occurred_at=at(seconds), idempotency_key=key,
        input_tokens=tokens - 200, output_tokens=200, cost_usd_micros=cost, **fields,
    )  # fmt: skip


def _propose(seconds: float, op: str, **fields: Any) -> Any:
    return tool_proposal(
        event_id=str(uuid.uuid4()), session_id=SID, occurred_at=at(seconds),
        idempotency_key=f"prop-{op}", operation_key=op, **fields,
    )  # fmt: skip


@pytest.fixture(scope="module")
def log() -> Log:
    """A 3,000-token session budget. started -> a turn (retried) -> a second turn ->
    a denied shell call, rejected by the tool -> a third turn crosses the budget ->
    suspended at once -> a proposal while suspended is denied by the budget.
    Another session of the tenant interleaves."""
    log = Log()
    log.add(
        tenant_profile(
            tenant_id=TENANT, occurred_at=at(-1), budgets=TenantBudgets(tokens_per_session=3_000)
        )
    )
    log.add(session_started(session_id=SID, tier="C", occurred_at=at(0), event_id="start"))
    log.add(session_started(session_id="s-other", occurred_at=at(0.5), event_id="other"))
    log.add(_turn(1, "turn-1", 1_200, 500))
    log.add(_turn(1.5, "turn-1", 1_200, 500, attempt=2))  # a retry: suppressed
    log.add(_turn(2, "turn-2", 1_200, 700, model="gpt-4o"))
    log.add(_propose(3, "op-shell", tool="shell", action="exec", risk_level="high"))
    log.add(
        ToolCallCompleted(
            event_id=str(uuid.uuid4()), occurred_at=at(4), tenant_id=TENANT, session_id=SID,
            idempotency_key="done-shell", operation_key="op-shell", status="rejected",
            latency_ms=3,
        )
    )  # fmt: skip
    log.add(_turn(5, "turn-3", 1_200, 900))  # 3,600 of 3,000: exceeded, suspended
    log.add(_propose(6, "op-late"))
    return log


def _replay(log: Log, seconds: float | None = None) -> SessionReplay:
    when = at(seconds) if seconds is not None else None
    return replay(log.items, TENANT, SID, CONFIG, when)


def test_timeline_rows_put_what_a_record_derived_right_after_it(log: Log) -> None:
    rows = _replay(log).rows
    assert tuple(COLUMNS) == ("time", "event", "decision", "budget after")
    assert [r.event for r in rows] == [
        "SessionStarted",
        "TurnCompleted",
        "TurnCompleted",
        "DuplicateSuppressed",
        "TurnCompleted",  # 2,400 of 3,000
        "BudgetWarning",  # 50%
        "BudgetWarning",  # 80%
        "ToolCallProposed",
        "PolicyDecided",
        "ToolCallCompleted",
        "TurnCompleted",  # 3,600 of 3,000
        "BudgetWarning",  # 100%
        "BudgetExceeded",
        "SessionSuspended",  # right after the turn that crossed the budget
        "ToolCallProposed",
        "InvalidTransitionRejected",
        "PolicyDecided",
    ]
    assert rows[8].decision == "deny TOOL_NOT_PERMITTED shell.exec"
    assert rows[12].decision == "session exceeded 3,600/3,000 -> suspend"
    assert rows[13].status_after == "suspended"
    assert rows[-1].decision.startswith("deny BUDGET_EXCEEDED")
    assert rows[-1].budget_after == "3,600 tok / $0.002100"


def test_state_before_the_first_event_is_empty(log: Log) -> None:
    state = _replay(log, -0.5).state
    assert (state["status"], state["records"], state["tokens"]["total"]) == (None, 0, 0)


def test_after_the_retried_turn_it_counts_once(log: Log) -> None:
    state = _replay(log, 1.7).state
    assert (state["turns"], state["retries"], state["tokens"]["total"]) == (1, 1, 1_200)
    assert state["cost_usd_micros"] == 500


def test_at_the_denied_proposal_the_session_waits_with_one_denial(log: Log) -> None:
    state = _replay(log, 3).state
    assert state["status"] == "waiting_for_tool"
    assert state["tools"]["decisions"] == {"allow": 0, "deny": 1, "require_approval": 0}
    assert state["tools"]["pending"] == ["op-shell"]
    assert [w["threshold_pct"] for w in state["budget"]["warnings"]] == [50, 80]


def test_at_the_budget_exceeded_the_session_is_suspended(log: Log) -> None:
    state = _replay(log, 5).state
    assert (state["status"], state["suspended"], state["budget"]["action"]) == (
        "suspended", True, "suspend",
    )  # fmt: skip
    assert [e["scope"] for e in state["budget"]["exceeded"]] == ["session"]


def test_final_state_after_the_last_event(log: Log) -> None:
    result = _replay(log)
    state = result.state
    # Every row: the session's 8 log records and what the fold derived from them; the
    # other session's are not counted.
    assert state["records"] == state["records_total"] == len(result.rows) == 17
    assert sum(r.topic != "derived" for r in result.rows) == 8
    assert state["tools"]["decisions"]["deny"] == 2
    assert state["memory"]["policy_chain_ok"] is None
    assert len(state["memory"]["policy"]) == 2


def test_the_replay_is_the_live_fold(log: Log) -> None:
    # The same records folded twice give the same rows (no clock, no randomness).
    first, second = _replay(log), _replay(log)
    assert [r.to_dict() for r in first.rows] == [r.to_dict() for r in second.rows]


def test_text_output(log: Log) -> None:
    result = _replay(log, 3)
    table = render_table(result.rows, at=at(3))
    assert "---- state at" in table
    assert table.splitlines()[0].split() == ["time", "event", "decision", "budget", "after"]
    text = render_state(result.state)
    assert text.startswith(f"state of session {SID} at")
    assert "status        waiting_for_tool" in text
