"""The event catalog: one pydantic model per event type.

These models are the single source of truth. The Avro schemas in
events/schemas/ are generated from them (`govstream schemas generate`), and a
test fails if the committed schemas drift from the models. Events are
immutable facts, named in the past tense.

Money is integer micro-dollars (`*_usd_micros`) so sums are exact to the cent.
Timestamps are timezone-aware UTC datetimes (Avro timestamp-micros).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("occurred_at must carry a timezone (UTC)")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]

# Input bounds (issue 10): every id and free-text field has a size and ids a
# restricted alphabet, so a producer cannot store 100 KB in a trace id or a
# path ("../../etc/passwd") as a session id. The README lists them.
ID_ALPHABET = r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}"
KEY_ALPHABET = r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}"
NAME_CHARS = r"A-Za-z0-9 ._:@/+=()-"  # a Name's characters (events/otlp.py cuts labels to them)
NAME_MAX_CHARS = 128
NAME_ALPHABET = rf"[A-Za-z0-9][{NAME_CHARS}]{{0,{NAME_MAX_CHARS - 1}}}"
MAX_CONTENT_CHARS = 65_536
MAX_TEXT_CHARS = 4_000
MAX_LIST_ITEMS = 256

# Ids that name things (tenants, sessions, workflows, actors): no "/", so an id
# is never a path and "tenant/session" keys are unambiguous.
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=f"^{ID_ALPHABET}$")]
# Keys chosen by producers (event ids, idempotency and operation keys, traces):
# "/" allowed, as in "s-1/op-1", but they start with a letter or digit.
Key = Annotated[str, Field(min_length=1, max_length=200, pattern=f"^{KEY_ALPHABET}$")]
# Short labels (producer "name/version", environment, model, tool names).
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_CHARS, pattern=f"^{NAME_ALPHABET}$")]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
# Fields only the processors write (codes, rule ids): bounded, not restricted.
Label = Annotated[str, Field(max_length=200)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]

Tier = Literal["A", "B", "C"]
TurnOutcome = Literal["ok", "error", "timeout", "cancelled"]
RiskLevel = Literal["low", "medium", "high", "critical"]
ToolCallStatus = Literal["succeeded", "failed", "timeout", "rejected"]


class Event(BaseModel):
    """Envelope fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: Key = Field(description="globally unique id of this event (uuid)")
    schema_version: int = Field(default=1, ge=1, description="version of this event's schema")
    occurred_at: UtcDateTime = Field(description="when it happened, UTC")
    tenant_id: Id
    workflow_id: Id | None = Field(default=None, description="workflow this belongs to")
    idempotency_key: Key = Field(
        description="producer-chosen, stable across retries of the same operation"
    )
    attempt: int = Field(default=1, ge=1, le=1000, description="retry number (retry lineage)")
    causation_id: Key | None = Field(default=None, description="event that caused this one")
    correlation_id: Key | None = Field(default=None, description="trace id")
    environment: Id = Field(default="production", max_length=64)
    producer: Name = Field(default="unknown/0", description="name/version of the emitter")

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


def session_key(tenant_id: str, session_id: str) -> str:
    """The key of a session's state: tenant-scoped, so two tenants' session ids never
    share an entry (ids hold no "/", so the key is unambiguous)."""
    return f"{tenant_id}/{session_id}"


class SessionEvent(Event):
    """An event inside one agent session; keyed (and ordered) by session_id."""

    session_id: Id

    @property
    def session_key(self) -> str:
        return session_key(self.tenant_id, self.session_id)

    def envelope_for_derived(
        self, event_id: str, idempotency_key: str, producer: str
    ) -> dict[str, Any]:
        """The envelope of an event a processor derives from this one (its cause):
        same time, tenant, session, workflow, correlation and environment."""
        return {
            "event_id": event_id,
            "occurred_at": self.occurred_at,
            "tenant_id": self.tenant_id,
            "session_id": self.session_id,
            "workflow_id": self.workflow_id,
            "idempotency_key": idempotency_key,
            "attempt": 1,
            "causation_id": self.event_id,
            "correlation_id": self.correlation_id,
            "environment": self.environment,
            "producer": producer,
        }


# --- session lifecycle -------------------------------------------------------


class SessionStarted(SessionEvent):
    """A runtime opened a session for an actor."""

    tier: Tier = Field(description="A interactive, B assistive, C async")
    plan: str = Field(min_length=1, max_length=64, description="tenant plan at start")
    actor_id: Key = Field(description="who the agent acts for")
    actor_scope: list[Name] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS, description="granted scopes"
    )
    policy_version: str = Field(min_length=1, max_length=64)


class SessionSuspended(SessionEvent):
    """The session was paused (operator, budget, or runtime)."""

    reason: str = Field(min_length=1, max_length=500)


class SessionResumed(SessionEvent):
    """A suspended or quarantined session was resumed."""

    reason: str = Field(min_length=1, max_length=500)


class SessionClosed(SessionEvent):
    """The session ended normally."""

    reason: str = Field(default="completed", min_length=1, max_length=500)


