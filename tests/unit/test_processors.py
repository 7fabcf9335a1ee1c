"""The session processor's pure function: dedupe -> lifecycle -> policy, without Kafka."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.models import (
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionEvent,
    SessionQuarantined,
    ToolCallCompleted,
    ToolCallProposed,
)
from events.signing import DecisionRejected, verify_decision
from govstream.settings import Settings
from projections.policy import PolicyDocument, load_policy
from streams.processors import SUPPRESSED_BY, Signing, process
from tests.factories import T0, session_started, turn

SETTINGS = Settings()
SIGNING = Signing.from_settings(SETTINGS)
KEYS = {SETTINGS.policy_key_id: SETTINGS.policy_signing_key.encode()}
NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy() -> PolicyDocument:
    return load_policy(SETTINGS.resolved_policy_path)


def proposal(**overrides: Any) -> ToolCallProposed:
    event_id = overrides.pop("event_id", str(uuid.uuid4()))
    fields: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(seconds=2),
        "tenant_id": "t-001",
        "session_id": "s-1",
        "idempotency_key": f"key-{event_id}",
        "tool": "http_request",
        "action": "fetch",
        "operation_key": "op-1",
        "destination_host": "api.good.com",
        "method": "GET",
        "payload_bytes": 100,
        "risk_level": "low",
    }
    fields.update(overrides)
    return ToolCallProposed(**fields)


def completed(operation_key: str, seconds: int = 3) -> ToolCallCompleted:
    event_id = str(uuid.uuid4())
    return ToolCallCompleted(
        event_id=event_id,
        occurred_at=T0 + timedelta(seconds=seconds),
        tenant_id="t-001",
        session_id="s-1",
        idempotency_key=f"key-{event_id}",
        operation_key=operation_key,
        status="succeeded",
        latency_ms=12,
    )


def run(
    policy: PolicyDocument, events: list[SessionEvent], entry: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[SessionEvent]]:
    out: list[SessionEvent] = []
    for event in events:
        entry, derived = process(entry, event, policy=policy, signing=SIGNING, now=NOW)
        out.extend(derived)
    return entry, out


def test_clean_session_derives_only_policy_decisions(policy: PolicyDocument) -> None:
    entry, out = run(
        policy,
        [
            session_started(plan="team"),
            turn(),
            proposal(operation_key="op-1"),
            completed("op-1"),
            turn(occurred_at=T0 + timedelta(seconds=4)),
        ],
    )
    assert [type(e) for e in out] == [PolicyDecided]
    decided = out[0]
    assert isinstance(decided, PolicyDecided)
    assert (decided.decision, decided.reason_code) == ("allow", "ALLOWED")
    assert entry is not None
    assert entry["lifecycle"]["status"] == "active"
    assert entry["plan"] == "team"
    assert len(entry["applied"]) == 5
    json.dumps(entry)  # the table stores JSON


def test_retry_is_suppressed_once_and_changes_nothing(policy: PolicyDocument) -> None:
    first = proposal(idempotency_key="op-1-call", attempt=1)
    entry, _ = run(policy, [session_started(), turn(), first])
    retry = proposal(idempotency_key="op-1-call", attempt=2)
    new_entry, out = process(entry, retry, policy=policy, signing=SIGNING, now=NOW)
    assert new_entry == entry
    assert len(out) == 1
    dup = out[0]
    assert isinstance(dup, DuplicateSuppressed)
    assert (dup.original_event_id, dup.duplicate_event_id) == (first.event_id, retry.event_id)
    assert (dup.original_attempt, dup.duplicate_attempt) == (1, 2)
    assert dup.suppressed_by == SUPPRESSED_BY
    # deterministic id: the same retry suppressed again yields the same event
    _, again = process(entry, retry, policy=policy, signing=SIGNING, now=NOW)
    assert again[0] == dup


def test_redelivery_of_the_same_event_is_a_no_op(policy: PolicyDocument) -> None:
    event = turn()
    entry, _ = run(policy, [session_started(), event])
    new_entry, out = process(entry, event, policy=policy, signing=SIGNING, now=NOW)
    assert out == []
    assert new_entry == entry


def test_three_invalid_transitions_quarantine_and_deny_later_proposals(
    policy: PolicyDocument,
) -> None:
    entry, out = run(
        policy,
        [session_started(), turn(), *(completed(f"unknown-{i}", 3 + i) for i in range(3))],
    )
    kinds = [type(e) for e in out]
    assert kinds == [InvalidTransitionRejected] * 3 + [SessionQuarantined]
    assert entry is not None and entry["lifecycle"]["status"] == "quarantined"
    entry, out = run(policy, [proposal(operation_key="op-late")], entry)
    decided = [e for e in out if isinstance(e, PolicyDecided)]
    assert len(decided) == 1
    assert (decided[0].decision, decided[0].reason_code) == ("deny", "QUARANTINED")


def test_same_operation_key_gets_the_stored_decision(policy: PolicyDocument) -> None:
    entry, out1 = run(policy, [session_started(), turn(), proposal(operation_key="op-7")])
    # a different event (new idempotency key) proposing the same operation
    entry, out2 = run(
        policy,
        [proposal(operation_key="op-7", occurred_at=T0 + timedelta(seconds=9))],
        entry,
    )
    d1 = [e for e in out1 if isinstance(e, PolicyDecided)]
    d2 = [e for e in out2 if isinstance(e, PolicyDecided)]
    assert len(d1) == len(d2) == 1
    assert d1[0].model_dump_json() == d2[0].model_dump_json()


def test_every_decision_verifies_with_the_configured_key_only(policy: PolicyDocument) -> None:
    _, out = run(
        policy,
        [
            session_started(),
            turn(),
            proposal(operation_key="a"),
            proposal(operation_key="b", tool="shell"),
            proposal(operation_key="c", destination_host="evil.example.org"),
            proposal(operation_key="d", risk_level="high", tool="web_search", method="GET"),
        ],
    )
    decisions = [e for e in out if isinstance(e, PolicyDecided)]
    assert len(decisions) == 4
    assert {d.decision for d in decisions} >= {"allow", "deny"}
    for decided in decisions:
        verify_decision(decided, KEYS, decided.occurred_at)
        with pytest.raises(DecisionRejected):
            verify_decision(
                decided, {SETTINGS.policy_key_id: b"another-key-entirely!"}, decided.occurred_at
            )


def test_user_info_in_host_is_an_invalid_host(policy: PolicyDocument) -> None:
    _, out = run(
        policy,
        [session_started(), turn(), proposal(destination_host="good.com@evil.com")],
    )
    decided = [e for e in out if isinstance(e, PolicyDecided)]
    assert [(d.decision, d.reason_code) for d in decided] == [("deny", "EGRESS_INVALID_HOST")]


def test_plan_defaults_to_free_without_session_started(policy: PolicyDocument) -> None:
    # No SessionStarted: lifecycle rejects, policy denies on the session status.
    _, out = run(policy, [proposal()])
    decided = [e for e in out if isinstance(e, PolicyDecided)]
    assert [(d.decision, d.reason_code) for d in decided] == [("deny", "SESSION_NOT_ACTIVE")]
    assert any(isinstance(e, InvalidTransitionRejected) for e in out)


def test_applied_keys_are_bounded_fifo(policy: PolicyDocument) -> None:
    signing = Signing(SIGNING.key, SIGNING.key_id, SIGNING.ttl, dedupe_window=3)
    entry: dict[str, Any] | None = None
    events: list[SessionEvent] = [session_started(idempotency_key="k0")]
    events += [turn(idempotency_key=f"k{i}") for i in range(1, 5)]
    for event in events:
        entry, _ = process(entry, event, policy=policy, signing=signing, now=NOW)
    assert entry is not None
    assert list(entry["applied"]) == ["k2", "k3", "k4"]


def test_process_does_not_mutate_its_input(policy: PolicyDocument) -> None:
    entry, _ = run(policy, [session_started(), turn()])
    snapshot = json.dumps(entry, sort_keys=True)
    run(policy, [proposal(), completed("nope")], entry)
    assert json.dumps(entry, sort_keys=True) == snapshot
