"""Signed policy decisions: HMAC-SHA256 over every field, bound to the proposal.

The governor signs every PolicyDecided; a tool adapter calls `verify_decision`
with the call it is about to run before executing, and refuses on
DecisionRejected.

Canonical form (what the signature covers): the UTF-8 bytes of

    DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

over every field of PolicyDecided but `signature` itself, in their JSON form
(pydantic's JSON mode: times as UTC ISO-8601 with the microseconds Avro keeps),
so a decision verifies after a round trip through the log and no field (not
the environment, the times, the causation or the attempt) can be changed
without breaking it. DOMAIN separates these signatures from any other use of
the key; key_id is signed, so a decision cannot be re-labelled with another key.

Binding to the proposal: a decision carries what was asked, as decided (the
destination normalised by events/hosts.py, method, payload size, risk) and
`proposal_digest`, a sha256 over the proposal's content (tenant, session,
environment, tool, action, destination host and port, method, payload_bytes,
risk_level). `verify_decision(decision, keys, now, proposal=...)` recomputes the
digest from what the adapter is about to run and rejects a decision made for
anything else.

Determinism: `build_policy_decided` derives event_id as uuid5 over (tenant_id,
operation_key, policy_version), and takes occurred_at and expires_at from the
proposal, so the same proposal decided under the same policy version yields
the same event. The governor stores the first PolicyDecided per (tenant,
operation_key) and re-emits it byte for byte to later proposals with the same
content; another content under that key is refused (OPERATION_KEY_CONFLICT).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from events.hosts import HostError, parse_host
from events.models import PolicyDecided, ToolCallProposed

__all__ = [
    "DECISION_NAMESPACE",
    "PROPOSAL_FIELDS",
    "DecisionRejected",
    "build_policy_decided",
    "canonical_decision_bytes",
    "decision_event_id",
    "proposal_content",
    "proposal_digest",
    "sign_decision",
    "verify_decision",
]

DOMAIN = b"govstream.PolicyDecided.v2\n"
PROPOSAL_DOMAIN = b"govstream.ToolCallProposed.content.v1\n"
# What a proposal's digest covers (the operation key names the call; these say what it is).
PROPOSAL_FIELDS: tuple[str, ...] = (
    "tenant_id",
    "session_id",
    "environment",
    "tool",
    "action",
    "destination_host",
    "destination_port",
    "method",
    "payload_bytes",
    "risk_level",
)
# The uuid5 namespace of decision event ids.
DECISION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:PolicyDecided")
PRODUCER = "govstream-policy/1"
MIN_KEY_BYTES = 16
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLACEHOLDER = "0" * 64  # stands in for the signature while the fields are checked


class DecisionRejected(Exception):
    """A decision failed verification. `reason` is one of:
    unknown_key_id, malformed, bad_signature, expired, proposal_mismatch."""

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


def _destination(host: str | None) -> tuple[str | None, int | None]:
    """(normalised host, port) as the policy reads it; an invalid host as sent."""
    if host is None:
        return None, None
    try:
        parsed = parse_host(host)
    except HostError:
        return host, None
    return parsed.value, parsed.port


def proposal_content(proposal: ToolCallProposed | Mapping[str, Any]) -> dict[str, Any]:
    """The content a decision is bound to: PROPOSAL_FIELDS, destination normalised,
    method upper-cased. A Mapping needs every field of a ToolCallProposed named in
    PROPOSAL_FIELDS (destination_host may be None)."""
    fields = proposal.model_dump() if isinstance(proposal, ToolCallProposed) else proposal
    try:
        host, port = _destination(fields.get("destination_host"))
        return {
            "tenant_id": str(fields["tenant_id"]),
            "session_id": str(fields["session_id"]),
            "environment": str(fields["environment"]),
            "tool": str(fields["tool"]),
            "action": str(fields["action"]),
            "destination_host": host,
            "destination_port": port,
            "method": str(fields["method"]).upper(),
            "payload_bytes": int(fields["payload_bytes"]),
            "risk_level": str(fields["risk_level"]),
        }
    except KeyError as exc:
        raise ValueError(f"the proposal has no {exc.args[0]!r}") from None


def proposal_digest(proposal: ToolCallProposed | Mapping[str, Any]) -> str:
    """Hex sha256 of the proposal's canonical content."""
    return _digest(proposal_content(proposal))


def _digest(content: Mapping[str, Any]) -> str:
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(PROPOSAL_DOMAIN + body.encode("ascii")).hexdigest()


