"""Codec: Confluent framing, round trips, and every way a record can be bad."""

from __future__ import annotations

import struct

import fastavro
import pytest

from events.avro import schema_for
from events.codec import HEADER, Codec, DecodeError
from events.models import CATALOG, TurnCompleted
from events.registry import EmbeddedRegistry
from tests.factories import session_started, tenant_profile, turn


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry(), max_record_bytes=4096)


def test_framing_is_magic_zero_then_big_endian_schema_id(codec: Codec) -> None:
    data = codec.encode(turn())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == EmbeddedRegistry().latest("govstream.events.TurnCompleted").schema_id


@pytest.mark.parametrize("event", [turn(), session_started(), tenant_profile()])
def test_round_trip_preserves_every_field(codec: Codec, event: object) -> None:
    decoded = codec.decode(codec.encode(event))  # type: ignore[arg-type]
    assert decoded.event == event
    assert decoded.event_type == type(event).__name__


def test_body_is_plain_avro_readable_by_any_avro_library(codec: Codec) -> None:
    import io

    event = turn(input_tokens=77)
    data = codec.encode(event)
    record = fastavro.schemaless_reader(
        io.BytesIO(data[HEADER.size :]), fastavro.parse_schema(schema_for(TurnCompleted))
    )
    assert record["input_tokens"] == 77
    assert record["occurred_at"] == event.occurred_at


def _code(codec: Codec, data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    return info.value.code


def test_not_avro_is_bad_framing(codec: Codec) -> None:
    assert _code(codec, b"this is not avro at all") == "bad_framing"


def test_too_short_is_bad_framing(codec: Codec) -> None:
    assert _code(codec, b"\x00\x00") == "bad_framing"


def test_unknown_schema_id(codec: Codec) -> None:
    assert _code(codec, HEADER.pack(0, 999_999) + b"\x02ab") == "unknown_schema"


def test_truncated_body_is_malformed(codec: Codec) -> None:
    data = codec.encode(turn())
    assert _code(codec, data[: len(data) // 2]) == "malformed_avro"


def test_trailing_garbage_is_malformed(codec: Codec) -> None:
    assert _code(codec, codec.encode(turn()) + b"\x00\x01") == "malformed_avro"


def test_oversized_record(codec: Codec) -> None:
    big = turn(content="x" * 5000)
    assert _code(codec, Codec(EmbeddedRegistry()).encode(big)) == "oversized"


def test_schema_valid_but_model_invalid_is_invalid_event(codec: Codec) -> None:
    import io

    record = turn().model_dump()
    record["input_tokens"] = -5  # Avro long accepts it; the model does not
    buf = io.BytesIO()
    buf.write(HEADER.pack(0, codec.schema_id_of("TurnCompleted")))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema_for(TurnCompleted)), record)
    with pytest.raises(DecodeError) as info:
        codec.decode(buf.getvalue())
    assert info.value.code == "invalid_event"
    assert "input_tokens" in info.value.reason


def test_every_catalog_type_has_a_registered_schema(codec: Codec) -> None:
    for name in CATALOG:
        assert codec.schema_id_of(name) > 0
