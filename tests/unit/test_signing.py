"""Signed policy decisions: round trips, tampering, key ids, expiry, deterministic ids."""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import timedelta, timezone
from typing import Any

import pytest

import events
from events.codec import Codec
from events.models import PolicyDecided, ToolCallProposed
from events.registry import EmbeddedRegistry
from events.signing import (
    DOMAIN,
    PROPOSAL_FIELDS,
    DecisionRejected,
    build_policy_decided,
    canonical_decision_bytes,
    decision_event_id,
    proposal_digest,
    sign_decision,
    verify_decision,
)
from projections.policy import Decision
from tests.factories import T0, tool_proposal

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
KEYS = {"k1": KEY, "k2": OTHER_KEY}
TTL = timedelta(minutes=5)
DECISION = Decision("allow", "ALLOWED", "default.allow", "2026-11-01")


def proposal(**overrides: Any) -> ToolCallProposed:
    return tool_proposal(**{"correlation_id": "trace-1", **overrides})


def build(prop: ToolCallProposed | None = None, **overrides: Any) -> PolicyDecided:
    options: dict[str, Any] = {
        "key": KEY,
        "key_id": "k1",
        "evaluation_us": 42,
        "ttl": TTL,
        "now": T0 + timedelta(milliseconds=3),
    }
    decision = overrides.pop("decision", DECISION)
    options.update(overrides)
    return build_policy_decided(prop or proposal(), decision, **options)


def test_round_trip() -> None:
    event = build()
    verify_decision(event, KEYS, T0)
    verify_decision(event.model_dump(), KEYS, T0 + TTL - timedelta(microseconds=1))
    verify_decision(json.loads(event.model_dump_json()), KEYS, T0)  # ISO string expires_at


def test_event_fields() -> None:
    prop = proposal()
    event = build(prop)
    assert event.causation_id == prop.event_id
    assert event.correlation_id == "trace-1"
    assert event.occurred_at == prop.occurred_at
    assert event.expires_at == prop.occurred_at + TTL
    assert (event.tenant_id, event.session_id, event.operation_key) == ("t-001", "s-1", "op-1")
    assert (event.decision, event.reason_code, event.rule_id) == (
        "allow",
        "ALLOWED",
        "default.allow",
    )
    assert event.policy_version == "2026-11-01"
    assert event.key_id == "k1"
    assert event.evaluation_us == 42
    assert uuid.UUID(event.event_id).version == 5
    assert event.idempotency_key == f"PolicyDecided/{event.event_id}"


def test_survives_the_avro_round_trip() -> None:
    codec = Codec(EmbeddedRegistry())
    event = build()
    decoded = codec.decode(codec.encode(event)).event
    assert decoded == event
    verify_decision(decoded, KEYS, T0)  # type: ignore[arg-type]


SIGNED = [name for name in PolicyDecided.model_fields if name not in ("signature", "key_id")]
_OTHER = {"decision": "deny", "risk_level": "critical", "method": "POST"}


