"""OTLP/HTTP intake: `POST /v1/traces` turns GenAI spans into events on the tenant's log.

A tenant API key authenticates the request (the guard, streams/http_guard.py,
admits `application/x-protobuf` and `application/json` on this route only).
The body is an ExportTraceServiceRequest, binary protobuf or OTLP/JSON (hex
trace and span ids, lowerCamelCase names, 64-bit integers as strings or
numbers). The spans go through the pure mapping (events/otlp.py); the events
it returns are appended to the tenant's log as a runtime's Emitter appends
them (Avro, keyed by tenant, acks=all), so the governor folds them (budgets,
lifecycle, policy) and the ClickHouse sink stores them. A span that cannot be
mapped becomes a RecordDeadLettered on the dead-letter topic with its reason.

Answers, per the OTLP/HTTP specification, in the request's encoding: 200 with
an ExportTraceServiceResponse (`partial_success.rejected_spans` and an
`error_message` when spans were dead-lettered); 400 a body that does not
decode; 413 a body over GOVSTREAM_OTLP_MAX_BODY_BYTES; 503 the log did not
take the events (the exporter retries; every event id is deterministic, so
the retry is a redelivery the governor drops). 4xx and 5xx bodies are a
google.rpc.Status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.rpc.status_pb2 import Status
from mode import Service
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from events.codec import Codec
from events.emitter import Emitter
from events.models import (
    RecordDeadLettered,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    session_key,
)
from events.otlp import (
    OtlpDefaults,
    OtlpMapped,
    OtlpSpan,
    Pricer,
    Scalar,
    event_id,
    idle_close,
    map_spans,
)
from events.topics import Topics
from projections.pricing import ModelPrice, PriceTable, cost_usd_micros, prices_for
from streams.http_guard import principal_of
from streams.ingest import bounded_raw

log = logging.getLogger(__name__)

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEAD_LETTER_SOURCE = "otlp:/v1/traces"  # a dead letter's source_topic: no Kafka position
_MAX_MESSAGES = 5  # rejection reasons quoted in partial_success.error_message


class OtlpDecodeError(ValueError):
    """The body is not an ExportTraceServiceRequest in the declared encoding."""


# --- decoding ---------------------------------------------------------------------------------


def _hex_to_base64(value: Any, where: str) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise OtlpDecodeError(f"{where}: {value[:40]!r} is not a hex id") from None


def _ids_to_base64(data: Any) -> None:
    """OTLP/JSON carries trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if not isinstance(data, dict):
        raise OtlpDecodeError("the body is not a JSON object")
    for resource_spans in data.get("resourceSpans") or data.get("resource_spans") or ():
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get(
            "scope_spans", ()
        ):
            if not isinstance(scope_spans, dict):
                continue
            for span in scope_spans.get("spans") or ():
                if not isinstance(span, dict):
                    continue
                for holder in (span, *(span.get("links") or ())):
                    if not isinstance(holder, dict):
                        continue
                    for name in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId",
                                 "parent_span_id"):  # fmt: skip
                        if name in holder:
                            holder[name] = _hex_to_base64(holder[name], name)


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body (opentelemetry-proto's JSON encoding rules) as the request."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"invalid JSON: {exc}") from None
    _ids_to_base64(data)
    request = ExportTraceServiceRequest()
    try:
        # Receivers ignore fields they do not know (OTLP: forward compatibility).
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise OtlpDecodeError(str(exc)[:300]) from None
    return request


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (ProtobufDecodeError, ValueError) as exc:
        raise OtlpDecodeError(f"invalid protobuf: {exc}") from None
    return request


def _scalar(value: AnyValue) -> Scalar | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    return None  # arrays, maps and bytes map to no event field


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for pair in pairs:
        value = _scalar(pair.value)
        if value is not None:
            out[pair.key] = value
    return out


def _hex(raw: bytes) -> str:
    return binascii.hexlify(raw).decode()


def spans_of(request: ExportTraceServiceRequest) -> list[OtlpSpan]:
    """Every span of the request, with its resource's attributes and its scope's name."""
    out: list[OtlpSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                out.append(
                    OtlpSpan(
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id) or None,
                        name=span.name,
                        start_unix_nano=span.start_time_unix_nano,
                        end_unix_nano=span.end_time_unix_nano,
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        scope_name=scope,
                    )
                )
    return out


# --- answers ----------------------------------------------------------------------------------


def _encoded(message: Any, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return bytes(message.SerializeToString())


def export_response(mapped: OtlpMapped, content_type: str) -> web.Response:
    answer = ExportTraceServiceResponse()
    if mapped.rejected:
        answer.partial_success.rejected_spans = len(mapped.rejected)
        shown = "; ".join(
            f"span {r.span.span_id}: {r.reason_code}: {r.reason}"
            for r in mapped.rejected[:_MAX_MESSAGES]
        )
        more = len(mapped.rejected) - _MAX_MESSAGES
        answer.partial_success.error_message = shown + (f"; and {more} more" if more > 0 else "")
    return web.Response(body=_encoded(answer, content_type), content_type=content_type)


def status_response(status: int, message: str, content_type: str) -> web.Response:
    """A 4xx/5xx answer: a google.rpc.Status in the request's encoding."""
    body = Status(code=_GRPC_CODES.get(status, 2), message=message)
    return web.Response(status=status, body=_encoded(body, content_type), content_type=content_type)


# HTTP status -> google.rpc.Code
_GRPC_CODES = {400: 3, 413: 8, 503: 14}


# --- pricing ----------------------------------------------------------------------------------


def pricer(prices: PriceTable, fallback: ModelPrice | None = None) -> Pricer:
    """A turn's cost from the governor's price catalog, in force on the turn's day: the
    fallback price for a model the catalog does not price, else 0 (docs/otlp.md)."""

    def price(model: str, input_tokens: int, output_tokens: int, at: datetime) -> int:
        table, _ = prices_for(prices, model, at, fallback)
        if model not in table:
            return 0
        return cost_usd_micros(table, model, input_tokens, output_tokens)

    return price


# --- the service ------------------------------------------------------------------------------


class StartedSessions:
    """The session keys whose SessionStarted this worker appended, the newest `limit`.

    Forgetting one costs a repeated SessionStarted with the same event id and
    idempotency key: a redelivery the governor drops.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)

    def discard(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys.pop(key, None)


@dataclass(frozen=True)
class OpenSession:
    tenant: str
    session_id: str
    last_seen: float  # monotonic seconds

    @property
    def key(self) -> str:
        return session_key(self.tenant, self.session_id)


class OpenSessions:
    """Sessions this intake appended events of and no end yet, least recently touched
    first, the newest `limit`: what the idle sweep closes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: OrderedDict[str, OpenSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def touch(self, events: Iterable[SessionEvent], now: float) -> None:
        for event in events:
            key = event.session_key
            if isinstance(event, SessionClosed | SessionFailed):
                self._open.pop(key, None)
                continue
            self._open[key] = OpenSession(event.tenant_id, event.session_id, now)
            self._open.move_to_end(key)
        while len(self._open) > self.limit:
            self._open.popitem(last=False)

    def idle(self, now: float, seconds: float) -> list[OpenSession]:
        out = []
        for item in self._open.values():
            if now - item.last_seen < seconds:
                break  # the rest were touched later
            out.append(item)
        return out

    def forget(self, items: Iterable[OpenSession]) -> None:
        for item in items:
            self._open.pop(item.key, None)

    def restore(self, items: Iterable[OpenSession]) -> None:
        for item in items:
            if item.key not in self._open:
                self._open[item.key] = item
                self._open.move_to_end(item.key, last=False)


@dataclass
class IntakeCounts:
    spans: int = 0
    events: int = 0
    rejected: int = 0
    ignored: int = 0
    idle_closed: int = 0

    def add(self, spans: int, mapped: OtlpMapped) -> None:
        self.spans += spans
        self.events += len(mapped.events)
        self.rejected += len(mapped.rejected)
        self.ignored += mapped.ignored


class OtlpIntake(Service):
    """`POST /v1/traces` on the worker's web server, and the producer it appends with."""

    def __init__(
        self,
        *,
        bootstrap: str,
        client_id: str,
        topics: Topics,
        codec: Codec,
        price: Pricer,
        max_body_bytes: int,
        remembered_sessions: int = 100_000,
        idle_close_seconds: float = 1800.0,
        defaults: OtlpDefaults | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bootstrap, self.client_id = bootstrap, client_id
        self.topics, self.codec = topics, codec
        self.price, self.max_body_bytes = price, max_body_bytes
        self.defaults = defaults or OtlpDefaults()
        self.known_sessions = StartedSessions(remembered_sessions)
        self.open_sessions = OpenSessions(remembered_sessions)
        self.idle_close_seconds = idle_close_seconds
        self.counts = IntakeCounts()
        self._emitter: Emitter | None = None
        # Mapping and handing records to the producer, one request at a time: the
        # order they are handed over is their order in the tenant's log.
        self._order = asyncio.Lock()

    async def on_start(self) -> None:
        self._emitter = Emitter(
            self.bootstrap, topics=self.topics, codec=self.codec, client_id=self.client_id,
            linger_ms=2,
        )  # fmt: skip
        await self._emitter.start()

    async def on_stop(self) -> None:
        if self._emitter is not None:
            await self._emitter.stop()

    def mount(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATH, self.traces)

    @Service.task
    async def _close_idle_sessions(self) -> None:
        if self.idle_close_seconds <= 0:
            return
        interval = max(0.5, min(30.0, self.idle_close_seconds / 4))
        while not self.should_stop:
            await self.sleep(interval)
            await self.close_idle(time.monotonic(), datetime.now(UTC))

    async def close_idle(self, now: float, wall: datetime) -> int:
        """Close the sessions no span touched for idle_close_seconds; how many."""
        try:
            async with self._order:
                due = self.open_sessions.idle(now, self.idle_close_seconds)
                if not due:
                    return 0
                self.open_sessions.forget(due)
                deliveries = await self._hand_over(
                    [idle_close(i.tenant, i.session_id, wall, self.idle_close_seconds) for i in due]
                )
            await asyncio.gather(*deliveries)
        except KafkaError as exc:
            self.open_sessions.restore(due)  # the next sweep tries again
            log.warning("OTLP intake: closing %d idle sessions failed: %s", len(due), exc)
            return 0
        self.counts.idle_closed += len(due)
        return len(due)

    async def _body(self, request: web.Request) -> bytes | None:
        """The (decompressed) body, or None past the limit: read in chunks, never whole."""
        if (request.content_length or 0) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type  # the guard admitted protobuf or JSON only
        tenant = principal_of(request).tenant
        assert tenant is not None  # the guard admits tenant keys only
        body = await self._body(request)
        if body is None:
            return status_response(
                413, f"the body is larger than {self.max_body_bytes} bytes", content_type
            )
        try:
            decoded = decode_json(body) if content_type == JSON else decode_protobuf(body)
        except OtlpDecodeError as exc:
            return status_response(400, f"undecodable {content_type} body: {exc}", content_type)
        spans = spans_of(decoded)
        try:
            async with self._order:
                mapped = map_spans(
                    spans, tenant, started=self.known_sessions, defaults=self.defaults,
                    price=self.price,
                )  # fmt: skip
                self.known_sessions.add(mapped.started)
                self.open_sessions.touch(mapped.events, time.monotonic())
                deliveries = await self._hand_over(
                    mapped.events, dead_letters(tenant, mapped), tenant.encode()
                )
            await asyncio.gather(*deliveries)
        except KafkaError as exc:  # the broker did not take them: the exporter retries
            self.known_sessions.discard(mapped.started)
            log.warning("OTLP intake: appending %d events failed: %s", len(mapped.events), exc)
            return status_response(503, "the log did not take the events; retry", content_type)
        self.counts.add(len(spans), mapped)
        return export_response(mapped, content_type)

    async def _hand_over(
        self,
        events: Sequence[SessionEvent],
        letters: Sequence[RecordDeadLettered] = (),
        letter_key: bytes = b"",
    ) -> list[Awaitable[Any]]:
        """Hand every record to the producer, in order (events keyed by their tenant, as
        an Emitter routes them); their delivery futures. KafkaError: not handed over."""
        emitter = self._emitter
        assert emitter is not None
        out: list[Awaitable[Any]] = []
        for event in events:
            topic, key, value, _ = emitter.prepare(event)
            out.append(await emitter.enqueue(topic, value, key))
        for letter in letters:
            value = emitter.codec.encode(letter)
            out.append(await emitter.enqueue(self.topics.deadletter, value, letter_key))
        return out


def dead_letters(tenant: str, mapped: OtlpMapped) -> list[RecordDeadLettered]:
    """One dead letter per rejected span: the span as decoded (JSON), the reason, and as
    its source the OTLP route (it has no Kafka position: partition and offset 0).
    Its id is the span's, so a retried export gives the same dead letter."""
    out = []
    for rejection in mapped.rejected:
        span = rejection.span
        raw, reason = bounded_raw(
            orjson.dumps(asdict(span), option=orjson.OPT_SORT_KEYS), rejection.reason
        )
        out.append(
            RecordDeadLettered(
                event_id=event_id(tenant, span.trace_id, span.span_id, "dead-letter"),
                occurred_at=datetime.fromtimestamp(
                    (span.end_unix_nano or span.start_unix_nano) / 1e9, tz=UTC
                ),
                reason_code=rejection.reason_code,
                reason=reason,
                source_topic=DEAD_LETTER_SOURCE,
                source_partition=0,
                source_offset=0,
                raw_key=tenant.encode(),
                raw_value=raw,
            )
        )
    return out
