"""Small builders of valid events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from events.models import SessionStarted, TenantProfileUpdated, ToolCallProposed, TurnCompleted
from events.provenance import RecordSigner
from events.topics import Topics
from streams.ingest import InputRules, SourceRecord

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
TOPICS = Topics("gs")
# The worker's record signer under the test settings' key.
SIGNER = RecordSigner.from_policy_key("test-1", b"a-test-policy-signing-key")
# The fixtures replay fixed historic dates: no age bound.
RULES = InputRules(TOPICS, SIGNER, max_event_age=timedelta(days=36_500))


def source(
    value: bytes | None,
    *,
    topic: str = TOPICS.sessions,
    offset: int = 7,
    partition: int = 2,
    key: bytes | None = b"t-001",
    timestamp_ms: int = T0_MS,
    signed: bool = False,
) -> SourceRecord:
    """A record as read from `topic`; `signed` adds the worker's signature header."""
    headers = (SIGNER.header(key, value or b""),) if signed else ()
    return SourceRecord(topic, partition, offset, timestamp_ms, value, key, headers)


def _envelope(**overrides: Any) -> dict[str, Any]:
    event_id = overrides.pop("event_id", str(uuid.uuid4()))
    return {
        "event_id": event_id,
        "occurred_at": T0,
        "tenant_id": "t-001",
        "idempotency_key": f"key-{event_id}",
        **overrides,
    }


def turn(**overrides: Any) -> TurnCompleted:
    fields = {
        "session_id": "s-1",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd_micros": 360,
        "first_token_ms": 180,
        "latency_ms": 950,
        "outcome": "ok",
    }
    fields.update(overrides)
    return TurnCompleted(**_envelope(**fields))


def session_started(**overrides: Any) -> SessionStarted:
    fields = {
        "session_id": "s-1",
        "tier": "A",
        "plan": "team",
        "actor_id": "user-1",
        "policy_version": "2026-11-01",
    }
    fields.update(overrides)
    return SessionStarted(**_envelope(**fields))


def tenant_profile(**overrides: Any) -> TenantProfileUpdated:
    fields: dict[str, Any] = {"plan": "team", "egress_allowlist": ["api.example.com"]}
    fields.update(overrides)
    return TenantProfileUpdated(**_envelope(**fields))


def tool_proposal(**overrides: Any) -> ToolCallProposed:
    """A low-risk GET to good.com with fixed ids (policy and signing tests)."""
    fields: dict[str, Any] = {
        "event_id": "e-1",
        "occurred_at": T0,
        "tenant_id": "t-001",
        "session_id": "s-1",
        "idempotency_key": "k-1",
        "tool": "http_request",
        "action": "fetch",
        "operation_key": "op-1",
        "destination_host": "good.com",
        "method": "GET",
        "payload_bytes": 100,
        "risk_level": "low",
    }
    fields.update(overrides)
    return ToolCallProposed(**fields)


def sample_events() -> dict[str, Any]:
    """One valid instance of every type in the catalog (events.models.CATALOG)."""
    from events.models import (
        CATALOG,
        AdmissionDecided,
        AdmissionRequested,
        ApprovalRecorded,
        BudgetExceeded,
        BudgetWarning,
        CheckpointCreated,
        ContextCompactionRequested,
        DuplicateSuppressed,
        InvalidTransitionRejected,
        PolicyDecided,
        RecordDeadLettered,
        SessionClosed,
        SessionFailed,
        SessionQuarantined,
        SessionResumed,
        SessionSuspended,
        TaskSummaryUpdated,
        ToolCallCompleted,
    )

    env = {"occurred_at": T0, "tenant_id": "t-001", "session_id": "s-1"}

    def e(n: int) -> dict[str, Any]:
        return {**env, "event_id": f"sample-{n}", "idempotency_key": f"sample-key-{n}"}

    samples: list[Any] = [
        session_started(),
        turn(),
        tool_proposal(),
        ApprovalRecorded(**e(1), operation_key="op-1", approver="ops@example.com", granted=True),
        ToolCallCompleted(**e(2), operation_key="op-1", status="succeeded", latency_ms=5),
        TaskSummaryUpdated(**e(3), objective="refund", decisions=["ok"], facts=["f"]),
        CheckpointCreated(**e(4), artifact_ref="ckpt-1", summary="half way"),
        SessionSuspended(**e(5), reason="operator"),
        SessionResumed(**e(6), reason="operator"),
        SessionClosed(**e(7)),
        SessionFailed(**e(8), reason="crash"),
        SessionQuarantined(**e(9), reason="faults"),
        tenant_profile(),
        PolicyDecided(
            **e(10),
            operation_key="op-1",
            tool="web_search",
            action="search",
            decision="allow",
            reason_code="ALLOWED",
            policy_version="p-1",
            rule_id="r",
            evaluation_us=1,
            key_id="k-1",
            signature="0" * 64,
            expires_at=T0,
        ),
        BudgetWarning(
            **e(11), scope="session", scope_key="s-1", limit=10, used=5, threshold_pct=50
        ),
        BudgetExceeded(
            **e(12), scope="session", scope_key="s-1", limit=10, used=11, action="suspend"
        ),
        AdmissionDecided(**e(13), request_kind="turn", decision="allow", reason_code="OK"),
        InvalidTransitionRejected(
            **e(14), from_state="closed", attempted="TurnCompleted", reason="closed"
        ),
        ContextCompactionRequested(**e(15), turn_tokens=10, threshold=5),
        AdmissionRequested(**e(17), request_kind="turn", model="gpt-4o", estimated_tokens=10),
        DuplicateSuppressed(
            **e(16),
            duplicate_event_id="d-2",
            original_event_id="d-1",
            duplicate_attempt=2,
            original_attempt=1,
            suppressed_by="processor",
        ),
        RecordDeadLettered(
            event_id="dl-1",
            occurred_at=T0,
            reason_code="bad_framing",
            reason="x",
            source_topic="gs.sessions",
            source_partition=0,
            source_offset=1,
            raw_value=b"x",
        ),
    ]
    by_type = {type(s).__name__: s for s in samples}
    assert set(by_type) == set(CATALOG), set(CATALOG) ^ set(by_type)
    return by_type