def _changed(name: str, value: Any) -> Any:
    """Another value the field's type accepts."""
    if name in _OTHER:
        return _OTHER[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if name.endswith("_at"):
        return value + timedelta(microseconds=1)
    if value is None:
        return 443 if name.endswith("_port") else "w-other"
    if name in ("event_id", "causation_id"):
        return str(uuid.uuid4())
    if name == "proposal_digest":
        return value[::-1]
    return value + "x"


@pytest.mark.parametrize("name", SIGNED)
def test_every_field_but_the_signature_is_covered(name: str) -> None:
    """Issue 12: 10 fields were unsigned (environment, workflow_id, occurred_at, ...)."""
    fields = build().model_dump()
    fields[name] = _changed(name, fields[name])
    PolicyDecided.model_validate(fields)  # a valid decision, only not the one signed
    with pytest.raises(DecisionRejected) as info:
        verify_decision(fields, KEYS, T0)
    assert info.value.reason == "bad_signature"


def test_keys_may_be_str_or_bytes() -> None:
    """The README's example passes the key as the environment variable's text."""
    event = build()
    verify_decision(event, {"k1": KEY.decode()}, T0)
    verify_decision(event, {"k1": bytearray(KEY)}, T0)


def test_a_decision_is_bound_to_the_call_it_allows() -> None:
    prop = proposal(destination_host="API.Good.com.", method="get")
    event = build(prop)
    assert (event.destination_host, event.method) == ("api.good.com", "GET")
    assert event.proposal_digest == proposal_digest(prop)
    verify_decision(event, KEYS, T0, proposal=prop)
    same_call = prop.model_dump() | {"destination_host": "api.good.com", "method": "GET"}
    verify_decision(event, KEYS, T0, proposal=same_call)  # normalised alike
    changes = {
        "tenant_id": "t-other", "session_id": "s-other", "environment": "staging",
        "tool": "shell", "action": "exec", "destination_host": "evil.example.net",
        "method": "POST", "payload_bytes": prop.payload_bytes + 1, "risk_level": "critical",
    }  # fmt: skip
    assert set(changes) | {"destination_port"} == set(PROPOSAL_FIELDS)
    changes_port = prop.model_dump() | {"destination_host": "api.good.com:8443"}
    accepted = 0
    for other in [prop.model_dump() | {k: v} for k, v in changes.items()] + [changes_port]:
        try:
            verify_decision(event, KEYS, T0, proposal=other)
            accepted += 1
        except DecisionRejected as exc:
            assert exc.reason == "proposal_mismatch"
    assert accepted == 0
    with pytest.raises(DecisionRejected, match="proposal_mismatch: the decision is for"):
        verify_decision(event, KEYS, T0, proposal=prop.model_dump() | {"operation_key": "op-9"})


@pytest.mark.parametrize(
    ("decision", "reason"),
    [("deny", "TOOL_NOT_PERMITTED"), ("require_approval", "APPROVAL_REQUIRED")],
)
def test_decision_cannot_be_flipped_to_allow(decision: str, reason: str) -> None:
    fields = build(decision=Decision(decision, reason, "r", "2026-11-01")).model_dump()  # type: ignore[arg-type]
    fields.update(decision="allow", reason_code="ALLOWED")
    with pytest.raises(DecisionRejected, match="bad_signature"):
        verify_decision(fields, KEYS, T0)


def test_key_id_is_bound_into_the_signature() -> None:
    fields = build().model_dump()
    fields["key_id"] = "k2"  # another key the verifier knows
    with pytest.raises(DecisionRejected) as info:
        verify_decision(fields, KEYS, T0)
    assert info.value.reason == "bad_signature"


def test_the_envelope_is_signed_too() -> None:
    fields = build().model_dump()
    fields.update(evaluation_us=999, causation_id="other", producer="x/1")
    with pytest.raises(DecisionRejected, match="bad_signature"):
        verify_decision(fields, KEYS, T0)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda f: f.update(
                signature=("0" if f["signature"][0] != "0" else "1") + f["signature"][1:]
            ),
            "bad_signature",
        ),
        (lambda f: f.update(signature=f["signature"].upper()), "malformed"),
        (lambda f: f.update(signature=f["signature"][:-1]), "malformed"),
        (lambda f: f.update(signature=None), "malformed"),
        (lambda f: f.update(signature="é" * 64), "malformed"),
        (lambda f: f.pop("tool"), "malformed"),
        (lambda f: f.update(tool=7), "malformed"),
        (lambda f: f.update(expires_at="tomorrow"), "malformed"),
        (lambda f: f.update(key_id="k9"), "unknown_key_id"),
        (lambda f: f.pop("key_id"), "unknown_key_id"),
        (lambda f: f.update(key_id=None), "unknown_key_id"),
    ],
    ids=[
        "flipped-hex",
        "upper-case-hex",
        "truncated",
        "missing-signature",
        "non-ascii-signature",
        "missing-field",
        "non-string-field",
        "bad-expiry",
        "unknown-key-id",
        "no-key-id",
        "null-key-id",
    ],
)
def test_rejections(mutate: Any, reason: str) -> None:
    fields = build().model_dump()
    mutate(fields)
    with pytest.raises(DecisionRejected) as info:
        verify_decision(fields, KEYS, T0)
    assert info.value.reason == reason
    assert str(info.value).startswith(reason)


def test_unknown_key_id_for_the_verifier() -> None:
    with pytest.raises(DecisionRejected, match="unknown_key_id"):
        verify_decision(build(), {"k2": OTHER_KEY}, T0)


