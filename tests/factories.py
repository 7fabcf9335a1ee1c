"""Small builders of valid events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from events.models import SessionStarted, TenantProfileUpdated, ToolCallProposed, TurnCompleted

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


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
