"""OTLP/HTTP intake on a real worker, with the real OpenTelemetry SDK and exporter as client.

Spans the SDK exports (protobuf, one request per span: SimpleSpanProcessor, so
the children arrive before their agent span) become events on the tenant's
log: turns arrive as rows in ClickHouse, count against the tenant's budgets,
and the session goes start -> turns/tools -> completed with no invalid
transition. A JSON-encoded export works too; a span that cannot be mapped
ends on the dead-letter topic with its reason; a bad key is 401.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from events.codec import Codec
from events.models import InvalidTransitionRejected, RecordDeadLettered, SessionClosed
from events.otlp import MISSING_TOKENS, TENANT_MISMATCH
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.settings import Settings
from projections.pricing import DEFAULT_PRICES, cost_usd_micros
from sql.client import open_clickhouse
from tests.conftest import bearer, poll, worker_fixture
from tests.kafka_io import read_events_until, read_topic
from tests.readme import snippet

pytestmark = pytest.mark.integration
TENANT, KEY, KEY_OTHER, KEY_OPS = "t-otlp", "key-otlp", "key-other", "key-ops"
WAIT_SECONDS = 60
CODEC = Codec(EmbeddedRegistry())


worker = worker_fixture(
    "otlp",
    operator_key=KEY_OPS,
    api_keys=f"{KEY}:{TENANT},{KEY_OTHER}:t-other,{KEY_OPS}:*",
    # Spans are of now: the default bounds hold.
    max_event_age_days=30,
    # Sessions no agent span ends are closed after 3 s without spans (a test below).
    otlp_idle_close_seconds=3,
)


_poll = partial(poll, seconds=WAIT_SECONDS)


def _turn_rows(settings: Settings, session_id: str) -> list[tuple[Any, ...]]:
    with open_clickhouse(settings, role="client") as ch:
        return [
            tuple(row)
            for row in ch.query(
                "SELECT model, input_tokens, output_tokens, cost_usd_micros, outcome"
                " FROM turns FINAL WHERE tenant_id = {t:String} AND session_id = {s:String}"
                " ORDER BY occurred_at",
                {"t": TENANT, "s": session_id},
            ).rows
        ]


def _get(url: str, path: str, key: str = KEY) -> dict[str, Any]:
    reply = httpx.get(f"{url}{path}", headers=bearer(key), timeout=10)
    return {"status": reply.status_code, **(reply.json() if reply.status_code == 200 else {})}


def _provider(
    url: str, key: str, compression: Compression = Compression.NoCompression
) -> tuple[TracerProvider, list[SpanExportResult]]:
    """A TracerProvider exporting each span as it ends, recording the exporter's results."""
    results: list[SpanExportResult] = []

    class Recorded(OTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            result = super().export(spans)
            results.append(result)
            return result

    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-test-agent"}))
    exporter = Recorded(
        endpoint=f"{url}/v1/traces", headers=bearer(key), timeout=10, compression=compression
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, results


def test_sdk_spans_become_turns_in_clickhouse_and_count_against_the_budget(
    worker: tuple[Settings, str],
) -> None:
    settings, url = worker
    provider, results = _provider(url, KEY)
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "0.1b0")
    with tracer.start_as_current_span(
        "invoke_agent triage",
        kind=SpanKind.INTERNAL,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
                    "gen_ai.system": "openai"},
    ) as agent:  # fmt: skip
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            # The v1.36 set (what instrumentations emit by default).
            attributes={"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300},
        ):  # fmt: skip
            pass
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                        "gen_ai.tool.call.id": "call_1", "govstream.risk_level": "low"},
        ):  # fmt: skip
            pass
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            # The latest set: gen_ai.provider.name; an older instrumentation's token names.
            attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.prompt_tokens": 400, "gen_ai.usage.completion_tokens": 100},
        ):  # fmt: skip
            pass
        session = format(agent.get_span_context().trace_id, "032x")
    provider.shutdown()
    # Four requests (one per span, children first), every one taken whole.
    assert results == [SpanExportResult.SUCCESS] * 4

    rows = _poll("turn rows", lambda: _turn_rows(settings, session), lambda r: len(r) == 2)
    cost_4o = cost_usd_micros(DEFAULT_PRICES, "gpt-4o", 1200, 300)
    cost_mini = cost_usd_micros(DEFAULT_PRICES, "gpt-4o-mini", 400, 100)
    assert rows == [
        ("gpt-4o", 1200, 300, cost_4o, "ok"),
        ("gpt-4o-mini", 400, 100, cost_mini, "ok"),
    ]
    # The governor folded them: the session's tokens and the tenant's day cost.
    budgets = _poll(
        "budgets",
        lambda: _get(url, f"/v1/budgets/{TENANT}?session={session}"),
        lambda b: b["status"] == 200 and "session_tokens" in b["balances"]
        and b["balances"]["session_tokens"]["used"] == 2000,
    )  # fmt: skip
    assert budgets["balances"]["tenant_cost_day"]["used"] >= cost_4o + cost_mini > 0
    # Start first, close last, even though the agent span arrived last: completed, and
    # no transition of the session was refused.
    context = _poll(
        "session completed",
        lambda: _get(url, f"/v1/sessions/{session}/context"),
        lambda c: c["status"] == 200 and c["constraints"]["status"] == "completed",
    )
    turns = [(t["model"], t["input_tokens"], t["output_tokens"]) for t in context["recent_turns"]]
    assert turns == [("gpt-4o", 1200, 300), ("gpt-4o-mini", 400, 100)]
    derived = read_events_until(
        settings.kafka_bootstrap or "", Topics(settings.topic_prefix).derived, lambda e: True, 5
    )
    assert not [
        e for e in derived if isinstance(e, InvalidTransitionRejected) and e.session_id == session
    ]
    # The worker counts what it took (operator's health view).
    health = _get(url, "/v1/health", KEY_OPS)
    assert health["otlp"]["spans"] >= 4 and health["otlp"]["events"] >= 6


