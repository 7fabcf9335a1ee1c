"""The session builder: envelopes, retries, and the lifecycle's refusals, locally.

The emitter here records what it is handed (the builder's unit, not Kafka's);
tests/integration/test_light_install.py sends a built session through a broker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.models import (
    SessionClosed,
    SessionEvent,
    SessionStarted,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from govstream.session import AsyncSession, IllegalStep, Session
from projections.lifecycle import INVALID_TRANSITION, UNKNOWN_OPERATION, Status, transition


class RecordingEmitter:
    """Keeps what it is sent; fails the next `fail` sends (a broker timeout)."""

    def __init__(self) -> None:
        self.sent: list[SessionEvent] = []
        self.fail = 0

    def emit(self, event: SessionEvent) -> None:
        if self.fail:
            self.fail -= 1
            raise TimeoutError("broker did not acknowledge")
        self.sent.append(event)


class AsyncRecordingEmitter(RecordingEmitter):
    async def emit(self, event: SessionEvent) -> None:  # type: ignore[override]
        await asyncio.sleep(0)  # a real await point: concurrent steps interleave here
        super().emit(event)


def _clock() -> Any:
    times = iter(
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC) + timedelta(seconds=i) for i in range(99)
    )
    return lambda: next(times)


SESSION = {
    "tenant_id": "acme",
    "session_id": "s-1",
    "workflow_id": "support",
    "tier": "A",
    "plan": "pro",
    "actor_id": "user-7",
    "environment": "staging",
}
TURN = {
    "model": "gpt-4o-mini",
    "input_tokens": 800,
    "output_tokens": 200,
    "cost_usd_micros": 240,
    "latency_ms": 900,
}


def test_the_builder_fills_every_envelope_field_and_the_lifecycle_accepts_the_session() -> None:
    emitter = RecordingEmitter()
    session = Session(emitter, clock=_clock(), **SESSION)  # type: ignore[arg-type]
    session.start()
    session.turn(**TURN)
    proposal = session.propose_tool(tool="http", action="post", destination_host="api.example.com")
    session.approval(proposal.operation_key, approver="ops-lead", granted=True)  # type: ignore[attr-defined]
    session.tool_completed(proposal.operation_key, status="succeeded", latency_ms=40)  # type: ignore[attr-defined]
    session.summary("refund order 42", facts=["order 42 exists"])
    session.checkpoint("s3://bucket/ckpt-1")
    session.turn(**TURN)
    session.close()

    sent = emitter.sent
    assert [type(e).__name__ for e in sent] == [
        "SessionStarted", "TurnCompleted", "ToolCallProposed", "ApprovalRecorded",
        "ToolCallCompleted", "TaskSummaryUpdated", "CheckpointCreated", "TurnCompleted",
        "SessionClosed",
    ]  # fmt: skip
    assert len({e.event_id for e in sent}) == len(sent)
    assert len({e.idempotency_key for e in sent}) == len(sent)
    assert sent[0].idempotency_key == "s-1/1/start" and sent[-1].idempotency_key == "s-1/9/close"
    assert all(e.tenant_id == "acme" and e.session_id == "s-1" for e in sent)
    assert all(e.workflow_id == "support" and e.environment == "staging" for e in sent)
    assert all(e.correlation_id == "s-1" and e.attempt == 1 for e in sent)
    assert [e.occurred_at.second for e in sent] == list(range(9))
    start = sent[0]
    assert isinstance(start, SessionStarted) and (start.tier, start.plan) == ("A", "pro")
    assert start.causation_id is None
    # Causation: the previous step, except that an approval or a completion names its proposal.
    assert sent[1].causation_id == start.event_id
    assert sent[3].causation_id == sent[2].event_id
    assert sent[4].causation_id == sent[2].event_id
    assert sent[5].causation_id == sent[4].event_id
    # The lifecycle itself, folding what was sent, ends where the builder says.
    state = None
    for event in sent:
        state = transition(state, event).new_state  # type: ignore[union-attr]
    assert state is not None and state.status is Status.COMPLETED
    assert session.state == state


def test_a_denied_call_must_be_completed_rejected_before_close_and_nothing_is_sent() -> None:
    emitter = RecordingEmitter()
    session = Session(emitter, clock=_clock(), **SESSION)  # type: ignore[arg-type]
    session.start()
    session.turn(**TURN)
    proposal = session.propose_tool(tool="shell", action="exec", risk_level="high")
    assert isinstance(proposal, ToolCallProposed)
    before = list(emitter.sent)

    with pytest.raises(IllegalStep) as refused:
        session.close()
    assert refused.value.reason_code == INVALID_TRANSITION
    assert "waiting_for_tool" in refused.value.reason
    with pytest.raises(IllegalStep) as unknown:
        session.tool_completed("s-1/op-unknown", status="rejected")
    assert unknown.value.reason_code == UNKNOWN_OPERATION
    assert emitter.sent == before  # refused locally: nothing reached the emitter

    session.tool_completed(proposal.operation_key, status="rejected")
    closed = session.close()
    assert isinstance(closed, SessionClosed) and session.state.status is Status.COMPLETED  # type: ignore[union-attr]


def test_a_step_before_start_is_refused_with_the_lifecycles_reason() -> None:
    session = Session(RecordingEmitter(), **SESSION)  # type: ignore[arg-type]
    with pytest.raises(IllegalStep) as refused:
        session.turn(**TURN)
    assert refused.value.reason_code == "no_session"
    assert str(refused.value) == "no_session: TurnCompleted before SessionStarted"


def test_a_retried_step_keeps_its_idempotency_key_and_counts_the_attempt() -> None:
    emitter = RecordingEmitter()
    session = Session(emitter, clock=_clock(), **SESSION)  # type: ignore[arg-type]
    session.start()
    emitter.fail = 2
    for _ in range(2):
        with pytest.raises(TimeoutError):
            session.turn(**TURN)
    retried = session.turn(**TURN)
    assert isinstance(retried, TurnCompleted)
    assert (retried.idempotency_key, retried.attempt) == ("s-1/2/turn", 3)
    nxt = session.turn(**TURN)
    assert (nxt.idempotency_key, nxt.attempt) == ("s-1/3/turn", 1)
    # A caller's own key (its step id, stable across process restarts) wins.
    own = session.turn(**TURN, idempotency_key="run-9/step-4")
    assert own.idempotency_key == "run-9/step-4"


def test_async_steps_awaited_together_go_out_in_order_with_distinct_keys() -> None:
    async def run() -> list[SessionEvent]:
        emitter = AsyncRecordingEmitter()
        session = AsyncSession(emitter, clock=_clock(), **SESSION)  # type: ignore[arg-type]
        await session.start()
        await session.turn(**TURN)
        first, second = await asyncio.gather(
            session.propose_tool(tool="http", action="get", operation_key="op-a"),
            session.propose_tool(tool="http", action="get", operation_key="op-b"),
        )
        assert isinstance(first, ToolCallProposed) and isinstance(second, ToolCallProposed)
        done = await session.tool_completed("op-a", status="succeeded")
        assert isinstance(done, ToolCallCompleted) and done.causation_id == first.event_id
        with pytest.raises(IllegalStep):
            await session.close()  # op-b is still pending
        await session.tool_completed("op-b", status="failed")
        await session.close()
        return emitter.sent

    sent = asyncio.run(run())
    assert [e.idempotency_key for e in sent] == [
        "s-1/1/start", "s-1/2/turn", "s-1/3/propose_tool", "s-1/4/propose_tool",
        "s-1/5/tool_completed", "s-1/6/tool_completed", "s-1/7/close",
    ]  # fmt: skip
