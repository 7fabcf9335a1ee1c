"""The session processor agent against a real broker and a worker subprocess."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
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
from events.signing import verify_decision
from events.topics import Topics
from govstream.processes import WorkerProcess
from govstream.settings import Settings
from tests.conftest import BACKENDS, Backend, isolated_settings
from tests.factories import session_started, tenant_profile, turn
from tests.kafka_io import read_events_until
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WAIT_SECONDS = 60


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def settings(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    backend: Backend = request.param
    base = tmp_path_factory.mktemp("processors")
    settings = isolated_settings(
        base, brokers.bootstrap(backend.kafka), clickhouse_servers.url(backend.clickhouse)
    )
    worker = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        worker.wait_ready()
        yield settings
    finally:
        worker.stop()


def _envelope(session_id: str, seconds: float, **overrides: Any) -> dict[str, Any]:
    event_id = overrides.pop("event_id", str(uuid.uuid4()))
    return {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(seconds=seconds),
        "tenant_id": "t-001",
        "session_id": session_id,
        "idempotency_key": f"key-{event_id}",
        **overrides,
    }


def _proposal(session_id: str, seconds: float, **overrides: Any) -> ToolCallProposed:
    fields: dict[str, Any] = {
        "tool": "http_request",
        "action": "fetch",
        "operation_key": f"{session_id}/op-1",
        "destination_host": "api.good.com",
        "method": "GET",
        "payload_bytes": 512,
        "risk_level": "low",
    }
    fields.update(overrides)
    return ToolCallProposed(**_envelope(session_id, seconds, **fields))


def _of(session_id: str, events: list[SessionEvent]) -> list[SessionEvent]:
    return [e for e in events if e.session_id == session_id]


def test_session_is_deduped_quarantined_and_decided(settings: Settings) -> None:
    sid = "s-proc-1"
    first = _proposal(sid, 2, idempotency_key=f"{sid}/call-1", attempt=1)
    retry = _proposal(sid, 2.5, idempotency_key=f"{sid}/call-1", attempt=2)
    invalid = [
        ToolCallCompleted(
            **_envelope(sid, 3 + i, operation_key=f"{sid}/unknown-{i}", status="succeeded",
                        latency_ms=5)
        )
        for i in range(3)
    ]  # fmt: skip
    last = _proposal(sid, 10, operation_key=f"{sid}/op-2")
    started = session_started(session_id=sid, plan="team", occurred_at=T0)
    a_turn = turn(session_id=sid, occurred_at=T0 + timedelta(seconds=1))
    _send(settings, [started, a_turn, first, retry, *invalid, last])

    def done(events: list[SessionEvent]) -> bool:
        return sum(isinstance(e, PolicyDecided) for e in _of(sid, events)) >= 2

    events = _of(
        sid,
        read_events_until(
            settings.kafka_bootstrap or "", Topics(settings.topic_prefix).derived, done
        ),
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "PolicyDecided",
        "DuplicateSuppressed",
        "InvalidTransitionRejected",
        "InvalidTransitionRejected",
        "InvalidTransitionRejected",
        "SessionQuarantined",
        # the proposal in a quarantined session is itself an invalid transition
        "InvalidTransitionRejected",
        "PolicyDecided",
    ], kinds
    dup = events[1]
    assert isinstance(dup, DuplicateSuppressed)
    assert (dup.original_event_id, dup.duplicate_event_id) == (first.event_id, retry.event_id)
    assert (dup.original_attempt, dup.duplicate_attempt) == (1, 2)
    assert all(isinstance(e, InvalidTransitionRejected) for e in events[2:5])
    assert isinstance(events[5], SessionQuarantined)
    rejected_last = events[6]
    assert isinstance(rejected_last, InvalidTransitionRejected)
    assert rejected_last.causation_id == last.event_id
    assert rejected_last.from_state == "quarantined"
    decisions = [e for e in events if isinstance(e, PolicyDecided)]
    assert [(d.operation_key, d.decision, d.reason_code) for d in decisions] == [
        (first.operation_key, "allow", "ALLOWED"),
        (last.operation_key, "deny", "QUARANTINED"),
    ]
    keys = {settings.policy_key_id: settings.policy_signing_key.encode()}
    for decided in decisions:
        verify_decision(decided, keys, decided.occurred_at)

    # The deny is also on the review topic.
    review = read_events_until(
        settings.kafka_bootstrap or "",
        Topics(settings.topic_prefix).review,
        lambda evs: any(e.session_id == sid for e in evs),
    )
    assert [e.event_id for e in _of(sid, review)] == [decisions[1].event_id]


def test_processor_throughput(settings: Settings, record_property: Any) -> None:
    # GOVSTREAM_BENCH_PROCESSOR_SESSIONS=3000 for a steadier figure.
    sessions = int(os.environ.get("GOVSTREAM_BENCH_PROCESSOR_SESSIONS", "300"))
    # A profile without limits: a tenant with none would get the default ones
    # (50 concurrent sessions), and this measures decisions, not budgets.
    events: list[Any] = [tenant_profile(tenant_id="t-001", occurred_at=T0)]
    for n in range(sessions):
        sid = f"s-tp-{n}"
        events.append(session_started(session_id=sid, plan="team", occurred_at=T0))
        events.append(turn(session_id=sid, occurred_at=T0 + timedelta(seconds=1)))
        events.append(_proposal(sid, 2))
    started = time.monotonic()
    _send(settings, events)
    sent = time.monotonic() - started

    def done(evs: list[SessionEvent]) -> bool:
        return (
            sum(isinstance(e, PolicyDecided) and e.session_id.startswith("s-tp-") for e in evs)
            >= sessions
        )

    out = read_events_until(
        settings.kafka_bootstrap or "", Topics(settings.topic_prefix).derived, done
    )
    elapsed = time.monotonic() - started
    decided = [e for e in out if isinstance(e, PolicyDecided) and e.session_id.startswith("s-tp-")]
    assert len(decided) == sessions
    assert all(d.decision == "allow" for d in decided)
    rate = len(events) / elapsed
    record_property("processor_events_per_second", round(rate))
    print(
        f"\nsession processor: {len(events)} events in {elapsed:.2f}s = {rate:.0f} events/s"
        f" (sending took {sent:.2f}s)"
    )