def test_a_json_export_is_taken_and_answered_in_json(worker: tuple[Settings, str]) -> None:
    settings, url = worker
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "json-agent"}}]},
            "scopeSpans": [{
                "scope": {"name": "manual"},
                "spans": [{
                    "traceId": uuid.uuid4().hex.upper(),
                    "spanId": "EEE19B7EC3C1B174",
                    "name": "chat gpt-4o",
                    "kind": 3,
                    "startTimeUnixNano": str(now - 800_000_000),
                    "endTimeUnixNano": str(now),
                    "attributes": [
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.conversation.id", "value": {"stringValue": conversation}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "70"}},
                        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 30}},
                    ],
                }],
            }],
        }]
    }  # fmt: skip
    reply = httpx.post(f"{url}/v1/traces", json=body, headers=bearer(KEY), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {}  # a full success: no partial_success
    rows = _poll("json turn", lambda: _turn_rows(settings, conversation), lambda r: len(r) == 1)
    assert rows == [("gpt-4o", 70, 30, cost_usd_micros(DEFAULT_PRICES, "gpt-4o", 70, 30), "ok")]
    again = httpx.post(f"{url}/v1/traces", json=body, headers=bearer(KEY), timeout=10)
    assert again.status_code == 200  # the exporter's retry: a redelivery
    budgets = _poll(
        "json budgets",
        lambda: _get(url, f"/v1/budgets/{TENANT}?session={conversation}"),
        lambda b: b["status"] == 200 and "session_tokens" in b["balances"]
        and b["balances"]["session_tokens"]["used"] == 100,
    )  # fmt: skip
    assert budgets["balances"]["session_tokens"]["used"] == 100  # counted once


def test_a_session_without_an_agent_span_is_closed_when_idle(
    worker: tuple[Settings, str],
) -> None:
    settings, url = worker
    provider, results = _provider(url, KEY, Compression.Gzip)  # gzip bodies are taken too
    with provider.get_tracer("manual").start_as_current_span(
        "chat gpt-4o",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 5},
    ) as chat:  # fmt: skip
        session = format(chat.get_span_context().trace_id, "032x")
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS]
    context = _poll(
        "idle close",
        lambda: _get(url, f"/v1/sessions/{session}/context"),
        lambda c: c["status"] == 200 and c["constraints"]["status"] == "closed",
    )
    assert [t["input_tokens"] for t in context["recent_turns"]] == [5]
    closes = read_events_until(
        settings.kafka_bootstrap or "",
        _topics(settings).sessions,
        lambda events: any(isinstance(e, SessionClosed) and e.session_id == session
                           for e in events),
        WAIT_SECONDS,
    )  # fmt: skip
    (closed,) = [e for e in closes if isinstance(e, SessionClosed) and e.session_id == session]
    assert closed.reason.startswith("idle: no agent span ended within 3")


def _dead_letters(settings: Settings) -> list[RecordDeadLettered]:
    records = asyncio.run(read_topic(settings.kafka_bootstrap or "", _topics(settings).deadletter))
    decoded = (CODEC.decode(r.value).event for r in records)
    return [e for e in decoded if isinstance(e, RecordDeadLettered)]


def _topics(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix)


