"""The OTLP intake's decoding and answers (streams/otlp_intake.py), without a worker."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from events.codec import Codec
from events.models import RecordDeadLettered, TurnCompleted
from events.otlp import MISSING_TOKENS, OtlpSpan, idle_close, map_spans
from events.registry import EmbeddedRegistry
from projections.pricing import DEFAULT_PRICES, cost_usd_micros
from streams.otlp_intake import (
    DEAD_LETTER_SOURCE,
    JSON,
    PROTOBUF,
    OpenSessions,
    OtlpDecodeError,
    StartedSessions,
    dead_letters,
    decode_json,
    decode_protobuf,
    export_response,
    pricer,
    spans_of,
)

# Shaped like the specification's example (opentelemetry-proto examples/trace.json):
# hex ids (upper case there), 64-bit integers as strings, enums as numbers,
# lowerCamelCase names; plus GenAI attributes and a field no version defines.
SPEC_EXAMPLE = b"""{
  "resourceSpans": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "my.service"}}
    ]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0"},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "chat gpt-4o",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 3,
        "attributes": [
          {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
          {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
          {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
          {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}},
          {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 300}},
          {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.2}},
          {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}
        ],
        "status": {"code": 1},
        "aFieldFromTheFuture": true
      }]
    }]
  }]
}"""


def test_the_json_decoder_reads_the_specification_example() -> None:
    (span,) = spans_of(decode_json(SPEC_EXAMPLE))
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173",
    )  # fmt: skip
    assert (span.start_unix_nano, span.end_unix_nano) == (1544712660000000000, 1544712661000000000)
    assert (span.status_code, span.scope_name, span.name) == (1, "my.library", "chat gpt-4o")
    assert span.resource == {"service.name": "my.service"}
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.request.temperature": 0.2,
    }  # arrays map to no field: left out
    turn = map_spans([span], "t-a").events[1]
    assert isinstance(turn, TurnCompleted)
    assert (turn.input_tokens, turn.output_tokens, turn.latency_ms) == (1200, 300, 1000)


def test_json_and_protobuf_decode_to_the_same_spans() -> None:
    request = decode_json(SPEC_EXAMPLE)
    assert spans_of(decode_protobuf(request.SerializeToString())) == spans_of(request)


@pytest.mark.parametrize(
    "body",
    [b"{nope", b"[]", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
     b'{"resourceSpans": "no"}'],
)  # fmt: skip
def test_undecodable_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_json(body)


def test_undecodable_protobuf_is_a_decode_error() -> None:
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(b"\xff\xff\xff\xff")


def _rejected_once() -> tuple[str, object]:
    data = orjson.loads(SPEC_EXAMPLE)
    attrs = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    attrs[:] = [a for a in attrs if not a["key"].startswith("gen_ai.usage")]
    mapped = map_spans(spans_of(decode_json(orjson.dumps(data))), "t-a")
    return "t-a", mapped


def test_partial_success_names_the_rejected_spans_in_the_request_encoding() -> None:
    _, mapped = _rejected_once()
    for content_type in (PROTOBUF, JSON):
        response = export_response(mapped, content_type)  # type: ignore[arg-type]
        assert response.status == 200 and response.content_type == content_type
        answer = ExportTraceServiceResponse()
        assert isinstance(response.body, bytes)
        if content_type == JSON:
            json_format.Parse(response.body, answer)
        else:
            answer.ParseFromString(response.body)
        assert answer.partial_success.rejected_spans == 1
        assert MISSING_TOKENS in answer.partial_success.error_message


def test_a_rejected_span_is_a_dead_letter_with_its_reason() -> None:
    tenant, mapped = _rejected_once()
    (letter,) = dead_letters(tenant, mapped)  # type: ignore[arg-type]
    assert isinstance(letter, RecordDeadLettered)
    assert (letter.reason_code, letter.source_topic) == (MISSING_TOKENS, DEAD_LETTER_SOURCE)
    assert letter.occurred_at == datetime(2018, 12, 13, 14, 51, 1, tzinfo=UTC)
    assert orjson.loads(letter.raw_value)["span_id"] == "eee19b7ec3c1b174"
    assert dead_letters(tenant, mapped) == [letter]  # a retry: the same dead letter
    Codec(EmbeddedRegistry()).encode(letter)  # it fits the dead-letter schema


def test_turns_are_priced_from_the_catalog() -> None:
    price = pricer(DEFAULT_PRICES)
    at = datetime(2026, 11, 30, tzinfo=UTC)
    assert price("gpt-4o", 1000, 100, at) == cost_usd_micros(DEFAULT_PRICES, "gpt-4o", 1000, 100)
    assert price("gpt-4o", 1000, 100, at) > 0
    assert price("no-such-model", 1000, 100, at) == 0


def test_started_sessions_are_bounded_newest_kept() -> None:
    started = StartedSessions(2)
    started.add(["a", "b"])
    started.add(["a"])  # touched: newest
    started.add(["c"])
    assert ("a" in started, "b" in started, "c" in started) == (True, False, True)
    started.discard(["a"])
    assert len(started) == 1


def test_an_empty_request_maps_to_nothing() -> None:
    assert spans_of(ExportTraceServiceRequest()) == []
    assert spans_of(decode_json(b"{}")) == []


def test_open_sessions_are_due_in_the_order_they_went_quiet() -> None:
    chat, agent = _chat_and_agent()
    open_sessions = OpenSessions(10)
    first = map_spans([chat], "t-a")
    open_sessions.touch(first.events, now=100.0)
    other = map_spans([chat], "t-b")
    open_sessions.touch(other.events, now=200.0)
    assert [o.tenant for o in open_sessions.idle(now=250.0, seconds=100)] == ["t-a"]
    assert [o.tenant for o in open_sessions.idle(now=300.0, seconds=100)] == ["t-a", "t-b"]
    # The agent span ended: the session is no longer open.
    open_sessions.touch(map_spans([agent], "t-a", started=first.started).events, now=260.0)
    assert [o.tenant for o in open_sessions.idle(now=400.0, seconds=100)] == ["t-b"]
    due = open_sessions.idle(now=400.0, seconds=100)
    open_sessions.forget(due)
    assert len(open_sessions) == 0
    open_sessions.restore(due)
    assert open_sessions.idle(now=400.0, seconds=100) == due


def test_an_idle_close_has_one_id_per_session() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    closed = idle_close("t-a", "s-1", at, 1800)
    assert closed.event_id == idle_close("t-a", "s-1", at, 1800).event_id
    assert closed.event_id != idle_close("t-b", "s-1", at, 1800).event_id
    assert closed.reason == "idle: no agent span ended within 1800 s of the last span"


def _chat_and_agent() -> tuple[OtlpSpan, OtlpSpan]:
    (chat,) = spans_of(decode_json(SPEC_EXAMPLE))
    agent = OtlpSpan(
        **{**chat.__dict__, "span_id": "eee19b7ec3c1b173", "parent_span_id": None,
           "attributes": {"gen_ai.operation.name": "invoke_agent"}},
    )  # fmt: skip
    return chat, agent


def test_a_huge_span_is_dead_lettered_cut_to_fit_a_record() -> None:
    """The letter of an unmappable span is bounded like every other dead letter."""
    from streams.ingest import MAX_DEAD_LETTER_RAW, bounded_raw

    raw, reason = bounded_raw(b"x" * (MAX_DEAD_LETTER_RAW + 10), "missing tokens")
    assert len(raw) == MAX_DEAD_LETTER_RAW
    assert reason == f"missing tokens (raw value truncated from {MAX_DEAD_LETTER_RAW + 10} bytes)"
    assert bounded_raw(b"small", "r") == (b"small", "r")


def test_idle_closes_the_log_refuses_are_kept_for_the_next_sweep() -> None:
    """close_idle: when the producer refuses the hand-over (KafkaError), the sessions
    stay open for the next sweep and nothing is counted; when it takes them, they are
    closed and counted."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError

    from events.topics import Topics
    from streams.otlp_intake import OtlpIntake

    class Producer:
        refuse = True

        def prepare(self, event: object) -> tuple[str, bytes, bytes, None]:
            return "t", b"k", b"v", None

        async def enqueue(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            if self.refuse:
                raise KafkaConnectionError("no broker")
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    async def scenario() -> None:
        codec = Codec(EmbeddedRegistry())
        intake = OtlpIntake(bootstrap="-", client_id="t", topics=Topics("t"), codec=codec,
                            price=pricer(DEFAULT_PRICES), max_body_bytes=1 << 20,
                            idle_close_seconds=10)  # fmt: skip
        intake._emitter = Producer()  # type: ignore[assignment]
        chat, _ = _chat_and_agent()
        intake.open_sessions.touch(map_spans([chat], "t-a").events, now=0.0)
        wall = datetime(2026, 11, 30, tzinfo=UTC)
        assert await intake.close_idle(100.0, wall) == 0
        assert len(intake.open_sessions) == 1 and intake.counts.idle_closed == 0
        intake._emitter.refuse = False  # type: ignore[union-attr]
        assert await intake.close_idle(100.0, wall) == 1
        assert len(intake.open_sessions) == 0 and intake.counts.idle_closed == 1

    asyncio.run(scenario())
