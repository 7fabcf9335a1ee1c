"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.

`Codec.encode` turns a validated event into bytes; `Codec.decode` turns bytes
back into a validated event or raises DecodeError with a reason code, which the
ingest step turns into a dead letter. Decoding resolves the writer's schema
(by id) against the newest local schema of the same record, so old and new
producers can share a topic while schemas evolve compatibly.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import fastavro
from pydantic import BaseModel, ValidationError

from events.avro import schema_for
from events.models import CATALOG
from events.registry import RegisteredSchema, SchemaNotFound, SchemaRegistry, subject_for

MAGIC = 0
HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """A record that cannot become an event; `code` is stable for dashboards."""

    def __init__(self, code: str, reason: str, schema_id: int | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.schema_id = schema_id


@dataclass(frozen=True)
class Decoded:
    schema_id: int
    event: BaseModel

    @property
    def event_type(self) -> str:
        return type(self.event).__name__


def _validation_summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class Codec:
    """Encodes and decodes events against one schema registry; caches per id."""

    def __init__(self, registry: SchemaRegistry, *, max_record_bytes: int = 1_048_576) -> None:
        self.registry = registry
        self.max_record_bytes = max_record_bytes
        # event type -> (schema id, parsed schema) used for writing
        self._writers: dict[str, tuple[int, Any]] = {}
        # writer schema id -> (model, parsed writer schema, parsed reader schema or None)
        self._readers: dict[int, tuple[type[BaseModel], Any, Any]] = {}

    # -- encoding -------------------------------------------------------------

    def _writer(self, event_type: str) -> tuple[int, Any]:
        writer = self._writers.get(event_type)
        if writer is None:
            schema = schema_for(CATALOG[event_type])
            schema_id = self.registry.id_for(subject_for(event_type), schema)
            writer = (schema_id, fastavro.parse_schema(schema))
            self._writers[event_type] = writer
        return writer

    def encode(self, event: BaseModel) -> bytes:
        schema_id, parsed = self._writer(type(event).__name__)
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC, schema_id))
        fastavro.schemaless_writer(buf, parsed, event.model_dump())
        return buf.getvalue()

    def schema_id_of(self, event_type: str) -> int:
        return self._writer(event_type)[0]

    # -- decoding -------------------------------------------------------------

    def _reader(self, schema_id: int) -> tuple[type[BaseModel], Any, Any]:
        reader = self._readers.get(schema_id)
        if reader is not None:
            return reader
        try:
            registered: RegisteredSchema = self.registry.by_id(schema_id)
        except SchemaNotFound as exc:
            raise DecodeError("unknown_schema", str(exc), schema_id) from None
        model = CATALOG.get(registered.record_name)
        if model is None:
            raise DecodeError(
                "unknown_event_type",
                f"schema id {schema_id} is {registered.subject}, not an event type of this catalog",
                schema_id,
            )
        writer = registered.parsed
        local = schema_for(model)
        # Same schema on both sides needs no resolution (the fast path).
        reader_schema = None if local == registered.schema else fastavro.parse_schema(local)
        reader = (model, writer, reader_schema)
        self._readers[schema_id] = reader
        return reader

    def decode_raw(self, data: bytes) -> tuple[int, type[BaseModel], dict[str, Any]]:
        """Bytes -> (schema id, model, record dict) without model validation."""
        if data is None or len(data) < HEADER.size:
            raise DecodeError("bad_framing", f"record of {len(data or b'')} bytes has no header")
        if len(data) > self.max_record_bytes:
            raise DecodeError(
                "oversized", f"record of {len(data)} bytes exceeds {self.max_record_bytes}"
            )
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError("bad_framing", f"magic byte {magic} is not 0 (Confluent framing)")
        model, writer, reader = self._reader(schema_id)
        buf = io.BytesIO(data)
        buf.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises many types on garbage input
            raise DecodeError(
                "malformed_avro", f"{type(exc).__name__}: {exc}"[:300], schema_id
            ) from None
        if buf.tell() != len(data):
            raise DecodeError(
                "malformed_avro",
                f"{len(data) - buf.tell()} trailing bytes after the record",
                schema_id,
            )
        return schema_id, model, record

    def decode(self, data: bytes) -> Decoded:
        schema_id, model, record = self.decode_raw(data)
        try:
            event = model.model_validate(record)
        except ValidationError as exc:
            raise DecodeError("invalid_event", _validation_summary(exc), schema_id) from None
        return Decoded(schema_id, event)
