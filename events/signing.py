"""Signed policy decisions: HMAC-SHA256 over a canonical form, verified by tool adapters.

The policy processor signs every PolicyDecided; a tool adapter calls
`verify_decision` before executing and refuses the call on DecisionRejected.

Canonical form (what the signature covers): the UTF-8 bytes of

    DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

over exactly SIGNED_FIELDS: event_id, tenant_id, session_id, operation_key,
tool, action, decision, reason_code, policy_version, rule_id, expires_at and
key_id (so a decision cannot be re-labelled with another key id). expires_at
is written as UTC ISO-8601 with microseconds ("2026-11-22T12:05:00.000000+00:00"),
the precision Avro timestamp-micros keeps, so a decision verifies after a
round trip through the log. DOMAIN separates these signatures from any other
use of the same key. Not covered: evaluation_us (a measurement), causation_id,
correlation_id, occurred_at and the other envelope fields.

Determinism: `build_policy_decided` derives event_id as uuid5 over (tenant_id,
operation_key, policy_version), and takes occurred_at and expires_at from the
proposal, so the same proposal decided under the same policy version yields
the same event. The first decision for an operation_key is nevertheless the
one to keep: a retried proposal has its own event_id (the causation_id) and
the caller measures evaluation_us anew, so the processor stores the first
PolicyDecided per (tenant, operation_key) and re-emits that stored event
rather than re-evaluating; re-emission is then byte-identical.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from events.models import PolicyDecided, ToolCallProposed

__all__ = [
    "DECISION_NAMESPACE",
    "SIGNED_FIELDS",
    "DecisionRejected",
    "build_policy_decided",
    "canonical_decision_bytes",
    "decision_event_id",
    "sign_decision",
    "verify_decision",
]

DOMAIN = b"govstream.PolicyDecided.v1\n"
SIGNED_FIELDS: tuple[str, ...] = (
    "event_id",
    "tenant_id",
    "session_id",
    "operation_key",
    "tool",
    "action",
    "decision",
    "reason_code",
    "policy_version",
    "rule_id",
    "expires_at",
    "key_id",
)
# The uuid5 namespace of decision event ids.
DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:PolicyDecided")
PRODUCER = "govstream-policy/1"
MIN_KEY_BYTES = 16
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class DecisionRejected(Exception):
    """A decision failed verification. `reason` is one of:
    unknown_key_id, malformed, bad_signature, expired."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class _Decision(Protocol):
    """What build_policy_decided needs of projections.policy.Decision."""

    @property
    def decision(self) -> str: ...
    @property
    def reason_code(self) -> str: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def policy_version(self) -> str: ...


def _iso_utc(value: object) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expires_at {value!r} is not an ISO-8601 timestamp") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("expires_at must be a timezone-aware datetime or ISO string")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_decision_bytes(fields: Mapping[str, Any], key_id: str) -> bytes:
    """The exact bytes that are signed. Raises ValueError on a missing or mistyped field."""
    signed: dict[str, str] = {}
    for name in SIGNED_FIELDS:
        if name == "key_id":
            signed[name] = key_id
            continue
        if name not in fields:
            raise ValueError(f"missing decision field {name!r}")
        value = fields[name]
        if name == "expires_at":
            signed[name] = _iso_utc(value)
        elif isinstance(value, str):
            signed[name] = value
        else:
            raise ValueError(f"decision field {name!r} must be a string")
    body = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return DOMAIN + body.encode("ascii")


def sign_decision(fields: Mapping[str, Any], key: bytes, key_id: str) -> str:
    """Hex HMAC-SHA256 of the canonical form of `fields` (extra fields are ignored)."""
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"signing key must be at least {MIN_KEY_BYTES} bytes")
    if not key_id:
        raise ValueError("key_id must be non-empty")
    if fields.get("key_id", key_id) != key_id:
        raise ValueError("fields carry a different key_id than the signing key")
    message = canonical_decision_bytes(fields, key_id)
    return hmac.new(bytes(key), message, hashlib.sha256).hexdigest()


def verify_decision(
    decision: PolicyDecided | Mapping[str, Any],
    keys: Mapping[str, bytes],
    now: datetime,
) -> None:
    """Accept an authentic, unexpired decision or raise DecisionRejected.

    Checks, in order: the key id is known; the signature (compared with
    hmac.compare_digest) matches the canonical form; now < expires_at.
    It authenticates the decision only: the caller still acts on
    `decision` ("allow" / "deny" / "require_approval") and must check that
    the operation_key is the one it is about to execute.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    fields = decision.model_dump() if isinstance(decision, PolicyDecided) else decision
    key_id = fields.get("key_id")
    if not isinstance(key_id, str) or key_id not in keys:
        raise DecisionRejected("unknown_key_id", f"key id {key_id!r} is not known")
    signature = fields.get("signature")
    if not isinstance(signature, str) or not _HEX_SHA256.fullmatch(signature):
        raise DecisionRejected("malformed", "signature is not 64 lower-case hex digits")
    try:
        message = canonical_decision_bytes(fields, key_id)
    except ValueError as exc:
        raise DecisionRejected("malformed", str(exc)) from None
    expected = hmac.new(bytes(keys[key_id]), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise DecisionRejected("bad_signature", "signature does not match the decision fields")
    expires_at = datetime.fromisoformat(_iso_utc(fields["expires_at"]))
    if now >= expires_at:
        raise DecisionRejected("expired", f"decision expired at {expires_at.isoformat()}")


def decision_event_id(tenant_id: str, operation_key: str, policy_version: str) -> str:
    """The deterministic PolicyDecided event id of an operation under a policy version.

    The tenant is part of the name because operation keys are chosen by
    producers: two tenants using the same key must not share a decision id
    (the sink deduplicates by event_id).
    """
    name = json.dumps([tenant_id, operation_key, policy_version], ensure_ascii=True)
    return str(uuid.uuid5(DECISION_NAMESPACE, name))


def build_policy_decided(
    proposal: ToolCallProposed,
    decision: _Decision,
    *,
    key: bytes,
    key_id: str,
    evaluation_us: int,
    ttl: timedelta,
    now: datetime,
    event_id: str | None = None,
) -> PolicyDecided:
    """The signed PolicyDecided for `proposal`.

    Every field derives from the proposal and the decision, none from `now`
    (accepted so the caller's clock reading is explicit; it must be
    timezone-aware): occurred_at = proposal.occurred_at, expires_at =
    occurred_at + ttl, event_id = decision_event_id(...), causation_id =
    proposal.event_id. evaluation_us is the caller's measurement. `event_id`
    replaces the operation's id for a decision that is not the operation's (a
    refusal before the session started: the operation is decided later).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    event_id = event_id or decision_event_id(
        proposal.tenant_id, proposal.operation_key, decision.policy_version
    )
    fields: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": proposal.occurred_at,
        "tenant_id": proposal.tenant_id,
        "session_id": proposal.session_id,
        "workflow_id": proposal.workflow_id,
        "idempotency_key": f"PolicyDecided/{event_id}",
        "causation_id": proposal.event_id,
        "correlation_id": proposal.correlation_id,
        "environment": proposal.environment,
        "producer": PRODUCER,
        "operation_key": proposal.operation_key,
        "tool": proposal.tool,
        "action": proposal.action,
        "decision": decision.decision,
        "reason_code": decision.reason_code,
        "policy_version": decision.policy_version,
        "rule_id": decision.rule_id,
        "evaluation_us": evaluation_us,
        "key_id": key_id,
        "expires_at": proposal.occurred_at + ttl,
    }
    fields["signature"] = sign_decision(fields, key, key_id)
    return PolicyDecided(**fields)
