"""The analytics facts (migration 0003) from a seeded fleet equal the truth and the log.

One worker with all agents (sink and processors, exactly_once) consumes a
seeded fleet sent with exact duplicates, malformed records, and a redelivery
and a runtime retry of every event (retries=3: the retry has the same
idempotency key and a new event_id). Once both consumer groups are at zero
lag, and the sink has committed all of the derived topic (partly written
inside Kafka transactions: its lag must be exactly zero, no transaction
marker left behind), the tables must equal:
the simulator's ground truth for what producers sent (tool proposals,
completions, lifecycle events) and the derived topic for what the processors
decided (policy decisions, budget events, suppressed duplicates, quarantines).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from events.codec import Codec
from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    DuplicateSuppressed,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionQuarantined,
    SessionSuspended,
)
from events.provenance import RecordSigner
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.simulate import FleetConfig
from streams.ingest import InputRules
from streams.rows import LIFECYCLE_EVENTS
from tests.conftest import BACKENDS
from tests.fleet_run import Run, fleet_run, wait_for_sink_on_derived

pytestmark = pytest.mark.integration

FLEET = FleetConfig(
    seed=41,
    tenants=5,
    sessions=200,
    start=datetime(2026, 11, 21, tzinfo=UTC),
    duplicate_rate=0.03,
    malformed_rate=0.01,
    retries=3,
)
LIFECYCLE_TYPES = sorted(t.__name__ for t in LIFECYCLE_EVENTS)


@pytest.fixture(scope="module", params=BACKENDS, ids=str)
def run(
    request: pytest.FixtureRequest,
    brokers: Any,
    clickhouse_servers: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    base: Path = tmp_path_factory.mktemp("analytics")
    with fleet_run(request.param, brokers, clickhouse_servers, base, FLEET) as fleet:
        yield fleet


def test_the_fleet_exercised_the_facts(run: Run) -> None:
    assert run.truth["tool_calls"]["proposed"] > 0
    assert run.of(PolicyDecided) and run.of(DuplicateSuppressed)
    decisions = {e.decision for e in run.of(PolicyDecided).values()}
    assert len(decisions) > 1  # not only allows


def test_one_policy_decision_per_proposed_operation(run: Run) -> None:
    ((rows, operations),) = run.rows(
        "SELECT count(), uniqExact(tenant_id, operation_key) FROM policy_decisions FINAL"
    )
    assert rows == operations == run.truth["tool_calls"]["proposed"]
    # Per (decision, reason_code): what the derived topic holds, one per operation.
    per_operation = {(e.tenant_id, e.operation_key): e for e in run.of(PolicyDecided).values()}
    want = Counter((e.decision, e.reason_code) for e in per_operation.values())
    got = run.rows(
        "SELECT decision, reason_code, count() FROM policy_decisions FINAL"
        " GROUP BY decision, reason_code"
    )
    assert {(d, r): n for d, r, n in got} == dict(want)


def test_tool_calls_equal_the_truth(run: Run) -> None:
    proposed = run.truth["tool_calls"]["proposed"]
    by_status = run.truth["tool_calls"]["by_status"]
    ((proposals, keys, max_attempt),) = run.rows(
        "SELECT count(), uniqExact(tenant_id, operation_key), max(attempt)"
        " FROM tool_proposals FINAL"
    )
    assert proposals == keys == proposed
    assert max_attempt == 1  # the retry collapsed into the original
    completions = run.rows("SELECT status, count() FROM tool_completions FINAL GROUP BY status")
    assert {s: n for s, n in completions} == {s: n for s, n in by_status.items() if n}
    ((calls, completed, orphans),) = run.rows(
        "SELECT count(), countIf(completed), "
        " (SELECT count() FROM tool_completions FINAL WHERE (tenant_id, operation_key)"
        "   NOT IN (SELECT tenant_id, operation_key FROM tool_proposals FINAL))"
        " FROM tool_calls"
    )
    assert (calls, completed, orphans) == (proposed, sum(by_status.values()), 0)


def test_session_transitions_equal_the_truth_and_the_derived_topic(run: Run) -> None:
    runtime = run.rows(
        "SELECT event_type, count(), max(attempt) FROM session_transitions FINAL"
        " WHERE source = 'runtime' AND outcome = 'applied' GROUP BY event_type"
    )
    want = {t: n for t, n in run.truth["events_by_type"].items() if t in LIFECYCLE_TYPES}
    assert {t: n for t, n, _ in runtime} == want
    assert {a for _, _, a in runtime} == {1}  # retried lifecycle events count once
    # The processors' own lifecycle facts and rejections, one per operation.
    facts = run.of((SessionSuspended, SessionQuarantined, InvalidTransitionRejected))
    by_key = {(e.tenant_id, e.session_id, e.idempotency_key): e for e in facts.values()}
    want_derived = Counter(
        (e.attempted, "rejected") if isinstance(e, InvalidTransitionRejected)
        else (e.event_type(), "applied")
        for e in by_key.values()
    )  # fmt: skip
    derived = run.rows(
        "SELECT event_type, outcome, count() FROM session_transitions FINAL"
        " WHERE source = 'processor' GROUP BY event_type, outcome"
    )
    assert {(t, o): n for t, o, n in derived} == dict(want_derived)


def test_budget_admission_and_duplicate_facts_equal_the_derived_topic(run: Run) -> None:
    budget = Counter(e.event_type() for e in run.of((BudgetWarning, BudgetExceeded)).values())
    got = run.rows("SELECT event_type, count() FROM budget_events FINAL GROUP BY event_type")
    assert dict(got) == dict(budget)
    ((admissions,),) = run.rows("SELECT count() FROM admission_decisions FINAL")
    assert admissions == len(run.of(AdmissionDecided))
    duplicates = run.of(DuplicateSuppressed)
    ((rows, ids, lineage),) = run.rows(
        "SELECT count(), uniqExact(event_id), countIf(duplicate_attempt >= original_attempt)"
        " FROM duplicates_suppressed FINAL"
    )
    assert rows == ids == lineage == len(duplicates)


def test_the_archive_holds_the_derived_records(run: Run) -> None:
    topic = Topics(run.settings.topic_prefix).derived
    ((records, ids),) = [
        tuple(row)
        for row in run.ch.query(
            "SELECT count(), uniqExact(event_id) FROM events_archive FINAL"
            " WHERE topic = {t:String}",
            {"t": topic},
        ).rows
    ]
    # One row per record (keyed by topic/partition/offset), one id per event.
    assert records == len(run.records)
    assert ids == len({e.event_id for e in run.derived})
    by_type = dict(
        run.ch.query(
            "SELECT event_type, uniqExact(event_id) FROM events_archive FINAL"
            " WHERE topic = {t:String} GROUP BY event_type",
            {"t": topic},
        ).rows
    )
    assert by_type == dict(
        Counter(type(e).__name__ for e in {e.event_id: e for e in run.derived}.values())
    )


def _decision(operation_key: str) -> PolicyDecided:
    at = datetime(2026, 11, 21, 12, tzinfo=UTC)
    return PolicyDecided(
        event_id=f"txn-{operation_key}", occurred_at=at, tenant_id="t-txn", session_id="s-txn",
        idempotency_key=f"txn-{operation_key}", operation_key=operation_key, tool="http_request",
        action="fetch", decision="allow", reason_code="OK", policy_version="p", rule_id="r",
        evaluation_us=1, key_id="k", signature="00", expires_at=at,
    )  # fmt: skip


async def _send_in_transactions(bootstrap: str, topic: str, signer: RecordSigner) -> None:
    """One committed and one aborted transaction: each leaves a marker in the log.

    Signed as the worker signs: the derived topic takes nothing else.
    """
    codec = Codec(EmbeddedRegistry())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"txn-{topic}")
    await producer.start()
    try:
        for operation_key, commit in (("op-committed", True), ("op-aborted", False)):
            await producer.begin_transaction()
            value = codec.encode(_decision(operation_key))
            headers = [signer.header(b"s-txn", value)]
            await producer.send_and_wait(topic, value, b"s-txn", headers=headers)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


def test_transactional_records_leave_no_phantom_lag(run: Run) -> None:
    # Last in this module: it adds to the derived topic the other tests compare with.
    bootstrap = run.settings.kafka_bootstrap or ""
    topic = Topics(run.settings.topic_prefix).derived
    signer = InputRules.from_settings(run.settings).signer
    asyncio.run(_send_in_transactions(bootstrap, topic, signer))
    # Exactly zero: the sink commits its position, past both markers.
    asyncio.run(wait_for_sink_on_derived(run.settings, bootstrap, timeout=60))
    rows = run.rows("SELECT operation_key FROM policy_decisions FINAL WHERE tenant_id = 't-txn'")
    assert rows == [("op-committed",)]  # read_committed: the aborted one never arrives
    ((archived,),) = run.rows("SELECT count() FROM events_archive FINAL WHERE tenant_id = 't-txn'")
    assert archived == 1


def test_no_planted_email_reaches_clickhouse(run: Run) -> None:
    # The simulator plants "jane.doe@example.com" in some turns' content: every one
    # reaches the archive redacted, none raw.
    leaked = run.rows(
        "SELECT count() FROM events_archive FINAL"
        " WHERE position(payload, 'jane.doe@example.com') > 0"
    )[0][0]
    redacted = run.rows(
        "SELECT count() FROM events_archive FINAL"
        " WHERE event_type = 'TurnCompleted' AND position(payload, '[REDACTED:email]') > 0"
    )[0][0]
    assert leaked == 0
    assert redacted > 0
