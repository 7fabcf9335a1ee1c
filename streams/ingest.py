"""Ingest: a Kafka record becomes a validated event or a dead letter. Pure.

Nothing is dropped silently: a record that cannot be decoded or validated, or
that does not belong where it was written, becomes a RecordDeadLettered
carrying the raw bytes, a reason code, a reason and the source
topic/partition/offset. Its event_id is derived from that position, so a
redelivered bad record yields the same dead letter.

What belongs where (`InputRules`, issue 10):
- producer topics (the tenant log `sessions`, `tenants`) carry producer
  events only, keyed by their tenant (`Topics.key_of`), with occurred_at
  within the configured bounds of the record's log time. A derived type or a
  worker's own record there (a decision, a budget verdict, an admission
  request, a relayed profile) is dead-lettered (`derived_from_producer`)
  unless a worker wrote it and signed it (events/provenance.py);
- internal topics (derived, review) carry worker-signed session events only
  (`unsigned_internal` otherwise);
- anything else decodable but out of place is `wrong_topic`.
Every consumer (the sink, the governor, replay, rebuild, backtest) takes
records through `ingest`, so what one dead-letters no other applies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from events.codec import Codec, DecodeError
from events.evidence import LogRecord
from events.models import (
    DERIVED_EVENTS,
    SESSION_EVENTS,
    WORKER_EVENTS,
    Event,
    RecordDeadLettered,
    SessionEvent,
    TenantProfileUpdated,
)
from events.provenance import RecordSigner
from events.topics import Topics

if TYPE_CHECKING:
    from govstream.settings import Settings

# Dead letters keep the raw bytes, but must themselves fit in a Kafka record.
MAX_DEAD_LETTER_RAW = 512 * 1024
_DEAD_LETTER_NS = uuid.UUID("4a0f4c1e-6a4b-4f0e-9a51-0d6b2f1c9e11")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# A record as the ingest step sees it: where it was, its key, value and headers.
SourceRecord = LogRecord


def source_record(record: Any) -> SourceRecord:
    """A Faust stream event (`stream.events()`) as a SourceRecord, headers included."""
    message = record.message
    headers = message.headers or ()
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000),
        value=message.value,
        key=message.key,
        headers=tuple(headers.items() if isinstance(headers, Mapping) else headers),
    )


@dataclass(frozen=True)
class Ingested:
    source: SourceRecord
    schema_id: int
    event: Event

    @property
    def event_type(self) -> str:
        return type(self.event).__name__


@dataclass(frozen=True)
class Rejected:
    source: SourceRecord
    dead_letter: RecordDeadLettered


@dataclass(frozen=True)
class InputRules:
    """Which records each topic may carry, and from whom (see the module doc)."""

    topics: Topics
    signer: RecordSigner
    max_event_age: timedelta = timedelta(days=30)
    max_event_lead: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> InputRules:
        from govstream.settings import record_signer

        return cls(
            topics=Topics(settings.topic_prefix),
            signer=record_signer(settings),
            max_event_age=timedelta(days=settings.max_event_age_days),
            max_event_lead=timedelta(seconds=settings.max_event_lead_seconds),
        )

    def check(self, source: SourceRecord, event: Any) -> DecodeError | None:
        """None when `event` may be applied as read from `source`, else why not."""
        t = self.topics
        topic = source.topic
        if not isinstance(event, Event):
            return _refuse("wrong_topic", f"{type(event).__name__} is not an event")
        if topic in (t.sessions, t.tenants):
            name = type(event).__name__
            expected = t.key_of(event) if isinstance(event, Event) else ""
            if source.key != expected.encode():
                return _refuse(
                    "key_mismatch",
                    f"record key {_shown(source.key)} is not {expected!r}, the tenant of its "
                    f"{'event' if topic == t.sessions else 'profile'}",
                )
            if topic == t.sessions and isinstance(event, (*DERIVED_EVENTS, *WORKER_EVENTS)):
                # Written into the tenant log by a worker (a relayed profile, an
                # admission request) or a derived fact: honoured only when signed.
                if not self._signed(source):
                    return _refuse(
                        "derived_from_producer",
                        f"{name} is written by govstream workers only; this record carries no "
                        "valid worker signature",
                    )
                return None
            producer_types = SESSION_EVENTS if topic == t.sessions else (TenantProfileUpdated,)
            if not isinstance(event, producer_types):
                return _refuse("wrong_topic", f"{name} does not belong on {topic}")
            return self._bounded(source, event)
        if topic in t.internal():
            if not isinstance(event, SessionEvent):
                return _refuse("wrong_topic", f"{type(event).__name__} does not belong on {topic}")
            if not self._signed(source):
                return _refuse(
                    "unsigned_internal",
                    f"{topic} is written by govstream workers only; this record carries no "
                    "valid worker signature",
                )
            return None
        return _refuse("wrong_topic", f"{topic} is not an input topic of govstream")

    def _signed(self, source: SourceRecord) -> bool:
        return self.signer.signed_by_worker(source.headers, source.key, source.value or b"")

    def _bounded(self, source: SourceRecord, event: Event) -> DecodeError | None:
        logged = _EPOCH + timedelta(milliseconds=source.timestamp_ms)
        if logged - event.occurred_at > self.max_event_age:  # no datetime overflow
            return _refuse(
                "out_of_bounds",
                f"occurred_at {event.occurred_at.isoformat()} is more than "
                f"{_span(self.max_event_age)} before the record's log time {logged.isoformat()}",
            )
        if event.occurred_at - logged > self.max_event_lead:
            return _refuse(
                "out_of_bounds",
                f"occurred_at {event.occurred_at.isoformat()} is more than "
                f"{_span(self.max_event_lead)} after the record's log time {logged.isoformat()}",
            )
        return None


def _refuse(code: str, reason: str) -> DecodeError:
    return DecodeError(code, reason)


def _shown(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    return repr(key[:64].decode("utf-8", "replace"))


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400} days"
    return f"{seconds} s"


def bounded_raw(raw: bytes, reason: str) -> tuple[bytes, str]:
    """A dead letter's raw value, cut to MAX_DEAD_LETTER_RAW (and the reason says so):
    the letter itself must fit in a Kafka record."""
    if len(raw) <= MAX_DEAD_LETTER_RAW:
        return raw, reason
    return raw[:MAX_DEAD_LETTER_RAW], f"{reason} (raw value truncated from {len(raw)} bytes)"


def dead_letter_for(source: SourceRecord, error: DecodeError) -> RecordDeadLettered:
    raw, reason = bounded_raw(source.value or b"", error.reason)
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


def ingest(codec: Codec, source: SourceRecord, rules: InputRules) -> Ingested | Rejected:
    try:
        if not source.value:
            raise DecodeError("bad_framing", "record has no value (tombstone)")
        decoded = codec.decode(source.value)
        refusal = rules.check(source, decoded.event)
        if refusal is not None:
            refusal.schema_id = decoded.schema_id
            raise refusal
        # check() refused anything that is not an Event.
        return Ingested(source, decoded.schema_id, cast(Event, decoded.event))
    except DecodeError as exc:
        return Rejected(source, dead_letter_for(source, exc))