def test_wrong_key_under_the_right_id() -> None:
    with pytest.raises(DecisionRejected, match="bad_signature"):
        verify_decision(build(), {"k1": OTHER_KEY}, T0)


def test_expiry() -> None:
    event = build()
    verify_decision(event, KEYS, event.expires_at - timedelta(microseconds=1))
    for when in (event.expires_at, event.expires_at + timedelta(days=1)):
        with pytest.raises(DecisionRejected) as info:
            verify_decision(event, KEYS, when)
        assert info.value.reason == "expired"


def test_signature_is_checked_before_expiry() -> None:
    fields = build().model_dump()
    fields["tool"] = "shell"
    with pytest.raises(DecisionRejected, match="bad_signature"):
        verify_decision(fields, KEYS, T0 + timedelta(days=30))


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_decision(build(), KEYS, T0.replace(tzinfo=None))


def test_constant_time_compare_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("events.signing.hmac.compare_digest", spy)
    event = build()
    verify_decision(event, KEYS, T0)
    assert calls == [(event.signature, event.signature)]


def test_canonical_form() -> None:
    fields = build().model_dump()
    body = canonical_decision_bytes(fields, "k1")
    assert body.startswith(DOMAIN)
    decoded = json.loads(body[len(DOMAIN) :])
    assert list(decoded) == sorted(set(PolicyDecided.model_fields) - {"signature"})
    assert decoded["expires_at"] == "2026-11-22T12:05:00Z"
    # The same instant in another offset signs the same bytes.
    shifted = dict(fields, expires_at=fields["expires_at"].astimezone(timezone(timedelta(hours=2))))
    assert canonical_decision_bytes(shifted, "k1") == body
    expected = hmac.new(KEY, body, "sha256").hexdigest()
    assert sign_decision(fields, KEY, "k1") == expected == fields["signature"]


def test_sign_decision_argument_checks() -> None:
    fields = build().model_dump()
    with pytest.raises(ValueError, match="at least 16 bytes"):
        sign_decision(fields, b"short", "k1")
    with pytest.raises(ValueError, match="different key_id"):
        sign_decision(fields, KEY, "k2")
    with pytest.raises(ValueError, match="decision field 'rule_id': Field required"):
        sign_decision({k: v for k, v in fields.items() if k != "rule_id"}, KEY, "k1")
    with pytest.raises(ValueError, match="must carry a timezone"):
        sign_decision(dict(fields, expires_at=T0.replace(tzinfo=None)), KEY, "k1")
    with pytest.raises(ValueError, match="ttl"):
        build(ttl=timedelta(0))


# --- deterministic ids and re-emission ----------------------------------------------------


def test_same_inputs_build_identical_events() -> None:
    first = build()
    again = build(now=T0 + timedelta(hours=1))  # the caller's clock changes nothing
    assert first.model_dump_json() == again.model_dump_json()


def test_retries_of_one_operation_share_the_decision_id() -> None:
    first = build(proposal())
    retry = build(proposal(event_id="e-2", attempt=2, idempotency_key="k-1"))
    assert first.event_id == retry.event_id  # the governor re-emits the first one


@pytest.mark.parametrize(
    ("proposal_fields", "policy_version"),
    [
        ({"operation_key": "op-2"}, "2026-11-01"),
        ({}, "2026-12-01"),
        ({"tenant_id": "t-002"}, "2026-11-01"),
    ],
)
def test_decision_ids_differ_by_operation_version_and_tenant(
    proposal_fields: dict[str, Any], policy_version: str
) -> None:
    base = build().event_id
    decision = Decision("allow", "ALLOWED", "default.allow", policy_version)
    assert build(proposal(**proposal_fields), decision=decision).event_id != base


def test_decision_event_id_is_stable() -> None:
    # Pinned: changing the derivation would re-key every stored decision.
    assert decision_event_id("t-001", "op-1", "2026-11-01") == str(
        uuid.uuid5(
            uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:PolicyDecided"),
            '["t-001", "op-1", "2026-11-01"]',
        )
    )
    # No delimiter ambiguity between the parts.
    assert decision_event_id("t", "a|b", "c") != decision_event_id("t", "a", "b|c")


def test_package_exports() -> None:
    assert events.sign_decision is sign_decision
    assert events.verify_decision is verify_decision
