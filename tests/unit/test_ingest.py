"""Ingest and row building: pure, no Kafka, no ClickHouse."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from events.codec import Codec
from events.models import DERIVED_EVENTS, SESSION_EVENTS, WORKER_EVENTS, TurnCompleted
from events.provenance import RecordSigner
from events.registry import EmbeddedRegistry
from streams.ingest import Ingested, InputRules, Rejected, SourceRecord, ingest
from streams.rows import TABLE_COLUMNS, build_batch
from tests.factories import (
    RULES,
    SIGNER,
    T0,
    T0_MS,
    TOPICS,
    sample_events,
    session_started,
    source,
    tenant_profile,
    turn,
)

CODEC = Codec(EmbeddedRegistry(), max_record_bytes=10_000)


def _record(value: bytes | None, offset: int = 7) -> SourceRecord:
    return source(value, offset=offset)


def ingest_(codec: Codec, record: SourceRecord) -> Ingested | Rejected:
    return ingest(codec, record, RULES)


def test_valid_record_is_ingested() -> None:
    result = ingest_(CODEC, _record(CODEC.encode(turn())))
    assert isinstance(result, Ingested)
    assert result.event_type == "TurnCompleted"


def test_bad_record_becomes_a_dead_letter_with_its_position_and_bytes() -> None:
    result = ingest_(CODEC, _record(b"garbage!"))
    assert isinstance(result, Rejected)
    letter = result.dead_letter
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "gs.sessions", 2, 7,
    )  # fmt: skip
    assert letter.raw_value == b"garbage!"
    assert letter.reason_code == "bad_framing"
    assert letter.raw_key == b"t-001"


def test_dead_letter_ids_are_stable_per_position() -> None:
    first = ingest_(CODEC, _record(b"garbage!"))
    again = ingest_(CODEC, _record(b"garbage!"))
    other = ingest_(CODEC, _record(b"garbage!", offset=8))
    assert isinstance(first, Rejected) and isinstance(again, Rejected)
    assert isinstance(other, Rejected)
    assert first.dead_letter.event_id == again.dead_letter.event_id
    assert first.dead_letter.event_id != other.dead_letter.event_id


def test_tombstone_is_dead_lettered() -> None:
    result = ingest_(CODEC, _record(None))
    assert isinstance(result, Rejected)


def test_dead_letters_round_trip_through_the_codec() -> None:
    result = ingest_(CODEC, _record(b"\x00\x00\x0f\x42\x40zz"))
    assert isinstance(result, Rejected)
    assert result.dead_letter.reason_code == "unknown_schema"
    assert CODEC.decode(CODEC.encode(result.dead_letter)).event == result.dead_letter


def test_batch_routes_rows_to_tables() -> None:
    profile = CODEC.encode(tenant_profile())
    items = [
        ingest_(CODEC, _record(CODEC.encode(session_started()), 1)),
        ingest_(CODEC, _record(CODEC.encode(turn(input_tokens=5)), 2)),
        ingest_(CODEC, source(profile, topic=TOPICS.tenants, offset=3, key=b"t-001")),
        ingest_(CODEC, _record(b"bad", 4)),
    ]
    batch = build_batch(items)
    assert {t: len(r) for t, r in batch.rows.items() if r} == {
        "events_archive": 3, "sessions": 1, "session_transitions": 1, "turns": 1,
        "dead_letters": 1,
    }  # fmt: skip
    for table, rows in batch.rows.items():
        assert all(len(row) == len(TABLE_COLUMNS[table]) for row in rows)
    turn_row = dict(zip(TABLE_COLUMNS["turns"], batch.rows["turns"][0], strict=True))
    assert turn_row["input_tokens"] == 5
    archive_offsets = [row[2] for row in batch.rows["events_archive"]]
    assert archive_offsets == [1, 2, 3]
    # ClickHouse keeps no raw bytes of a dead letter: a preview, a hash, the size.
    letter = dict(zip(TABLE_COLUMNS["dead_letters"], batch.rows["dead_letters"][0], strict=True))
    assert (letter["raw_preview"], letter["raw_bytes"]) == ("bad", 3)
    assert letter["raw_sha256"] == hashlib.sha256(b"bad").hexdigest()


# --- what belongs where (issue 10): forged, misplaced, mis-keyed, out of bounds ----------

PRODUCER_TYPES = {m.__name__ for m in SESSION_EVENTS}


def _expected(topic: str, name: str, signed: bool) -> str | None:
    """The reason code a record of type `name` on `topic` must get (None = applied)."""
    if name == "RecordDeadLettered":
        return "wrong_topic"
    worker = name in {m.__name__ for m in (*DERIVED_EVENTS, *WORKER_EVENTS)}
    if topic == TOPICS.sessions:
        if worker:  # decisions, verdicts, admission requests, relayed profiles
            return None if signed else "derived_from_producer"
        return None if name in PRODUCER_TYPES else "wrong_topic"
    if topic == TOPICS.tenants:
        return None if name == "TenantProfileUpdated" else "wrong_topic"
    if name == "TenantProfileUpdated":
        return "wrong_topic"
    return None if signed else "unsigned_internal"


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("topic", [TOPICS.sessions, TOPICS.tenants, *TOPICS.internal()])
def test_every_schema_on_every_input_topic(topic: str, signed: bool) -> None:
    outcomes = {}
    for name, event in sample_events().items():
        result = ingest_(CODEC, source(CODEC.encode(event), topic=topic, signed=signed))
        outcomes[name] = None if isinstance(result, Ingested) else result.dead_letter.reason_code
    assert outcomes == {name: _expected(topic, name, signed) for name in outcomes}


def test_a_forged_worker_signature_is_refused() -> None:
    decided = CODEC.encode(sample_events()["BudgetExceeded"])
    zeros = (("govstream-signature", b"test-1:" + b"0" * 64),)
    other = RecordSigner.from_policy_key("test-1", b"an-attacker-guessed-this-key")
    for headers in (zeros, (other.header(b"t-001", decided),), (("govstream-signature", b"x"),)):
        record = SourceRecord(TOPICS.sessions, 0, 1, T0_MS, decided, b"t-001", headers)
        result = ingest_(CODEC, record)
        assert isinstance(result, Rejected)
        assert result.dead_letter.reason_code == "derived_from_producer"
    # The genuine signature covers key and value: moved to another key, it fails.
    moved = SourceRecord(TOPICS.sessions, 0, 1, T0_MS, decided, b"t-002",
                         (SIGNER.header(b"t-001", decided),))  # fmt: skip
    assert isinstance(ingest_(CODEC, moved), Rejected)


def test_a_record_keyed_for_another_session_or_tenant_is_refused() -> None:
    result = ingest_(CODEC, source(CODEC.encode(turn()), key=b"t-victim"))
    assert isinstance(result, Rejected)
    assert result.dead_letter.reason_code == "key_mismatch"
    profile = CODEC.encode(tenant_profile())
    result = ingest_(CODEC, source(profile, topic=TOPICS.tenants, key=b"t-victim"))
    assert isinstance(result, Rejected) and result.dead_letter.reason_code == "key_mismatch"


@pytest.mark.parametrize(
    ("occurred_at", "accepted"),
    [
        (T0, True),
        (T0 - timedelta(days=36_499), True),
        (T0 + timedelta(minutes=5), True),
        (T0 + timedelta(minutes=5, seconds=1), False),
        (datetime(9999, 12, 31, tzinfo=UTC), False),
        (datetime(1, 1, 1, tzinfo=UTC), False),
    ],
)
def test_times_are_bounded_around_the_log_time(occurred_at: datetime, accepted: bool) -> None:
    result = ingest_(CODEC, _record(CODEC.encode(turn(occurred_at=occurred_at))))
    assert isinstance(result, Ingested) is accepted
    if not accepted:
        assert isinstance(result, Rejected)
        assert result.dead_letter.reason_code == "out_of_bounds"
        assert "log time" in result.dead_letter.reason


def test_the_age_bound_is_configurable() -> None:
    rules = InputRules(TOPICS, SIGNER, max_event_age=timedelta(days=1))
    old = CODEC.encode(turn(occurred_at=T0 - timedelta(days=2)))
    result = ingest(CODEC, _record(old), rules)
    assert isinstance(result, Rejected) and result.dead_letter.reason_code == "out_of_bounds"


@pytest.mark.parametrize(
    "field",
    [
        {"content": "x" * 100_000},
        {"correlation_id": "c" * 100_000},
        {"workflow_id": "w" * 100_000},
        {"producer": "p" * 100_000},
        {"session_id": "../../etc/passwd"},
        {"tenant_id": "t/../victim"},
        {"environment": "prod\nuction"},
    ],
)
def test_oversized_or_odd_fields_are_dead_lettered(field: dict[str, str]) -> None:
    record = turn().model_dump()
    record.update(field)
    model = TurnCompleted.model_construct(**record)  # encodes what a careless producer sends
    codec = Codec(EmbeddedRegistry())  # records up to 1 MiB: the bound is the field's
    value = codec.encode(model)
    key = record["tenant_id"].encode()
    result = ingest(codec, source(value, key=key), RULES)
    assert isinstance(result, Rejected)
    assert result.dead_letter.reason_code == "invalid_event"
    assert next(iter(field)) in result.dead_letter.reason
