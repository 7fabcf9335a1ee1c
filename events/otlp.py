"""OpenTelemetry GenAI spans as govstream events. Pure: no I/O, no clock.

The worker's OTLP/HTTP intake (streams/otlp_intake.py) decodes a request into
`OtlpSpan`s and calls `map_spans` with the tenant of the API key; what comes
back is the events to append to the tenant's log, in the order they must be
appended, and one rejection (reason code and reason) per span that cannot be
mapped. docs/otlp.md is the mapping table.

- session_id is `gen_ai.conversation.id`, else the trace id;
- `invoke_agent` opens the session at its start (SessionStarted) and ends it at
  its end (SessionClosed, or SessionFailed when it failed);
- `chat`, `text_completion`, `generate_content` are a TurnCompleted; token
  counts are required (a span without them is rejected, never guessed);
- `execute_tool` is a ToolCallProposed at its start and a ToolCallCompleted at
  its end;
- a session with no agent span in view gets an implicit SessionStarted before
  its first event. Whatever span produces it, a session's start has one
  event id and idempotency key (uuid5 of tenant and session), so a second one
  is a redelivery the governor drops;
- every other event id is uuid5(tenant, trace, span, role), so an exporter
  retrying the same batch is a redelivery too;
- spans of other operations (or none) are counted as ignored, not rejected;
- a session no agent span ended for a while is closed by the intake
  (`idle_close`: SessionClosed, reason "idle ...", one id per session).

Spans of the v1.36 attribute set (`gen_ai.system`, what instrumentations emit
by default) and of the latest one (`gen_ai.provider.name`) map the same way: no
event field takes the provider. The pre-v1.27 token names
(`gen_ai.usage.prompt_tokens`, `completion_tokens`) are aliases of
`input_tokens` / `output_tokens`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast
from urllib.parse import urlsplit

from pydantic import ValidationError

from events.models import (
    NAME_CHARS,
    NAME_MAX_CHARS,
    RiskLevel,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionStarted,
    Tier,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
    TurnOutcome,
    session_key,
)

Scalar = str | bool | int | float

# Span status codes (opentelemetry.proto.trace.v1.Status.StatusCode).
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

# gen_ai.operation.name values that map to events.
AGENT_OPERATIONS = frozenset({"invoke_agent"})
TURN_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
MAPPED_OPERATIONS = AGENT_OPERATIONS | TURN_OPERATIONS | TOOL_OPERATIONS

# Attribute names. Where two names mean the same thing, the first wins.
OPERATION = "gen_ai.operation.name"
CONVERSATION = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")  # alias: <= v1.26
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
URL_FULL = "url.full"
HTTP_METHOD = "http.request.method"
SERVICE_NAME = "service.name"
ENVIRONMENT = ("deployment.environment.name", "deployment.environment")  # v1.27+, earlier
ENDUSER = ("user.id", "enduser.id")
# govstream's own attributes (span first, then resource).
TENANT = "govstream.tenant_id"
TIER = "govstream.tier"
PLAN = "govstream.plan"
ACTOR = "govstream.actor_id"
POLICY_VERSION = "govstream.policy_version"
RISK_LEVEL = "govstream.risk_level"
FIRST_TOKEN_MS = "govstream.first_token_ms"
PAYLOAD_BYTES = "govstream.payload_bytes"
WORKFLOW = "govstream.workflow_id"

# Reason codes of a rejected span (the dead letter's reason_code).
TENANT_MISMATCH = "otlp_tenant_mismatch"
MISSING_TOKENS = "otlp_missing_tokens"
MISSING_ATTRIBUTE = "otlp_missing_attribute"
BAD_SPAN = "otlp_bad_span"
INVALID_FIELD = "otlp_invalid_field"

_NS = uuid.UUID("9d4c3f2a-0b7e-5c61-8f3d-2e6a1b9c4d70")
_LABEL_BAD = re.compile(f"[^{NAME_CHARS}]")
_MAX_MS = 2**31 - 1


@dataclass(frozen=True)
class OtlpSpan:
    """One span as OTLP carries it, decoded: ids in lowercase hex, times in unix nanos."""

    trace_id: str
    span_id: str
    name: str
    start_unix_nano: int
    end_unix_nano: int
    parent_span_id: str | None = None
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: Mapping[str, Scalar] = field(default_factory=dict)
    resource: Mapping[str, Scalar] = field(default_factory=dict)
    scope_name: str = ""

    def attribute(self, *names: str) -> Scalar | None:
        """The first of `names` the span carries, else the first its resource carries."""
        for source in (self.attributes, self.resource):
            for name in names:
                if name in source:
                    return source[name]
        return None


@dataclass(frozen=True)
class OtlpDefaults:
    """What a SessionStarted or ToolCallProposed gets when no attribute says otherwise."""

    tier: Tier = "B"
    plan: str = "default"
    actor_id: str = "otlp"
    policy_version: str = "otlp"
    risk_level: RiskLevel = "medium"
    environment: str = "production"


@dataclass(frozen=True)
class SpanRejected:
    span: OtlpSpan
    reason_code: str
    reason: str


@dataclass(frozen=True)
class OtlpMapped:
    events: tuple[SessionEvent, ...]  # in the order they must be appended
    rejected: tuple[SpanRejected, ...]
    ignored: int  # spans of no mapped operation (not an error)
    started: tuple[str, ...]  # session keys whose SessionStarted is among `events`


# The price of a turn: (model, input tokens, output tokens, when) -> micro-dollars.
Pricer = Callable[[str, int, int, datetime], int]


def no_price(model: str, input_tokens: int, output_tokens: int, at: datetime) -> int:
    return 0


class _Reject(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class _Planned:
    """One event to append and where it goes in its session's order."""

    session: str
    rank: int  # 0 start, 1 body, 2 end of session
    at: datetime
    phase: int  # 0 something began, 1 something ended (same instant: begin first)
    seq: int
    event: SessionEvent