def _validated(fields: Mapping[str, Any], key_id: str) -> PolicyDecided:
    """The decision `fields` describe (signature kept if given); ValueError naming the
    first missing or mistyped field."""
    data = {"signature": _PLACEHOLDER, **fields, "key_id": key_id}
    try:
        return PolicyDecided.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "decision"
        raise ValueError(f"decision field {where!r}: {error['msg']}") from None


def _signed_bytes(decision: PolicyDecided) -> bytes:
    signed = decision.model_dump(mode="json", exclude={"signature"})
    body = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return DOMAIN + body.encode("ascii")


def canonical_decision_bytes(fields: Mapping[str, Any], key_id: str) -> bytes:
    """The exact bytes that are signed: every PolicyDecided field but the signature.
    Raises ValueError on a missing or mistyped field."""
    return _signed_bytes(_validated(fields, key_id))


def _key_bytes(key: bytes | bytearray | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _signing_key(key: bytes | str, key_id: str) -> bytes:
    if not isinstance(key, bytes | bytearray | str) or len(_key_bytes(key)) < MIN_KEY_BYTES:
        raise ValueError(f"signing key must be at least {MIN_KEY_BYTES} bytes")
    if not key_id:
        raise ValueError("key_id must be non-empty")
    return _key_bytes(key)


def sign_decision(fields: Mapping[str, Any], key: bytes | str, key_id: str) -> str:
    """Hex HMAC-SHA256 of the canonical form of `fields` (`signature` is not signed)."""
    secret = _signing_key(key, key_id)
    if fields.get("key_id", key_id) != key_id:
        raise ValueError("fields carry a different key_id than the signing key")
    message = canonical_decision_bytes(fields, key_id)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_decision(
    decision: PolicyDecided | Mapping[str, Any],
    keys: Mapping[str, bytes | str],
    now: datetime,
    *,
    proposal: ToolCallProposed | Mapping[str, Any] | None = None,
) -> None:
    """Accept an authentic, unexpired decision about `proposal` or raise DecisionRejected.

    Checks, in order: the key id is known; the signature (compared with
    hmac.compare_digest) matches the canonical form; now < expires_at; with
    `proposal` (what the adapter is about to run), its operation key and its
    digest are the decision's. Keys may be bytes or str (UTF-8). The caller
    still acts on `decision` ("allow" / "deny" / "require_approval").
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
    try:  # a model is valid already; fields are validated once, here
        checked = decision if isinstance(decision, PolicyDecided) else _validated(fields, key_id)
    except ValueError as exc:
        raise DecisionRejected("malformed", str(exc)) from None
    message = _signed_bytes(checked)
    expected = hmac.new(_key_bytes(keys[key_id]), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise DecisionRejected("bad_signature", "signature does not match the decision fields")
    expires_at = checked.expires_at
    if now >= expires_at:
        raise DecisionRejected("expired", f"decision expired at {expires_at.isoformat()}")
    if proposal is None:
        return
    try:
        digest = proposal_digest(proposal)
        operation_key = (
            proposal.operation_key
            if isinstance(proposal, ToolCallProposed)
            else proposal["operation_key"]
        )
    except (KeyError, ValueError) as exc:
        raise DecisionRejected("malformed", f"the proposal: {exc}") from None
    if operation_key != fields.get("operation_key"):
        raise DecisionRejected(
            "proposal_mismatch", f"the decision is for operation {fields.get('operation_key')!r}"
        )
    if not hmac.compare_digest(digest, str(fields.get("proposal_digest") or "")):
        raise DecisionRejected(
            "proposal_mismatch", "the decision was made for another call (proposal digest)"
        )


def decision_event_id(tenant_id: str, operation_key: str, policy_version: str) -> str:
    """The deterministic PolicyDecided event id of an operation under a policy version.

    The tenant is part of the name because operation keys are chosen by
    producers: two tenants using the same key must not share a decision id
    (the sink deduplicates by event_id).
    """
    name = json.dumps([tenant_id, operation_key, policy_version], ensure_ascii=True)
    return str(uuid.uuid5(DECISION_NAMESPACE, name))


def _asked(proposal: ToolCallProposed) -> dict[str, Any]:
    """The decision log's input: the proposal as the policy read it, and its digest."""
    content = proposal_content(proposal)
    return {
        "destination_host": content["destination_host"],
        "destination_port": content["destination_port"],
        "method": content["method"],
        "payload_bytes": content["payload_bytes"],
        "risk_level": content["risk_level"],
        "proposal_digest": _digest(content),
    }


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
        **_asked(proposal),
    }
    # Validated once: the unsigned decision gives the signed bytes, then its signature.
    unsigned = _validated(fields, key_id)
    signature = hmac.new(_signing_key(key, key_id), _signed_bytes(unsigned), hashlib.sha256)
    return unsigned.model_copy(update={"signature": signature.hexdigest()})
