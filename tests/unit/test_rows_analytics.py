"""Rows of the analytics facts (migration 0003): pure, no Kafka, no ClickHouse."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from events.codec import Codec
from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    CheckpointCreated,
    ContextCompactionRequested,
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionSuspended,
    ToolCallCompleted,
)
from events.registry import EmbeddedRegistry
from events.topics import Topics, is_derived_topic
from streams.ingest import InputRules, ingest
from streams.prepare import JSON_TABLES, prepare_batch
from streams.rows import TABLE_COLUMNS, Batch, build_batch
from tests.factories import RULES, SIGNER, T0, T0_MS, session_started, source, tool_proposal

CODEC = Codec(EmbeddedRegistry())
TOPICS = Topics("gs.x")
X_RULES = InputRules(TOPICS, SIGNER, max_event_age=RULES.max_event_age)
S = {"tenant_id": "t-001", "session_id": "s-1", "occurred_at": T0}


def _env(event_id: str, **overrides: Any) -> dict[str, Any]:
    return {**S, "event_id": event_id, "idempotency_key": f"key-{event_id}", **overrides}


def _batch(*events: tuple[str, SessionEvent]) -> Batch:
    # What the processors write to the derived topic carries the worker's signature.
    records = [
        source(CODEC.encode(e), topic=t, offset=n, partition=0, signed=t == TOPICS.derived)
        for n, (t, e) in enumerate(events)
    ]
    items = [ingest(CODEC, record, X_RULES) for record in records]
    return build_batch(items)


def _rows(batch: Batch, table: str) -> list[dict[str, Any]]:
    return [dict(zip(TABLE_COLUMNS[table], row, strict=True)) for row in batch.rows[table]]


def _decided() -> PolicyDecided:
    return PolicyDecided(
        **_env("d-1", producer="govstream-processor/1"),
        operation_key="op-1", tool="http_request", action="fetch", decision="deny",
        reason_code="EGRESS_NOT_ALLOWED", policy_version="p-1", rule_id="egress",
        evaluation_us=42, key_id="k1", signature="ab", expires_at=T0 + timedelta(minutes=5),
    )  # fmt: skip


def test_every_table_has_its_columns_and_json_rows() -> None:
    assert set(JSON_TABLES) | {"dead_letters"} == set(TABLE_COLUMNS)
    assert JSON_TABLES[-1] == "events_archive"  # the record of what was sunk goes last
    assert TOPICS.sink_inputs() == ("gs.x.sessions", "gs.x.tenants", "gs.x.derived")
    assert is_derived_topic(TOPICS.derived) and not is_derived_topic(TOPICS.review)


def test_tool_proposals_and_completions_are_keyed_by_operation() -> None:
    completed = ToolCallCompleted(
        **_env("c-1", attempt=2), operation_key="op-1", status="succeeded", latency_ms=120
    )
    batch = _batch((TOPICS.sessions, tool_proposal()), (TOPICS.sessions, completed))
    (proposal,) = _rows(batch, "tool_proposals")
    assert proposal["operation_key"] == "op-1"
    assert (proposal["tool"], proposal["destination_host"], proposal["payload_bytes"]) == (
        "http_request", "good.com", 100,
    )  # fmt: skip
    assert (proposal["proposed_at"], proposal["attempt"]) == (T0, 1)
    (completion,) = _rows(batch, "tool_completions")
    assert (completion["operation_key"], completion["status"], completion["latency_ms"]) == (
        "op-1", "succeeded", 120,
    )  # fmt: skip
    assert completion["attempt"] == 2  # the version keeps the lowest attempt
    assert len(batch.rows["events_archive"]) == 2


def test_policy_and_admission_decisions() -> None:
    admitted = AdmissionDecided(
        **_env("a-1"), request_kind="turn", decision="degrade", reason_code="BUDGET_80",
        model="small", estimated_tokens=900, remaining_tokens=-5,
    )  # fmt: skip
    batch = _batch((TOPICS.derived, _decided()), (TOPICS.derived, admitted))
    (decision,) = _rows(batch, "policy_decisions")
    assert (decision["tenant_id"], decision["operation_key"], decision["decision"]) == (
        "t-001", "op-1", "deny",
    )  # fmt: skip
    assert (decision["reason_code"], decision["rule_id"], decision["evaluation_us"]) == (
        "EGRESS_NOT_ALLOWED", "egress", 42,
    )  # fmt: skip
    assert decision["decided_at"] == T0
    (admission,) = _rows(batch, "admission_decisions")
    assert (admission["decision"], admission["model"], admission["remaining_tokens"]) == (
        "degrade", "small", -5,
    )  # fmt: skip
    assert admission["reservation_id"] is None
    archive = _rows(batch, "events_archive")
    assert [(r["topic"], r["offset"], r["event_type"]) for r in archive] == [
        ("gs.x.derived", 0, "PolicyDecided"), ("gs.x.derived", 1, "AdmissionDecided"),
    ]  # fmt: skip


def test_a_decision_row_says_what_was_asked_and_refusals_of_no_operation_stay_out() -> None:
    asked = _decided().model_copy(update={
        "destination_host": "api.example.com", "destination_port": 8443, "method": "GET",
        "payload_bytes": 10, "risk_level": "low", "proposal_digest": "f" * 64,
    })  # fmt: skip
    conflict = asked.model_copy(
        update={"event_id": "d-2", "idempotency_key": "key-d-2", "decision": "deny",
                "reason_code": "OPERATION_KEY_CONFLICT", "rule_id": "operation_key.conflict"}
    )  # fmt: skip
    batch = _batch((TOPICS.derived, asked), (TOPICS.derived, conflict))
    (row,) = _rows(batch, "policy_decisions")  # the operation's decision, not the refusal
    assert (row["event_id"], row["destination_host"], row["destination_port"]) == (
        "d-1", "api.example.com", 8443,
    )  # fmt: skip
    assert (row["method"], row["payload_bytes"], row["risk_level"]) == ("GET", 10, "low")
    assert row["proposal_digest"] == "f" * 64
    assert len(_rows(batch, "events_archive")) == 2  # both stay in the archive


def test_session_transitions_applied_and_rejected() -> None:
    rejected = InvalidTransitionRejected(
        **_env("r-1", idempotency_key="lifecycle:rejected:x", causation_id="res-1"),
        from_state="closed", attempted="SessionResumed", reason="INVALID: closed is final",
    )  # fmt: skip
    events: list[tuple[str, SessionEvent]] = [
        (TOPICS.sessions, session_started(event_id="st-1")),
        (TOPICS.sessions, CheckpointCreated(**_env("cp-1"), artifact_ref="s3://a")),
        (TOPICS.sessions, SessionSuspended(**_env("su-1"), reason="operator")),
        (TOPICS.sessions, SessionResumed(**_env("res-1"), reason="operator")),
        (TOPICS.sessions, SessionClosed(**_env("cl-1"))),
        (TOPICS.sessions, SessionFailed(**_env("f-1"), reason="boom", error_class="E")),
        (TOPICS.derived, SessionQuarantined(**_env("q-1"), reason="faults")),
        (TOPICS.derived, SessionSuspended(**_env("bs-1"), reason="budget exceeded")),
        (TOPICS.derived, rejected),
    ]
    batch = _batch(*events)
    rows = _rows(batch, "session_transitions")
    assert [(r["event_type"], r["outcome"], r["source"]) for r in rows] == [
        ("SessionStarted", "applied", "runtime"),
        ("CheckpointCreated", "applied", "runtime"),
        ("SessionSuspended", "applied", "runtime"),
        ("SessionResumed", "applied", "runtime"),
        ("SessionClosed", "applied", "runtime"),
        ("SessionFailed", "applied", "runtime"),
        ("SessionQuarantined", "applied", "processor"),
        ("SessionSuspended", "applied", "processor"),
        ("SessionResumed", "rejected", "processor"),
    ]
    failed, last = rows[5], rows[-1]
    assert (failed["reason"], failed["error_class"], failed["from_state"]) == ("boom", "E", "")
    assert (last["from_state"], last["causation_id"]) == ("closed", "res-1")
    assert last["idempotency_key"] == "lifecycle:rejected:x"
    assert rows[0]["reason"] == "" and rows[4]["reason"] == "completed"
    assert len(batch.rows["sessions"]) == 1  # SessionStarted still makes its sessions row


def test_retry_of_a_lifecycle_event_keeps_its_key_and_attempt() -> None:
    original = SessionClosed(**_env("cl-1", idempotency_key="close-s-1"))
    later = T0 + timedelta(minutes=1)
    retry = SessionClosed(**_env("cl-2", idempotency_key="close-s-1", attempt=2, occurred_at=later))
    rows = _rows(
        _batch((TOPICS.sessions, original), (TOPICS.sessions, retry)), "session_transitions"
    )
    # One key: the table collapses them to the lowest attempt (version 65535 - attempt).
    assert {r["idempotency_key"] for r in rows} == {"close-s-1"}
    assert [r["attempt"] for r in rows] == [1, 2]


def test_budget_events_and_suppressed_duplicates() -> None:
    warning = BudgetWarning(
        **_env("w-1"), scope="tenant_day", scope_key="t-001/2026-11-22", limit=1000, used=800,
        threshold_pct=80,
    )  # fmt: skip
    exceeded = BudgetExceeded(
        **_env("x-1"), scope="session", scope_key="s-1", limit=1000, used=1200,
        action="degrade", fallback_model="small",
    )  # fmt: skip
    duplicate = DuplicateSuppressed(
        **_env("dup-1"), duplicate_event_id="e-2", original_event_id="e-1",
        duplicate_attempt=2, original_attempt=1, suppressed_by="session-processor",
    )  # fmt: skip
    compaction = ContextCompactionRequested(**_env("cc-1"), turn_tokens=9000, threshold=8000)
    batch = _batch(*((TOPICS.derived, e) for e in (warning, exceeded, duplicate, compaction)))
    budget = _rows(batch, "budget_events")
    fields = ("event_type", "threshold_pct", "action", "fallback_model")
    assert [tuple(r[f] for f in fields) for r in budget] == [
        ("BudgetWarning", 80, None, None),
        ("BudgetExceeded", None, "degrade", "small"),
    ]  # fmt: skip
    assert [(r["budget_limit"], r["used"]) for r in budget] == [(1000, 800), (1000, 1200)]
    (dup,) = _rows(batch, "duplicates_suppressed")
    assert (dup["duplicate_event_id"], dup["original_event_id"]) == ("e-2", "e-1")
    assert (dup["duplicate_attempt"], dup["original_attempt"]) == (2, 1)
    # Every record is archived, even one no analytics table takes.
    assert len(batch.rows["events_archive"]) == 4


def test_prepare_serializes_the_new_tables_as_json() -> None:
    decided, proposed = CODEC.encode(_decided()), CODEC.encode(tool_proposal())
    records = [
        ("gs.x.derived", 0, 0, T0_MS, decided, b"s-1", (SIGNER.header(b"s-1", decided),)),
        ("gs.x.sessions", 1, 5, T0_MS, proposed, b"t-001", ()),
    ]
    prepared = prepare_batch(records, CODEC, X_RULES)
    assert {t: n for t, n in prepared.rows.items() if n} == {
        "policy_decisions": 1, "tool_proposals": 1, "events_archive": 2,
    }  # fmt: skip
    (row,) = [json.loads(line) for line in prepared.bodies["policy_decisions"].splitlines()]
    decision = dict(zip(TABLE_COLUMNS["policy_decisions"], row, strict=True))
    assert (decision["operation_key"], decision["decision"]) == ("op-1", "deny")
    assert prepared.bodies["turns"] == b""
