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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("occurred_at must carry a timezone (UTC)")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
Id = Annotated[str, Field(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]

Tier = Literal["A", "B", "C"]
TurnOutcome = Literal["ok", "error", "timeout", "cancelled"]
RiskLevel = Literal["low", "medium", "high", "critical"]
ToolCallStatus = Literal["succeeded", "failed", "timeout", "rejected"]


class Event(BaseModel):
    """Envelope fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: Id = Field(description="globally unique id of this event (uuid)")
    schema_version: int = Field(default=1, ge=1, description="version of this event's schema")
    occurred_at: UtcDateTime = Field(description="when it happened, UTC")
    tenant_id: Id
    workflow_id: str | None = Field(default=None, description="workflow this belongs to")
    idempotency_key: Id = Field(
        description="producer-chosen, stable across retries of the same operation"
    )
    attempt: int = Field(default=1, ge=1, le=1000, description="retry number (retry lineage)")
    causation_id: str | None = Field(default=None, description="event that caused this one")
    correlation_id: str | None = Field(default=None, description="trace id")
    environment: str = Field(default="production", min_length=1, max_length=64)
    producer: str = Field(default="unknown/0", description="name/version of the emitter")

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


class SessionEvent(Event):
    """An event inside one agent session; keyed (and ordered) by session_id."""

    session_id: Id

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
    actor_id: Id = Field(description="who the agent acts for")
    actor_scope: list[str] = Field(default_factory=list, description="granted scopes")
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
    error_class: str | None = None


class SessionQuarantined(SessionEvent):
    """The session was isolated after runtime faults or invalid transitions."""

    reason: str = Field(min_length=1, max_length=500)


# --- turns, tools, memory ----------------------------------------------------


class TurnCompleted(SessionEvent):
    """A model call finished (successfully or not)."""

    model: str = Field(min_length=1, max_length=128)
    prompt_version: str = Field(default="v1", min_length=1, max_length=64)
    input_tokens: Count
    output_tokens: Count
    cost_usd_micros: Annotated[int, Field(ge=0, le=2**53)] = Field(
        description="cost of the call in millionths of a US dollar"
    )
    first_token_ms: Count
    latency_ms: Count
    outcome: TurnOutcome
    error_class: str | None = Field(default=None, max_length=200)
    content: str | None = Field(default=None, description="optional; redacted before stored")


class ToolCallProposed(SessionEvent):
    """The agent wants to call a tool; policy decides whether it may."""

    tool: str = Field(min_length=1, max_length=128)
    action: str = Field(min_length=1, max_length=128)
    operation_key: Id = Field(description="identifies the operation across retries")
    destination_host: str | None = Field(default=None, max_length=512)
    method: str = Field(default="POST", min_length=1, max_length=16)
    payload_bytes: Count
    risk_level: RiskLevel


class ApprovalRecorded(SessionEvent):
    """A human or system approved or denied a proposed tool call."""

    operation_key: Id
    approver: Id
    granted: bool


class ToolCallCompleted(SessionEvent):
    """A tool call ran (or was refused by the tool)."""

    operation_key: Id
    status: ToolCallStatus
    latency_ms: Count
    result_ref: str | None = None


class TaskSummaryUpdated(SessionEvent):
    """Task memory: what the agent is doing and has learned."""

    objective: str = Field(max_length=4000)
    decisions: list[str] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list)


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
    egress_allowlist: list[str] = Field(default_factory=list)
    tool_permissions: dict[str, str] = Field(
        default_factory=dict, description="tool -> allow | deny | approval"
    )
    preferences: dict[str, str] = Field(default_factory=dict)


# --- derived: written by the processors, never by producers ------------------

PolicyDecision = Literal["allow", "deny", "require_approval"]
AdmissionOutcome = Literal["allow", "degrade", "defer", "deny"]


class PolicyDecided(SessionEvent):
    """The policy engine decided a ToolCallProposed; signed for the tool adapter."""

    operation_key: Id
    tool: str
    action: str
    decision: PolicyDecision
    reason_code: str
    policy_version: str
    rule_id: str
    evaluation_us: Count
    key_id: str
    signature: str = Field(description="hex HMAC-SHA256 over the decision fields")
    expires_at: UtcDateTime


class BudgetWarning(SessionEvent):
    """Usage of a budget passed a threshold (50/80/100%)."""

    scope: str = Field(description="session | workflow | tenant_day | tenant_month | ...")
    scope_key: str
    limit: int = Field(ge=0)
    used: int = Field(ge=0)
    threshold_pct: int = Field(ge=0, le=1000)


class BudgetExceeded(SessionEvent):
    """A budget reached 100%; the configured action follows."""

    scope: str
    scope_key: str
    limit: int = Field(ge=0)
    used: int = Field(ge=0)
    action: Literal["suspend", "degrade", "deny"]
    fallback_model: str | None = None


class AdmissionDecided(SessionEvent):
    """The admission API answered whether a turn or tool call may proceed."""

    request_kind: Literal["turn", "tool"]
    decision: AdmissionOutcome
    reason_code: str
    model: str | None = None
    estimated_tokens: Count = 0
    remaining_tokens: int | None = None
    reservation_id: str | None = None


class InvalidTransitionRejected(SessionEvent):
    """An event would have moved the session along an edge that does not exist."""

    from_state: str
    attempted: str = Field(description="event type that was rejected")
    reason: str


class ContextCompactionRequested(SessionEvent):
    """Turn memory passed its token threshold; the runtime should compact."""

    turn_tokens: Count
    threshold: Count


class DuplicateSuppressed(SessionEvent):
    """A repeat of an already-applied operation was seen and not re-applied."""

    duplicate_event_id: Id
    original_event_id: Id
    duplicate_attempt: int = Field(ge=1)
    original_attempt: int = Field(ge=1)
    suppressed_by: str


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
CATALOG: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (*SESSION_EVENTS, *DERIVED_EVENTS, *TENANT_EVENTS, RecordDeadLettered)
}


def model_for(event_type: str) -> type[BaseModel]:
    try:
        return CATALOG[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None