@dataclass
class _SessionSeen:
    session_id: str
    first_start: SessionStarted  # an implicit start: built from the earliest span
    at: datetime  # the earliest time of the session's mapped events
    agent_start: SessionStarted | None = None  # built from the agent span, when seen


def event_id(tenant: str, *parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join((tenant, *parts))))


def start_event_id(tenant: str, session_id: str) -> str:
    """The one event id of a session's SessionStarted, whatever span produced it."""
    return event_id(tenant, "session", session_id, "start")


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos // 1_000_000_000, tz=UTC).replace(
        microsecond=(nanos % 1_000_000_000) // 1000
    )


def _text(value: Scalar | None) -> str | None:
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    text = str(value).strip()
    return text or None


def _label(value: str, default: str) -> str:
    """A free label (producer, error class) cut to the Name alphabet and length."""
    cleaned = _LABEL_BAD.sub("-", value).strip(" -")[:NAME_MAX_CHARS]
    return cleaned if cleaned and cleaned[0].isalnum() else default


def _count(span: OtlpSpan, names: tuple[str, ...]) -> int | None:
    value = span.attribute(*names)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise _Reject(INVALID_FIELD, f"{names[0]} must be a whole number >= 0, got {value!r}")
    return value


def _tokens(span: OtlpSpan, names: tuple[str, ...]) -> int:
    value = _count(span, names)
    if value is None:
        raise _Reject(
            MISSING_TOKENS,
            f"{span.attribute(OPERATION)} span {span.name!r} carries no {names[0]} "
            f"(nor {names[1]}): a turn's tokens are never guessed",
        )
    return value


def _failed(span: OtlpSpan) -> str | None:
    """The error class when the span failed (error.type, or status ERROR), else None."""
    error = _text(span.attributes.get(ERROR_TYPE))
    if error is not None:
        return error
    return "error" if span.status_code == STATUS_ERROR else None


def _outcome(error: str | None) -> TurnOutcome:
    if error is None:
        return "ok"
    lowered = error.lower()
    if "timeout" in lowered or "timedout" in lowered:
        return "timeout"
    if "cancel" in lowered:
        return "cancelled"
    return "error"


def _destination(span: OtlpSpan) -> str | None:
    host = _text(span.attributes.get(SERVER_ADDRESS))
    if host is not None:
        return host[:512]
    url = _text(span.attributes.get(URL_FULL))
    if url is not None:
        try:
            return (urlsplit(url).hostname or "")[:512] or None
        except ValueError:
            return None
    return None


