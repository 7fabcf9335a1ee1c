"""Evidence export: a session's log records as a self-contained, hash-chained Avro file.

`write_export` writes an Avro Object Container File whose records are
`govstream.evidence.Entry`: one per Kafka record, in log order, keeping the
exact framed value bytes (Confluent header + Avro body) next to where they were
read (topic, partition, offset, timestamp). Each entry carries a hash chain:

    hash = sha256(prev_hash || canonical bytes of the entry's fields)

with `prev_hash` of the first entry being the genesis value derived from the
session id. The container's metadata holds the manifest (session id, creation
time, record count, first and last hash, algorithm, genesis, a digest of the
embedded schemas) and the writer schema of every event type present, by schema
id, so the file decodes without a schema registry.

The manifest text is signed (HMAC-SHA256, `govstream.manifest.signature` in
the metadata) with a key derived from the deployment's policy signing key, in
a domain of its own: a chain recomputed over edited records (the whole file
rewritten) no longer matches a signature only the key holder can make.

`verify_export` recomputes the chain and compares it with the manifest, then,
given the keys, checks the manifest's signature; it reports `ok` or the first
problem (changed, dropped or reordered record, edited manifest or schemas, an
unsigned or wrongly signed manifest, unreadable file) in one line that names
the seq and Kafka position. It never raises on a bad file.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import fastavro

from events.codec import HEADER, MAGIC, Codec, DecodeError

FORMAT = "govstream.evidence.v1"
HASH_ALGORITHM = "sha256"
MANIFEST_KEY = "govstream.manifest"
SCHEMAS_KEY = "govstream.schemas"
SIGNATURE_KEY = "govstream.manifest.signature"
_MANIFEST_KEY_DOMAIN = b"govstream.evidence-manifest-key.v1"

ENTRY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Entry",
    "namespace": "govstream.evidence",
    "doc": "One Kafka record of a session, hash-chained to the one before it.",
    "fields": [
        {"name": "seq", "type": "long"},
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "schema_id", "type": "int"},
        {"name": "event_type", "type": "string"},
        {"name": "value", "type": "bytes", "doc": "the exact framed bytes of the log"},
        {"name": "prev_hash", "type": "string"},
        {"name": "hash", "type": "string"},
    ],
}
_PARSED_ENTRY = fastavro.parse_schema(ENTRY_SCHEMA)
_LEN = struct.Struct(">Q")


class ExportError(ValueError):
    """A record that cannot go into an export (not a decodable event)."""


class LogRecord(NamedTuple):
    """One Kafka record as read from the log: raw value bytes and where they were.

    A NamedTuple: a rebuild makes one per record of the log, and a frozen
    dataclass costs about five times as much to construct.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None  # None: a tombstone
    key: bytes | None = None  # not part of an export: its events carry their ids
    # (name, value) pairs; not part of an export. The worker's record signature
    # (events/provenance.py) travels here.
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of `verify_export`: ok, or the first problem found, in one line."""

    ok: bool
    message: str
    problem: str | None = None  # stable code: changed, dropped, reordered, chain, manifest, ...
    seq: int | None = None
    offset: int | None = None
    records: int = 0
    session_id: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ManifestKeys:
    """Signs export manifests with `key_id`; accepts a signature by any of `keys`."""

    key_id: str
    keys: Mapping[str, bytes]

    @classmethod
    def from_policy_key(cls, key_id: str, policy_signing_key: bytes | str) -> ManifestKeys:
        secret = (
            policy_signing_key.encode()
            if isinstance(policy_signing_key, str)
            else policy_signing_key
        )
        derived = hmac.new(secret, _MANIFEST_KEY_DOMAIN, hashlib.sha256).digest()
        return cls(key_id, {key_id: derived})

    def sign(self, manifest_text: str) -> str:
        digest = hmac.new(self.keys[self.key_id], manifest_text.encode(), hashlib.sha256)
        return f"{self.key_id}:{digest.hexdigest()}"

    def verifies(self, manifest_text: str, signature: str) -> bool:
        key_id, sep, hexdigest = signature.partition(":")
        secret = self.keys.get(key_id)
        if not sep or secret is None:
            return False
        expected = hmac.new(secret, manifest_text.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, hexdigest)


def genesis_for(session_id: str) -> str:
    """The chain's starting `prev_hash`: binds the chain to its session id."""
    return hashlib.sha256(f"{FORMAT}\x00{session_id}".encode()).hexdigest()


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def canonical_bytes(entry: dict[str, Any]) -> bytes:
    """Unambiguous bytes of an entry's fields (each length-prefixed), minus the hashes."""
    parts = [
        FORMAT,
        str(entry["seq"]),
        entry["topic"],
        str(entry["partition"]),
        str(entry["offset"]),
        str(entry["timestamp_ms"]),
        str(entry["schema_id"]),
        entry["event_type"],
    ]
    return b"".join(_field(p.encode()) for p in parts) + _field(bytes(entry["value"]))


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_bytes(entry)).hexdigest()


