"""Ingest: a Kafka record becomes a validated event or a dead letter. Pure.

Nothing is dropped silently: a record that cannot be decoded or validated
becomes a RecordDeadLettered carrying the raw bytes, a reason code, a reason
and the source topic/partition/offset. Its event_id is derived from that
position, so a redelivered bad record yields the same dead letter.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from events.codec import Codec, Decoded, DecodeError
from events.models import RecordDeadLettered

# Dead letters keep the raw bytes, but must themselves fit in a Kafka record.
MAX_DEAD_LETTER_RAW = 512 * 1024
_DEAD_LETTER_NS = uuid.UUID("4a0f4c1e-6a4b-4f0e-9a51-0d6b2f1c9e11")


@dataclass(frozen=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Ingested:
    source: SourceRecord
    decoded: Decoded


@dataclass(frozen=True)
class Rejected:
    source: SourceRecord
    dead_letter: RecordDeadLettered


def dead_letter_for(source: SourceRecord, error: DecodeError) -> RecordDeadLettered:
    raw = source.value or b""
    reason = error.reason
    if len(raw) > MAX_DEAD_LETTER_RAW:
        reason = f"{reason} (raw value truncated from {len(raw)} bytes)"
        raw = raw[:MAX_DEAD_LETTER_RAW]
    position = f"{source.topic}/{source.partition}/{source.offset}"
    return RecordDeadLettered(
        event_id=str(uuid.uuid5(_DEAD_LETTER_NS, position)),
        occurred_at=datetime.fromtimestamp(source.timestamp_ms / 1000, tz=UTC),
        reason_code=error.code,
        reason=reason,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        schema_id=error.schema_id,
        raw_key=source.key,
        raw_value=raw,
    )


def ingest(codec: Codec, source: SourceRecord) -> Ingested | Rejected:
    try:
        if source.value is None:
            raise DecodeError("bad_framing", "record has no value (tombstone)")
        return Ingested(source, codec.decode(source.value))
    except DecodeError as exc:
        return Rejected(source, dead_letter_for(source, exc))