def test_unmappable_spans_are_dead_lettered_with_their_reason(
    worker: tuple[Settings, str],
) -> None:
    settings, url = worker
    provider, results = _provider(url, KEY)
    tracer = provider.get_tracer("manual")
    with tracer.start_as_current_span(
        "chat no-usage",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    ) as no_usage:
        no_usage.set_status(Status(StatusCode.ERROR, "rate limited"))
    with tracer.start_as_current_span(
        "chat foreign",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1,
                    "govstream.tenant_id": "t-other"},
    ) as foreign:  # fmt: skip
        pass
    with tracer.start_as_current_span("GET /health"):  # not GenAI: ignored, not rejected
        pass
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 3  # partial success is still a success
    wanted = {
        format(no_usage.get_span_context().span_id, "016x"): MISSING_TOKENS,
        format(foreign.get_span_context().span_id, "016x"): TENANT_MISMATCH,
    }

    def found() -> dict[str, str]:
        letters = _dead_letters(settings)
        return {
            span: letter.reason_code for letter in letters if (span := _span_id(letter)) in wanted
        }

    assert _poll("dead letters", found, lambda f: f == wanted) == wanted
    letter = next(e for e in _dead_letters(settings) if e.reason_code == MISSING_TOKENS)
    assert "gen_ai.usage.input_tokens" in letter.reason
    assert letter.raw_key == TENANT.encode()
    # The answer said so, in the partial success of the request's encoding.
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": uuid.uuid4().hex, "spanId": "00000000000000aa", "name": "chat",
        "startTimeUnixNano": str(time.time_ns() - 1000), "endTimeUnixNano": str(time.time_ns()),
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}],
    }]}]}]}  # fmt: skip
    reply = httpx.post(f"{url}/v1/traces", json=body, headers=bearer(KEY), timeout=10)
    assert reply.status_code == 200
    rejected = reply.json()["partialSuccess"]
    assert int(rejected["rejectedSpans"]) == 1
    assert "otlp_missing_attribute" in rejected["errorMessage"]


def _span_id(letter: RecordDeadLettered) -> str | None:
    try:
        return str(orjson.loads(letter.raw_value)["span_id"])
    except (ValueError, KeyError, TypeError):
        return None


def test_keys_content_types_and_bodies_are_checked(worker: tuple[Settings, str]) -> None:
    settings, url = worker
    post = f"{url}/v1/traces"
    proto = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(post, content=b"", headers=proto, timeout=5).status_code == 401
    wrong = httpx.post(post, content=b"", headers={**proto, **bearer("nope")}, timeout=5)
    assert wrong.status_code == 401
    # The real exporter with a wrong key: refused, nothing taken.
    provider, results = _provider(url, "nope")
    with provider.get_tracer("manual").start_as_current_span("invoke_agent x"):
        pass
    provider.shutdown()
    assert results == [SpanExportResult.FAILURE]
    # Only tenant keys send spans: their tenant is the key's.
    assert httpx.post(post, content=b"", headers={**proto, **bearer(KEY_OPS)}).status_code == 403
    text = {"Content-Type": "text/plain", **bearer(KEY)}
    assert httpx.post(post, content=b"x", headers=text, timeout=5).status_code == 415
    bad = httpx.post(post, content=b"\xff\xff\xff", headers={**proto, **bearer(KEY)}, timeout=5)
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("application/x-protobuf")
    huge = b"\x00" * (settings.otlp_max_body_bytes + 1)
    too_big = httpx.post(post, content=huge, headers={**proto, **bearer(KEY)}, timeout=30)
    assert too_big.status_code == 413
    empty = httpx.post(post, content=b"", headers={**proto, **bearer(KEY)}, timeout=5)
    assert empty.status_code == 200  # an empty export is a valid one


README_SPANS = """
tracer = trace.get_tracer("readme-agent")
with tracer.start_as_current_span("invoke_agent readme", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": SESSION}):
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.conversation.id": SESSION,
            "gen_ai.usage.input_tokens": 321, "gen_ai.usage.output_tokens": 123}):
        pass
assert provider.force_flush(30_000)
provider.shutdown()
"""


def test_the_readme_otlp_snippet_sends_spans_a_worker_turns_into_turns(
    worker: tuple[Settings, str],
) -> None:
    """The README's snippet, as printed, in a new interpreter (set_tracer_provider is
    once per process), then a span it exports arrives as a turn row."""
    settings, url = worker
    session = f"readme-{uuid.uuid4().hex[:8]}"
    prelude = f"worker_url = {url!r}\ntenant_api_key = {KEY!r}\nSESSION = {session!r}\n"
    program = prelude + snippet("otlp") + README_SPANS
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    rows = _poll("README turn", lambda: _turn_rows(settings, session), lambda rows: rows != [])
    assert [row[:3] for row in rows] == [("gpt-4o-mini", 321, 123)]