class SessionFailed(SessionEvent):
    """The session ended with an error."""

    reason: str = Field(min_length=1, max_length=500)
    error_class: Name | None = None


class SessionQuarantined(SessionEvent):
    """The session was isolated after runtime faults or invalid transitions."""

    reason: str = Field(min_length=1, max_length=500)


# --- turns, tools, memory ----------------------------------------------------


class TurnCompleted(SessionEvent):
    """A model call finished (successfully or not)."""

    model: Name
    prompt_version: Name = Field(default="v1", max_length=64)
    input_tokens: Count
    output_tokens: Count
    cost_usd_micros: Annotated[int, Field(ge=0, le=2**53)] = Field(
        description="cost of the call in millionths of a US dollar"
    )
    first_token_ms: Count
    latency_ms: Count
    outcome: TurnOutcome
    error_class: Name | None = None
    content: str | None = Field(
        default=None, max_length=MAX_CONTENT_CHARS, description="optional; redacted before stored"
    )


class ToolCallProposed(SessionEvent):
    """The agent wants to call a tool; policy decides whether it may."""

    tool: Name
    action: Name
    operation_key: Key = Field(description="identifies the operation across retries")
    destination_host: str | None = Field(default=None, max_length=512)
    method: str = Field(default="POST", min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    payload_bytes: Count
    risk_level: RiskLevel


class ApprovalRecorded(SessionEvent):
    """A human or system approved or denied a proposed tool call."""

    operation_key: Key
    approver: Key
    granted: bool


class ToolCallCompleted(SessionEvent):
    """A tool call ran (or was refused by the tool)."""

    operation_key: Key
    status: ToolCallStatus
    latency_ms: Count
    result_ref: str | None = Field(default=None, max_length=1000)


class TaskSummaryUpdated(SessionEvent):
    """Task memory: what the agent is doing and has learned."""

    objective: str = Field(max_length=4000)
    decisions: list[Text] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    facts: list[Text] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class CheckpointCreated(SessionEvent):
    """The runtime saved an artifact it can resume from."""

    artifact_ref: str = Field(min_length=1, max_length=1000)
    summary: str = Field(default="", max_length=4000)


# --- tenants -----------------------------------------------------------------


class TenantBudgets(BaseModel):
    """Limits of a plan; None means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens_per_session: int | None = Field(default=None, ge=0)
    cost_per_day_usd_micros: int | None = Field(default=None, ge=0)
    cost_per_month_usd_micros: int | None = Field(default=None, ge=0)
    tokens_per_workflow: int | None = Field(default=None, ge=0)
    concurrent_sessions: int | None = Field(default=None, ge=0)
    concurrent_calls_per_tool: int | None = Field(default=None, ge=0)


class TenantProfileUpdated(Event):
    """A tenant's plan, budgets and permissions (compacted topic, keyed by tenant)."""

    plan: str = Field(min_length=1, max_length=64)
    budgets: TenantBudgets = Field(default_factory=TenantBudgets)
    egress_allowlist: list[Annotated[str, Field(min_length=1, max_length=260)]] = Field(
        default_factory=list, max_length=4096
    )
    tool_permissions: dict[Name, Annotated[str, Field(max_length=32)]] = Field(
        default_factory=dict, max_length=4096, description="tool -> allow | deny | approval"
    )
    preferences: dict[Name, Text] = Field(default_factory=dict, max_length=MAX_LIST_ITEMS)


# --- derived: written by the processors, never by producers ------------------

PolicyDecision = Literal["allow", "deny", "require_approval"]
AdmissionOutcome = Literal["allow", "degrade", "defer", "deny"]


class PolicyDecided(SessionEvent):
    """The policy engine decided a ToolCallProposed; signed for the tool adapter."""

    operation_key: Key
    tool: Name
    action: Name
    decision: PolicyDecision
    reason_code: Label
    policy_version: Label
    rule_id: Label
    evaluation_us: Count
    key_id: Label
    signature: str = Field(
        max_length=128, description="hex HMAC-SHA256 over every other field (events.signing)"
    )
    expires_at: UtcDateTime
    # What was asked, as decided (a decision log records its input): the proposal's
    # destination normalised as the policy read it, and the digest a tool adapter
    # checks against the call it is about to run (events.signing.proposal_digest).
    destination_host: str | None = Field(
        default=None, max_length=512, description="A-label / canonical IP; as sent if invalid"
    )
    destination_port: int | None = Field(default=None, ge=1, le=65535)
    method: str | None = Field(default=None, max_length=16)
    payload_bytes: int | None = Field(default=None, ge=0, le=2**31 - 1)
    risk_level: RiskLevel | None = None
    proposal_digest: str = Field(
        default="", max_length=64, description="sha256 of the proposal's canonical content"
    )


class BudgetWarning(SessionEvent):
    """Usage of a budget passed a threshold (50/80/100%)."""

    scope: str = Field(
        max_length=64, description="session | workflow | tenant_day | tenant_month | ..."
    )
    scope_key: str = Field(max_length=500)
    limit: int = Field(ge=0)
    used: int = Field(ge=0)
    threshold_pct: int = Field(ge=0, le=1000)


class BudgetExceeded(SessionEvent):
    """A budget reached 100%; the configured action follows."""

    scope: str = Field(max_length=64)
    scope_key: str = Field(max_length=500)
    limit: int = Field(ge=0)
    used: int = Field(ge=0)
    action: Literal["suspend", "degrade", "deny"]
    fallback_model: Name | None = None


class AdmissionDecided(SessionEvent):
    """The admission API answered whether a turn or tool call may proceed."""

    request_kind: Literal["turn", "tool"]
    decision: AdmissionOutcome
    reason_code: Label
    model: Name | None = None
    estimated_tokens: Count = 0
    remaining_tokens: int | None = None
    reservation_id: Key | None = None


class InvalidTransitionRejected(SessionEvent):
    """An event would have moved the session along an edge that does not exist."""

    from_state: Label
    attempted: Label = Field(description="event type that was rejected")
    reason: Reason


class ContextCompactionRequested(SessionEvent):
    """Turn memory passed its token threshold; the runtime should compact."""

    turn_tokens: Count
    threshold: Count


class DuplicateSuppressed(SessionEvent):
    """A repeat of an already-applied operation was seen and not re-applied."""

    duplicate_event_id: Key
    original_event_id: Key
    duplicate_attempt: int = Field(ge=1)
    original_attempt: int = Field(ge=1)
    suppressed_by: Label


# --- written by the workers into the tenant's log ----------------------------------


class AdmissionRequested(SessionEvent):
    """A runtime asked the admission API. The worker appends the question to the
    tenant's log (signed) and answers what the governor decides when it folds it,
    so every admission is decided in log order (log-first admission)."""

    request_kind: Literal["turn", "tool"]
    model: Name | None = None
    estimated_tokens: Count = 0
    tool: Name | None = None
    action: Name | None = None
    operation_key: Key | None = None
    destination_host: str | None = Field(default=None, max_length=512)
    method: str | None = Field(default=None, max_length=16, pattern=r"^[A-Za-z]+$")
    payload_bytes: Count = 0
    risk_level: RiskLevel | None = None

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> AdmissionRequested:
        needed = ("model",) if self.request_kind == "turn" else (
            "tool", "action", "operation_key", "risk_level"
        )  # fmt: skip
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.request_kind} request needs {', '.join(missing)}")
        return self


