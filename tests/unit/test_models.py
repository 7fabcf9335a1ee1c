"""The catalog: envelope, validation, and models that match committed schemas."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from events.models import CATALOG, DERIVED_EVENTS, SESSION_EVENTS, TurnCompleted
from events.schemagen import drift
from events.topics import Topics
from tests.factories import T0, tenant_profile, turn

DESIGN_EVENT_TYPES = {
    "SessionStarted", "TurnCompleted", "ToolCallProposed", "ApprovalRecorded",
    "ToolCallCompleted", "TaskSummaryUpdated", "CheckpointCreated", "SessionSuspended",
    "SessionResumed", "SessionClosed", "SessionFailed", "SessionQuarantined",
    "TenantProfileUpdated", "PolicyDecided", "BudgetWarning", "BudgetExceeded",
    "AdmissionDecided", "InvalidTransitionRejected", "ContextCompactionRequested",
    "DuplicateSuppressed",
}  # fmt: skip
ENVELOPE = {
    "event_id", "schema_version", "occurred_at", "tenant_id", "workflow_id",
    "idempotency_key", "attempt", "causation_id", "correlation_id", "environment", "producer",
}  # fmt: skip


def test_catalog_holds_every_event_type_of_the_design() -> None:
    assert set(CATALOG) >= DESIGN_EVENT_TYPES


@pytest.mark.parametrize("name", sorted(DESIGN_EVENT_TYPES))
def test_every_event_carries_the_envelope(name: str) -> None:
    assert set(CATALOG[name].model_fields) >= ENVELOPE


def test_session_events_carry_session_id() -> None:
    for model in (*SESSION_EVENTS, *DERIVED_EVENTS):
        assert "session_id" in model.model_fields


def test_committed_schemas_match_the_models() -> None:
    # Fails when a model changes without `govstream schemas generate`.
    assert drift() == []


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        turn(occurred_at=datetime(2026, 1, 1))


def test_timestamps_are_normalised_to_utc() -> None:
    from datetime import timedelta, timezone

    event = turn(occurred_at=T0.astimezone(timezone(timedelta(hours=5))))
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == T0


@pytest.mark.parametrize(
    "field,value",
    [("input_tokens", -1), ("outcome", "maybe"), ("tenant_id", ""), ("attempt", 0)],
)
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        turn(**{field: value})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TurnCompleted.model_validate({**turn().model_dump(), "surprise": 1})


def test_events_are_immutable() -> None:
    event = turn()
    with pytest.raises(ValidationError):
        event.input_tokens = 5  # type: ignore[misc]


def test_routing_keys_every_record_by_its_tenant() -> None:
    topics = Topics("gs")
    assert topics.route(turn(session_id="s-9", tenant_id="t-3")) == ("gs.sessions", "t-3")
    assert topics.route(tenant_profile(tenant_id="t-7")) == ("gs.tenants", "t-7")


def test_producers_cannot_emit_derived_events() -> None:
    from events.models import DuplicateSuppressed

    event = DuplicateSuppressed(
        event_id="e", occurred_at=T0, tenant_id="t", session_id="s", idempotency_key="k",
        duplicate_event_id="d", original_event_id="o", duplicate_attempt=2,
        original_attempt=1, suppressed_by="dedupe",
    )  # fmt: skip
    with pytest.raises(ValueError, match="derived"):
        Topics().route(event)