def _schemas_text(schemas: dict[str, str]) -> str:
    return json.dumps(schemas, sort_keys=True, separators=(",", ":"))


def _schema_id_of(value: bytes) -> int | None:
    if len(value) < HEADER.size:
        return None
    magic, schema_id = HEADER.unpack_from(value)
    return schema_id if magic == MAGIC else None


# -- writing ------------------------------------------------------------------


def build_entries(
    session_id: str, records: Iterable[LogRecord], codec: Codec
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Records -> chained entries and the writer schemas they need (id -> JSON text)."""
    entries: list[dict[str, Any]] = []
    schemas: dict[str, str] = {}
    prev = genesis_for(session_id)
    for seq, rec in enumerate(records):
        try:
            schema_id, model, _ = codec.decode_raw(rec.value)
        except DecodeError as exc:
            raise ExportError(f"seq {seq} ({rec.position}): {exc}") from None
        if str(schema_id) not in schemas:
            schema = codec.registry.by_id(schema_id).schema
            schemas[str(schema_id)] = json.dumps(schema, sort_keys=True)
        entry: dict[str, Any] = {
            "seq": seq,
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "timestamp_ms": rec.timestamp_ms,
            "schema_id": schema_id,
            "event_type": model.__name__,
            "value": bytes(rec.value),
            "prev_hash": prev,
        }
        entry["hash"] = prev = entry_hash(prev, entry)
        entries.append(entry)
    return entries, schemas


def write_export(
    path: str | Path,
    session_id: str,
    records: Iterable[LogRecord],
    codec: Codec,
    *,
    keys: ManifestKeys | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """Write the evidence file for one session, its manifest signed with `keys` (the
    CLI always signs); returns the manifest written."""
    entries, schemas = build_entries(session_id, records, codec)
    schemas_text = _schemas_text(schemas)
    manifest = {
        "format": FORMAT,
        "session_id": session_id,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "record_count": len(entries),
        "first_hash": entries[0]["hash"] if entries else None,
        "last_hash": entries[-1]["hash"] if entries else None,
        "hash_algorithm": HASH_ALGORITHM,
        "hash_input": "prev_hash || length-prefixed(format, seq, topic, partition, offset, "
        "timestamp_ms, schema_id, event_type, value)",
        "genesis": genesis_for(session_id),
        "schemas_sha256": hashlib.sha256(schemas_text.encode()).hexdigest(),
    }
    manifest_text = json.dumps(manifest, sort_keys=True)
    metadata = {MANIFEST_KEY: manifest_text, SCHEMAS_KEY: schemas_text}
    if keys is not None:
        metadata[SIGNATURE_KEY] = keys.sign(manifest_text)
    with Path(path).open("wb") as fo:
        fastavro.writer(fo, _PARSED_ENTRY, entries, codec="null", metadata=metadata)
    return manifest


# -- reading ------------------------------------------------------------------


def read_export(path: str | Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(container metadata, entries) as stored; raises on an unreadable file."""
    with Path(path).open("rb") as fo:
        reader = fastavro.reader(fo)
        metadata = dict(reader.metadata)
        entries = list(reader)
    return metadata, entries  # type: ignore[return-value]


def decode_value(value: bytes, schemas: dict[str, str], _cache: dict[str, Any]) -> dict[str, Any]:
    """Decode a framed value with the embedded writer schema; no registry involved."""
    schema_id = _schema_id_of(value)
    if schema_id is None:
        raise ValueError("not Confluent-framed")
    key = str(schema_id)
    if key not in schemas:
        raise ValueError(f"schema id {schema_id} is not embedded")
    if key not in _cache:
        _cache[key] = fastavro.parse_schema(json.loads(schemas[key]))
    buf = io.BytesIO(value)
    buf.seek(HEADER.size)
    record = fastavro.schemaless_reader(buf, _cache[key], None)
    if buf.tell() != len(value):
        raise ValueError(f"{len(value) - buf.tell()} trailing bytes")
    return record  # type: ignore[return-value]


def iter_events(path: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(entry, decoded event record) for each entry, using only the embedded schemas."""
    metadata, entries = read_export(path)
    schemas = json.loads(metadata[SCHEMAS_KEY])
    cache: dict[str, Any] = {}
    for entry in entries:
        yield entry, decode_value(entry["value"], schemas, cache)


# -- verifying ----------------------------------------------------------------


def _fail(problem: str, message: str, **kw: Any) -> VerifyReport:
    return VerifyReport(False, f"FAIL {problem}: {message}", problem, **kw)


def _where(entry: dict[str, Any]) -> str:
    return f"seq {entry['seq']} ({entry['topic']}[{entry['partition']}]@{entry['offset']})"


def verify_export(path: str | Path, keys: ManifestKeys | None = None) -> VerifyReport:
    """Recompute the chain and check it against the manifest; with `keys`, check the
    manifest's signature too (an unsigned manifest fails). Never raises."""
    try:
        return _verify(path, keys)
    except Exception as exc:  # a last guard: a verdict, never a traceback
        return _fail("unreadable", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def _read_entries(path: str | Path) -> tuple[dict[str, str], list[dict[str, Any]]] | VerifyReport:
    entries: list[dict[str, Any]] = []
    try:
        with Path(path).open("rb") as fo:
            reader = fastavro.reader(fo)
            metadata = dict(reader.metadata)
            for entry in reader:
                entries.append(entry)  # type: ignore[arg-type]
    except Exception as exc:
        where = (
            f"after seq {entries[-1]['seq']} (entry {len(entries)})"
            if entries
            else "before the first entry"
        )
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return _fail("unreadable", f"Avro read failed {where}: {detail}", records=len(entries))
    return metadata, entries  # type: ignore[return-value]


def _verify(path: str | Path, keys: ManifestKeys | None) -> VerifyReport:
    read = _read_entries(path)
    if isinstance(read, VerifyReport):
        return read
    metadata, entries = read
    n = len(entries)

    try:
        manifest = json.loads(metadata[MANIFEST_KEY])
        schemas_text = metadata[SCHEMAS_KEY]
        schemas = json.loads(schemas_text)
        session_id = manifest["session_id"]
        genesis = manifest["genesis"]
        expected_count = manifest["record_count"]
    except (KeyError, TypeError, ValueError) as exc:
        return _fail("manifest", f"manifest or schemas missing or not JSON ({exc})", records=n)
    ctx: dict[str, Any] = {"records": n, "session_id": session_id}

    if manifest.get("format") != FORMAT or manifest.get("hash_algorithm") != HASH_ALGORITHM:
        return _fail("manifest", "unknown format or hash algorithm", **ctx)
    if genesis != genesis_for(session_id):
        return _fail("manifest", f"genesis does not belong to session {session_id!r}", **ctx)
    digest = hashlib.sha256(schemas_text.encode()).hexdigest()
    if manifest.get("schemas_sha256") != digest:
        return _fail("schemas", "embedded schemas differ from the manifest's digest", **ctx)

    # Order: entry at position i must be seq i; say whether a missing seq moved or vanished.
    position_of = {e["seq"]: i for i, e in enumerate(entries)}
    for i, entry in enumerate(entries):
        if entry["seq"] == i:
            continue
        at = {"seq": i, "offset": entry["offset"], **ctx}
        if i in position_of:
            return _fail(
                "reordered",
                f"position {i} holds {_where(entry)}; seq {i} is at position {position_of[i]}",
                **at,
            )
        return _fail("dropped", f"seq {i} is missing; position {i} holds {_where(entry)}", **at)

    prev = genesis
    cache: dict[str, Any] = {}
    for entry in entries:
        at = {"seq": entry["seq"], "offset": entry["offset"], **ctx}
        if entry["prev_hash"] != prev:
            return _fail(
                "chain", f"{_where(entry)}: prev_hash is not the hash of the entry before", **at
            )
        if entry_hash(prev, entry) != entry["hash"]:
            return _fail("changed", f"{_where(entry)}: hash mismatch, the record changed", **at)
        if _schema_id_of(entry["value"]) != entry["schema_id"]:
            return _fail("changed", f"{_where(entry)}: value header disagrees with schema_id", **at)
        try:
            decode_value(entry["value"], schemas, cache)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return _fail("undecodable", f"{_where(entry)}: embedded schema: {detail}", **at)
        name = json.loads(schemas[str(entry["schema_id"])]).get("name")
        if name != entry["event_type"]:
            return _fail("schemas", f"{_where(entry)}: schema is {name}, not the event type", **at)
        prev = entry["hash"]

    if n != expected_count:
        return _fail(
            "dropped" if n < expected_count else "manifest",
            f"manifest says {expected_count} records, file has {n}"
            + (f" (missing after seq {n - 1})" if 0 < n < expected_count else ""),
            seq=n,
            **ctx,
        )
    first = entries[0]["hash"] if entries else None
    last = entries[-1]["hash"] if entries else None
    if manifest.get("first_hash") != first:
        return _fail("manifest", "first_hash differs from seq 0's hash", seq=0, **ctx)
    if manifest.get("last_hash") != last:
        return _fail("manifest", f"last_hash differs from seq {n - 1}'s hash", seq=n - 1, **ctx)
    signed = ""
    if keys is not None:
        signature = metadata.get(SIGNATURE_KEY)
        if not signature:
            return _fail("signature", "the manifest is not signed", **ctx)
        if not keys.verifies(metadata[MANIFEST_KEY], signature):
            key_id = signature.partition(":")[0]
            return _fail(
                "signature",
                f"the manifest's signature (key {key_id!r}) does not verify: the file was "
                "rewritten, or signed with a key this deployment does not hold",
                **ctx,
            )
        signed = f", manifest signed by key {signature.partition(':')[0]}"
    return VerifyReport(
        True, f"OK: {n} records of session {session_id}, chain ends {last}{signed}", None, **ctx
    )
