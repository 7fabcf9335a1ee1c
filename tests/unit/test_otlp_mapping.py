"""The pure OTLP GenAI mapping (events/otlp.py): spans in, events and rejections out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from events.models import (
    SessionClosed,
    SessionFailed,
    SessionStarted,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
    session_key,
)
from events.otlp import (
    INVALID_FIELD,
    MISSING_TOKENS,
    STATUS_ERROR,
    TENANT_MISMATCH,
    OtlpSpan,
    map_spans,
    start_event_id,
)

TRACE = "5b8efff798038103d269b633813fc60c"
T0 = 1_764_000_000_000_000_000  # unix nanos, 2025-11-24T16:00:00Z
MS = 1_000_000
RESOURCE = {"service.name": "support-bot"}


def _span(span_id: str, op: str | None, start_ms: int, end_ms: int, **attrs: Any) -> OtlpSpan:
    attributes = {"gen_ai.operation.name": op, **attrs} if op else dict(attrs)
    return OtlpSpan(
        trace_id=TRACE,
        span_id=span_id,
        name=f"{op} x" if op else "GET /",
        start_unix_nano=T0 + start_ms * MS,
        end_unix_nano=T0 + end_ms * MS,
        attributes=attributes,
        resource=RESOURCE,
        scope_name="opentelemetry.instrumentation.openai_v2",
    )


def _agent(span_id: str = "a000000000000001", **attrs: Any) -> OtlpSpan:
    return _span(span_id, "invoke_agent", 0, 1000, **{"gen_ai.agent.name": "triage", **attrs})


def _chat_v136(span_id: str = "c000000000000001", start: int = 10, end: int = 260) -> OtlpSpan:
    """The attribute set instrumentations emit by default (semconv v1.36)."""
    return _span(
        span_id, "chat", start, end,
        **{"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.response.model": "gpt-4o-2024-08-06",
           "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30},
    )  # fmt: skip


def _chat_latest(span_id: str = "c000000000000002", start: int = 300, end: int = 400) -> OtlpSpan:
    """The latest set: gen_ai.provider.name, the conversation id."""
    return _span(
        span_id, "chat", start, end,
        **{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 50},
    )  # fmt: skip


def _tool(
    span_id: str = "d000000000000001", start: int = 270, end: int = 290, **a: Any
) -> OtlpSpan:
    return _span(
        span_id, "execute_tool", start, end,
        **{"gen_ai.tool.name": "get_weather", "gen_ai.tool.call.id": "call_abc",
           "server.address": "api.weather.example", **a},
    )  # fmt: skip


def _kinds(events: Any) -> list[str]:
    return [type(e).__name__ for e in events]


def test_an_agent_with_a_turn_and_a_tool_call_is_a_whole_session() -> None:
    mapped = map_spans([_chat_v136(), _tool(), _chat_latest(), _agent()], "t-a")
    assert not mapped.rejected and mapped.ignored == 0
    assert _kinds(mapped.events) == [
        "SessionStarted", "TurnCompleted", "ToolCallProposed", "ToolCallCompleted",
        "TurnCompleted", "SessionClosed",
    ]  # fmt: skip
    start, turn, proposed, completed, turn2, closed = mapped.events
    assert isinstance(start, SessionStarted)
    assert (start.session_id, start.workflow_id, start.tier) == (TRACE, "support-bot", "B")
    assert {e.workflow_id for e in mapped.events} == {"support-bot"}
    assert start.occurred_at == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
    assert start.event_id == start_event_id("t-a", TRACE)
    assert isinstance(turn, TurnCompleted)
    assert (turn.model, turn.input_tokens, turn.output_tokens) == ("gpt-4o-2024-08-06", 120, 30)
    assert (turn.latency_ms, turn.first_token_ms, turn.outcome) == (250, 250, "ok")
    assert turn.correlation_id == TRACE
    assert turn.producer == "otlp/opentelemetry.instrumentation.openai_v2"
    assert isinstance(proposed, ToolCallProposed) and isinstance(completed, ToolCallCompleted)
    assert (proposed.tool, proposed.operation_key) == ("get_weather", "call_abc")
    assert (proposed.destination_host, proposed.risk_level) == ("api.weather.example", "medium")
    assert (completed.operation_key, completed.status, completed.latency_ms) == (
        "call_abc", "succeeded", 20,
    )  # fmt: skip
    assert isinstance(turn2, TurnCompleted)
    assert (turn2.model, turn2.input_tokens, turn2.output_tokens) == ("gpt-4o", 200, 50)
    assert isinstance(closed, SessionClosed) and closed.reason == "completed"
    assert mapped.started == (session_key("t-a", TRACE),)
    assert len({e.event_id for e in mapped.events}) == 6
    assert all(e.idempotency_key == f"otlp/{e.event_id}" for e in mapped.events)


def test_pre_v1_27_token_names_are_aliases() -> None:
    old = _span(
        "c000000000000003", "chat", 0, 100,
        **{"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.usage.prompt_tokens": 11, "gen_ai.usage.completion_tokens": 7},
    )  # fmt: skip
    turn = map_spans([old], "t-a").events[1]
    assert isinstance(turn, TurnCompleted)
    assert (turn.input_tokens, turn.output_tokens) == (11, 7)


def test_missing_tokens_are_rejected_never_guessed() -> None:
    no_output = _span(
        "c000000000000004", "chat", 0, 100,
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5},
    )  # fmt: skip
    mapped = map_spans([no_output], "t-a")
    assert mapped.events == () and mapped.started == ()
    (rejected,) = mapped.rejected
    assert rejected.reason_code == MISSING_TOKENS
    assert "gen_ai.usage.output_tokens" in rejected.reason
    negative = _span(
        "c000000000000005", "chat", 0, 100,
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": -1,
           "gen_ai.usage.output_tokens": "3"},
    )  # fmt: skip
    assert map_spans([negative], "t-a").rejected[0].reason_code == INVALID_FIELD


def test_a_turn_without_an_agent_span_gets_an_implicit_start_with_the_same_id() -> None:
    first = map_spans([_chat_v136()], "t-a")
    assert _kinds(first.events) == ["SessionStarted", "TurnCompleted"]
    implicit = first.events[0]
    # Later, the agent span arrives alone: the caller remembers the session started.
    later = map_spans([_agent()], "t-a", started=first.started)
    assert _kinds(later.events) == ["SessionClosed"]
    # A caller that forgot (a restart) sends the start again: same id and key, so the
    # governor drops it as a redelivery.
    forgot = map_spans([_agent()], "t-a")
    assert _kinds(forgot.events) == ["SessionStarted", "SessionClosed"]
    again = forgot.events[0]
    assert (again.event_id, again.idempotency_key) == (
        implicit.event_id, implicit.idempotency_key,
    )  # fmt: skip


def test_an_exporter_retry_maps_to_the_same_events() -> None:
    batch = [_chat_v136(), _tool(), _agent()]
    assert map_spans(batch, "t-a").events == map_spans(batch, "t-a").events
    # Another tenant's identical spans are other events.
    ids_a = {e.event_id for e in map_spans(batch, "t-a").events}
    ids_b = {e.event_id for e in map_spans(batch, "t-b").events}
    assert not ids_a & ids_b


def test_order_is_start_then_time_then_close_whatever_the_export_order() -> None:
    late_first = [_agent(), _chat_latest(), _tool(), _chat_v136()]
    events = map_spans(late_first, "t-a").events
    assert _kinds(events) == [
        "SessionStarted", "TurnCompleted", "ToolCallProposed", "ToolCallCompleted",
        "TurnCompleted", "SessionClosed",
    ]  # fmt: skip
    times = [e.occurred_at for e in events]
    assert times == sorted(times)


def test_the_conversation_id_is_the_session() -> None:
    conv = {"gen_ai.conversation.id": "conv_42"}
    chat = _span(
        "c000000000000006", "chat", 0, 10,
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1,
           "gen_ai.usage.output_tokens": 1, **conv},
    )  # fmt: skip
    events = map_spans([chat], "t-a").events
    assert {e.session_id for e in events} == {"conv_42"}


def test_a_span_naming_another_tenant_is_rejected() -> None:
    foreign = _chat_v136()
    foreign = OtlpSpan(**{**foreign.__dict__, "resource": {"govstream.tenant_id": "t-b"}})
    mapped = map_spans([foreign, _chat_latest()], "t-a")
    assert [r.reason_code for r in mapped.rejected] == [TENANT_MISMATCH]
    assert _kinds(mapped.events) == ["SessionStarted", "TurnCompleted"]
    own = OtlpSpan(**{**foreign.__dict__, "resource": {"govstream.tenant_id": "t-a"}})
    assert not map_spans([own], "t-a").rejected


def test_failures_end_the_session_failed_and_mark_turns_and_tools() -> None:
    agent = _agent(**{"error.type": "RuntimeError"})
    chat = _span(
        "c000000000000007", "chat", 0, 50,
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 3,
           "gen_ai.usage.output_tokens": 0, "error.type": "timeout"},
    )  # fmt: skip
    tool = OtlpSpan(**{**_tool().__dict__, "status_code": STATUS_ERROR})
    _, turn, _, completed, failed = map_spans([chat, tool, agent], "t-a").events
    assert isinstance(turn, TurnCompleted) and (turn.outcome, turn.error_class) == (
        "timeout", "timeout",
    )  # fmt: skip
    assert isinstance(completed, ToolCallCompleted) and completed.status == "failed"
    assert isinstance(failed, SessionFailed) and failed.error_class == "RuntimeError"
    assert failed.reason == "triage failed: RuntimeError"


def test_other_spans_are_ignored_not_rejected() -> None:
    embeddings = _span("e000000000000001", "embeddings", 0, 5)
    http = _span("e000000000000002", None, 0, 5)
    mapped = map_spans([embeddings, http], "t-a")
    assert (mapped.events, mapped.rejected, mapped.ignored) == ((), (), 2)


def test_govstream_attributes_set_the_start_and_the_risk() -> None:
    resource = {"govstream.tier": "a", "govstream.plan": "team", "govstream.actor_id": "u-1",
                "govstream.policy_version": "2026-11-01", "service.name": "svc"}  # fmt: skip
    agent = OtlpSpan(**{**_agent().__dict__, "resource": resource})
    tool = _tool(**{"govstream.risk_level": "high"})
    start, _, _, _ = map_spans([tool, agent], "t-a").events
    assert isinstance(start, SessionStarted)
    assert (start.tier, start.plan, start.actor_id, start.policy_version) == (
        "A", "team", "u-1", "2026-11-01",
    )  # fmt: skip
    proposed = map_spans([tool], "t-a").events[1]
    assert isinstance(proposed, ToolCallProposed) and proposed.risk_level == "high"
    bad = _tool(**{"govstream.risk_level": "extreme"})
    assert map_spans([bad], "t-a").rejected[0].reason_code == INVALID_FIELD


@pytest.mark.parametrize("price", [0, 1234])
def test_the_price_comes_from_the_caller(price: int) -> None:
    turn = map_spans([_chat_v136()], "t-a", price=lambda m, i, o, at: price).events[1]
    assert isinstance(turn, TurnCompleted) and turn.cost_usd_micros == price