# --- dead letters --------------------------------------------------------------


class RecordDeadLettered(BaseModel):
    """A record the ingest step could not decode or validate, kept whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: Id
    occurred_at: UtcDateTime
    reason_code: str = Field(description="bad_framing | unknown_schema | ...")
    reason: str
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    schema_id: int | None = None
    raw_key: bytes | None = None
    raw_value: bytes

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


# Free text: what a user typed, a model said or a runtime wrote in prose. It is
# redacted (projections/free_text.py) before any store keeps it: turn and task
# memory, the ClickHouse archive. One list for every store. Lists of strings
# and the values of string maps are redacted item by item.
FREE_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "TurnCompleted": ("content",),
    "TaskSummaryUpdated": ("objective", "decisions", "facts"),
    "CheckpointCreated": ("artifact_ref", "summary"),
    "ToolCallCompleted": ("result_ref",),
    "SessionSuspended": ("reason",),
    "SessionResumed": ("reason",),
    "SessionClosed": ("reason",),
    "SessionFailed": ("reason",),
    "SessionQuarantined": ("reason",),
    "InvalidTransitionRejected": ("reason",),
    "TenantProfileUpdated": ("preferences",),
}

SESSION_EVENTS: tuple[type[SessionEvent], ...] = (
    SessionStarted,
    TurnCompleted,
    ToolCallProposed,
    ApprovalRecorded,
    ToolCallCompleted,
    TaskSummaryUpdated,
    CheckpointCreated,
    SessionSuspended,
    SessionResumed,
    SessionClosed,
    SessionFailed,
    SessionQuarantined,
)
DERIVED_EVENTS: tuple[type[SessionEvent], ...] = (
    PolicyDecided,
    BudgetWarning,
    BudgetExceeded,
    AdmissionDecided,
    InvalidTransitionRejected,
    ContextCompactionRequested,
    DuplicateSuppressed,
)
TENANT_EVENTS: tuple[type[Event], ...] = (TenantProfileUpdated,)
# What a worker appends to the tenant's log itself (signed): the questions of
# the admission API, and the tenant profiles it relays from the tenants topic.
WORKER_EVENTS: tuple[type[Event], ...] = (AdmissionRequested, TenantProfileUpdated)
CATALOG: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        *SESSION_EVENTS,
        *DERIVED_EVENTS,
        *TENANT_EVENTS,
        AdmissionRequested,
        RecordDeadLettered,
    )
}


def model_for(event_type: str) -> type[BaseModel]:
    try:
        return CATALOG[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None