class _Mapper:
    def __init__(
        self,
        tenant: str,
        started: Container[str],
        defaults: OtlpDefaults,
        price: Pricer,
    ) -> None:
        self.tenant, self.already, self.defaults, self.price = tenant, started, defaults, price
        self.planned: list[_Planned] = []
        self.sessions: dict[str, _SessionSeen] = {}

    # --- the envelope --------------------------------------------------------------------

    def envelope(
        self, span: OtlpSpan, session_id: str, role: str, at: datetime
    ) -> dict[str, object]:
        eid = event_id(self.tenant, span.trace_id, span.span_id, role)
        env = _text(span.attribute(*ENVIRONMENT)) or self.defaults.environment
        return {
            "event_id": eid,
            "occurred_at": at,
            "tenant_id": self.tenant,
            "session_id": session_id,
            "workflow_id": self.workflow(span),
            "idempotency_key": f"otlp/{eid}",
            "attempt": 1,
            "correlation_id": span.trace_id,
            "environment": env[:64],
            "producer": _label(f"otlp/{span.scope_name or 'unknown'}", "otlp/unknown"),
        }

    def workflow(self, span: OtlpSpan) -> str | None:
        """govstream.workflow_id, else the resource's service.name: the same for every
        span of a process, so a session's events agree on it whatever span comes first
        (gen_ai.agent.name is on the agent span only, and that one arrives last)."""
        return _text(span.attribute(WORKFLOW)) or _text(span.resource.get(SERVICE_NAME))

    # --- one span ------------------------------------------------------------------------

    def span(self, span: OtlpSpan, operation: str, seq: int) -> None:
        claimed = _text(span.attribute(TENANT))
        if claimed is not None and claimed != self.tenant:
            raise _Reject(
                TENANT_MISMATCH,
                f"the span names tenant {claimed[:64]!r}; this API key is for {self.tenant!r}",
            )
        if not span.end_unix_nano or span.end_unix_nano < span.start_unix_nano:
            raise _Reject(BAD_SPAN, "the span has no end, or ends before it starts")
        session_id = _text(span.attributes.get(CONVERSATION)) or span.trace_id
        begin, end = _time(span.start_unix_nano), _time(span.end_unix_nano)
        latency = min((span.end_unix_nano - span.start_unix_nano) // 1_000_000, _MAX_MS)
        planned: list[_Planned] = []

        def plan(rank: int, at: datetime, phase: int, event: SessionEvent) -> None:
            planned.append(_Planned(session_id, rank, at, phase, seq, event))

        error = _failed(span)
        error_class = _label(error, "error") if error is not None else None
        try:
            # Any span may be the one a session's start is built from (below): its
            # govstream.* attributes are checked now, so that start cannot fail later.
            start = self.started_event(span, session_id, begin)
            if operation in AGENT_OPERATIONS:
                if error is None:
                    ended: SessionEvent = SessionClosed(
                        **self.envelope(span, session_id, "end", end), reason="completed"
                    )
                else:
                    agent = _text(span.attributes.get(AGENT_NAME)) or "agent span"
                    message = span.status_message.strip() or f"{agent} failed: {error}"
                    ended = SessionFailed(
                        **self.envelope(span, session_id, "end", end),
                        reason=message[:500],
                        error_class=error_class,
                    )
                plan(2, end, 1, ended)
            elif operation in TURN_OPERATIONS:
                model = _text(span.attributes.get(RESPONSE_MODEL)) or _text(
                    span.attributes.get(REQUEST_MODEL)
                )
                if model is None:
                    raise _Reject(
                        MISSING_ATTRIBUTE,
                        f"{operation} span {span.name!r} names no model "
                        f"({RESPONSE_MODEL} nor {REQUEST_MODEL})",
                    )
                tokens_in, tokens_out = _tokens(span, INPUT_TOKENS), _tokens(span, OUTPUT_TOKENS)
                first = _count(span, (FIRST_TOKEN_MS,))
                turn = TurnCompleted(
                    **self.envelope(span, session_id, "turn", end),
                    model=model,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    cost_usd_micros=self.price(model, tokens_in, tokens_out, end),
                    first_token_ms=min(first, latency) if first is not None else latency,
                    latency_ms=latency,
                    outcome=_outcome(error),
                    error_class=error_class,
                )
                plan(1, end, 1, turn)
            else:  # a tool call
                tool = _text(span.attributes.get(TOOL_NAME))
                if tool is None:
                    raise _Reject(
                        MISSING_ATTRIBUTE, f"execute_tool span {span.name!r} names no {TOOL_NAME}"
                    )
                operation_key = _text(span.attributes.get(TOOL_CALL_ID)) or span.span_id
                risk = _text(span.attribute(RISK_LEVEL)) or self.defaults.risk_level
                proposed = ToolCallProposed(
                    **self.envelope(span, session_id, "tool-proposed", begin),
                    tool=tool,
                    action=_text(span.attributes.get(TOOL_TYPE)) or "execute",
                    operation_key=operation_key,
                    destination_host=_destination(span),
                    method=_text(span.attributes.get(HTTP_METHOD)) or "POST",
                    payload_bytes=_count(span, (PAYLOAD_BYTES,)) or 0,
                    risk_level=cast(RiskLevel, risk),
                )
                status: Literal["succeeded", "failed", "timeout"] = "succeeded"
                if error is not None:
                    status = "timeout" if _outcome(error) == "timeout" else "failed"
                completed = ToolCallCompleted(
                    **self.envelope(span, session_id, "tool-completed", end),
                    operation_key=operation_key,
                    status=status,
                    latency_ms=latency,
                )
                plan(1, begin, 0, proposed)
                plan(1, end, 1, completed)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "event"
            raise _Reject(INVALID_FIELD, f"{where}: {problem['msg']}") from None
        self.planned += planned
        seen = self.sessions.get(session_id)
        first_at = min(p.at for p in planned) if operation not in AGENT_OPERATIONS else begin
        if seen is None:
            seen = self.sessions[session_id] = _SessionSeen(session_id, start, first_at)
        elif first_at < seen.at:
            seen.first_start, seen.at = start, first_at
        if operation in AGENT_OPERATIONS and seen.agent_start is None:
            seen.agent_start = start

    def started_event(self, span: OtlpSpan, session_id: str, at: datetime) -> SessionStarted:
        """A session's SessionStarted: one id and key per (tenant, session)."""
        fields = self.envelope(span, session_id, "start", at)
        eid = start_event_id(self.tenant, session_id)
        fields["event_id"], fields["idempotency_key"] = eid, f"otlp/{eid}"
        d = self.defaults
        return SessionStarted(
            **fields,
            tier=cast(Tier, (_text(span.attribute(TIER)) or d.tier).upper()),
            plan=_text(span.attribute(PLAN)) or d.plan,
            actor_id=_text(span.attribute(ACTOR, *ENDUSER)) or d.actor_id,
            policy_version=_text(span.attribute(POLICY_VERSION)) or d.policy_version,
        )

    # --- the batch -----------------------------------------------------------------------

    def starts(self) -> list[str]:
        """Plan the SessionStarted of every session in view not started before."""
        out = []
        for seen in self.sessions.values():
            key = session_key(self.tenant, seen.session_id)
            if key in self.already:
                continue
            # Built (and validated) when its span was mapped; an implicit start is dated
            # at the session's earliest event.
            if seen.agent_start is not None:
                start, at = seen.agent_start, seen.agent_start.occurred_at
            else:
                start = seen.first_start.model_copy(update={"occurred_at": seen.at})
                at = seen.at
            self.planned.append(_Planned(seen.session_id, 0, at, 0, -1, start))
            out.append(key)
        return out


def map_spans(
    spans: list[OtlpSpan],
    tenant: str,
    *,
    started: Container[str] = (),
    defaults: OtlpDefaults | None = None,
    price: Pricer = no_price,
) -> OtlpMapped:
    """The events `spans` stand for, for `tenant`, and why the others cannot be mapped.

    `started` holds the session keys (`events.models.session_key`) whose
    SessionStarted the caller has already appended: they get none again.
    """
    mapper = _Mapper(tenant, started, defaults or OtlpDefaults(), price)
    rejected: list[SpanRejected] = []
    ignored = 0
    for seq, span in enumerate(spans):
        operation = _text(span.attributes.get(OPERATION))
        if operation not in MAPPED_OPERATIONS:
            ignored += 1
            continue
        try:
            mapper.span(span, operation, seq)
        except _Reject as refusal:
            rejected.append(SpanRejected(span, refusal.code, refusal.reason))
    started_now = mapper.starts()
    order = {sid: n for n, sid in enumerate(mapper.sessions)}
    planned = sorted(mapper.planned, key=lambda p: (order[p.session], p.rank, p.at, p.phase, p.seq))
    return OtlpMapped(
        events=tuple(p.event for p in planned),
        rejected=tuple(rejected),
        ignored=ignored,
        started=tuple(started_now),
    )


def idle_close(tenant: str, session_id: str, at: datetime, idle_seconds: int) -> SessionClosed:
    """The SessionClosed the intake appends for a session whose agent span never ended
    within `idle_seconds` of its last span (or that had none): one id per session."""
    eid = event_id(tenant, "session", session_id, "idle-close")
    return SessionClosed(
        event_id=eid,
        occurred_at=at,
        tenant_id=tenant,
        session_id=session_id,
        idempotency_key=f"otlp/{eid}",
        producer="otlp/idle-close",
        reason=f"idle: no agent span ended within {idle_seconds} s of the last span",
    )
