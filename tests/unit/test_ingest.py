"""Ingest and row building: pure, no Kafka, no ClickHouse."""

from __future__ import annotations

from events.codec import Codec
from events.registry import EmbeddedRegistry
from streams.ingest import Ingested, Rejected, SourceRecord, ingest
from streams.rows import TABLE_COLUMNS, build_batch
from tests.factories import session_started, tenant_profile, turn

CODEC = Codec(EmbeddedRegistry(), max_record_bytes=10_000)


def _record(value: bytes | None, offset: int = 7) -> SourceRecord:
    return SourceRecord("gs.sessions", 2, offset, 1_763_800_000_000, b"s-1", value)


def test_valid_record_is_ingested() -> None:
    result = ingest(CODEC, _record(CODEC.encode(turn())))
    assert isinstance(result, Ingested)
    assert result.decoded.event_type == "TurnCompleted"


def test_bad_record_becomes_a_dead_letter_with_its_position_and_bytes() -> None:
    result = ingest(CODEC, _record(b"garbage!"))
    assert isinstance(result, Rejected)
    letter = result.dead_letter
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "gs.sessions", 2, 7,
    )  # fmt: skip
    assert letter.raw_value == b"garbage!"
    assert letter.reason_code == "bad_framing"
    assert letter.raw_key == b"s-1"


def test_dead_letter_ids_are_stable_per_position() -> None:
    first = ingest(CODEC, _record(b"garbage!"))
    again = ingest(CODEC, _record(b"garbage!"))
    other = ingest(CODEC, _record(b"garbage!", offset=8))
    assert isinstance(first, Rejected) and isinstance(again, Rejected)
    assert isinstance(other, Rejected)
    assert first.dead_letter.event_id == again.dead_letter.event_id
    assert first.dead_letter.event_id != other.dead_letter.event_id


def test_tombstone_is_dead_lettered() -> None:
    result = ingest(CODEC, _record(None))
    assert isinstance(result, Rejected)


def test_dead_letters_round_trip_through_the_codec() -> None:
    result = ingest(CODEC, _record(b"\x00\x00\x0f\x42\x40zz"))
    assert isinstance(result, Rejected)
    assert result.dead_letter.reason_code == "unknown_schema"
    assert CODEC.decode(CODEC.encode(result.dead_letter)).event == result.dead_letter


def test_batch_routes_rows_to_tables() -> None:
    items = [
        ingest(CODEC, _record(CODEC.encode(session_started()), 1)),
        ingest(CODEC, _record(CODEC.encode(turn(input_tokens=5)), 2)),
        ingest(CODEC, _record(CODEC.encode(tenant_profile()), 3)),
        ingest(CODEC, _record(b"bad", 4)),
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
