"""Evidence export: self-contained Avro file, hash chain, and tamper detection."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import fastavro
import pytest

from events.codec import Codec
from events.evidence import (
    MANIFEST_KEY,
    SCHEMAS_KEY,
    ExportError,
    LogRecord,
    ManifestKeys,
    entry_hash,
    iter_events,
    read_export,
    verify_export,
    write_export,
)
from events.models import CATALOG
from events.registry import EmbeddedRegistry
from tests.factories import session_started, turn

CREATED = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(EmbeddedRegistry())


@pytest.fixture(scope="module")
def events() -> list[Any]:
    return [session_started()] + [turn(input_tokens=100 + i) for i in range(5)]


@pytest.fixture(scope="module")
def records(codec: Codec, events: list[Any]) -> list[LogRecord]:
    return [
        LogRecord("govstream.sessions", 0, 40 + i, 1_795_000_000_000 + i, codec.encode(e))
        for i, e in enumerate(events)
    ]


@pytest.fixture
def export(tmp_path: Path, records: list[LogRecord], codec: Codec) -> Path:
    path = tmp_path / "s-1.avro"
    write_export(path, "s-1", records, codec, created_at=CREATED)
    return path


def _rewrite(
    path: Path,
    entries: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] = lambda e: e,
    manifest: Callable[[dict[str, Any]], None] = lambda m: None,
) -> None:
    """Rewrite the export with tampered entries/manifest (stored hashes kept)."""
    metadata, stored = read_export(path)
    meta = {k: v for k, v in metadata.items() if not k.startswith("avro.")}
    man = json.loads(meta[MANIFEST_KEY])
    manifest(man)
    meta[MANIFEST_KEY] = json.dumps(man)
    with path.open("rb") as fo:
        schema = fastavro.reader(fo).writer_schema
    with path.open("wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(schema), entries(stored), metadata=meta)


def test_export_verifies_and_manifest_describes_the_chain(
    export: Path, records: list[LogRecord]
) -> None:
    report = verify_export(export)
    assert report.ok, report.message
    assert report.records == len(records)
    assert report.message.startswith("OK: 6 records of session s-1")
    metadata, entries = read_export(export)
    manifest = json.loads(metadata[MANIFEST_KEY])
    assert manifest["record_count"] == 6
    assert manifest["first_hash"] == entries[0]["hash"]
    assert manifest["last_hash"] == entries[-1]["hash"]
    assert manifest["hash_algorithm"] == "sha256"
    assert entries[0]["prev_hash"] == manifest["genesis"]
    assert all(b["prev_hash"] == a["hash"] for a, b in pairwise(entries))
    # the exact log bytes and positions are preserved
    assert [e["value"] for e in entries] == [r.value for r in records]
    assert [e["offset"] for e in entries] == [r.offset for r in records]
    assert {e["event_type"] for e in entries} == {"SessionStarted", "TurnCompleted"}
    assert set(json.loads(metadata[SCHEMAS_KEY])) == {str(e["schema_id"]) for e in entries}


def test_export_decodes_without_a_registry(export: Path, events: list[Any]) -> None:
    decoded = [
        CATALOG[entry["event_type"]].model_validate(rec) for entry, rec in iter_events(export)
    ]
    assert decoded == events


def test_empty_session_exports_and_verifies(tmp_path: Path, codec: Codec) -> None:
    path = tmp_path / "empty.avro"
    write_export(path, "s-0", [], codec)
    assert verify_export(path).ok


def test_undecodable_record_is_refused(tmp_path: Path, codec: Codec) -> None:
    bad = LogRecord("t", 0, 7, 0, b"\x01garbage")
    with pytest.raises(ExportError, match=r"seq 0 \(t\[0\]@7\)"):
        write_export(tmp_path / "x.avro", "s-1", [bad], codec)


def _flip_value_byte(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One byte of seq 3's value changes; it still decodes (model "gpt-4o-mine")."""
    value = entries[3]["value"]
    assert value.count(b"gpt-4o-mini") == 1
    entries[3]["value"] = value.replace(b"gpt-4o-mini", b"gpt-4o-mine")
    return entries


def test_changed_byte_in_a_record_is_found_at_its_seq(export: Path) -> None:
    _rewrite(export, _flip_value_byte)
    report = verify_export(export)
    assert not report.ok
    assert (report.problem, report.seq, report.offset) == ("changed", 3, 43)
    assert "seq 3 (govstream.sessions[0]@43)" in report.message


def test_changed_record_with_recomputed_hash_breaks_the_chain(export: Path) -> None:
    def forge(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries = _flip_value_byte(entries)
        entries[3]["hash"] = entry_hash(entries[3]["prev_hash"], entries[3])
        return entries

    _rewrite(export, forge)
    report = verify_export(export)
    assert (report.ok, report.problem, report.seq) == (False, "chain", 4)


def test_dropped_record_is_named(export: Path) -> None:
    _rewrite(export, lambda e: e[:2] + e[3:])
    report = verify_export(export)
    assert (report.ok, report.problem, report.seq) == (False, "dropped", 2)
    assert "seq 2 is missing" in report.message


def test_dropped_last_record_is_a_count_mismatch(export: Path) -> None:
    _rewrite(export, lambda e: e[:-1])
    report = verify_export(export)
    assert (report.ok, report.problem) == (False, "dropped")
    assert "manifest says 6 records, file has 5" in report.message


def test_swapped_records_are_named(export: Path) -> None:
    _rewrite(export, lambda e: [e[0], e[2], e[1], *e[3:]])
    report = verify_export(export)
    assert (report.ok, report.problem, report.seq) == (False, "reordered", 1)
    assert "position 1 holds seq 2" in report.message


def test_swapped_records_with_renumbered_seq_break_the_chain(export: Path) -> None:
    def swap(e: list[dict[str, Any]]) -> list[dict[str, Any]]:
        e[1], e[2] = e[2], e[1]
        e[1]["seq"], e[2]["seq"] = 1, 2
        return e

    _rewrite(export, swap)
    report = verify_export(export)
    assert (report.ok, report.problem, report.seq) == (False, "chain", 1)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.update(record_count=7), "manifest says 7 records"),
        (lambda m: m.update(session_id="s-2"), "genesis does not belong to session 's-2'"),
        (lambda m: m.update(last_hash="0" * 64), "last_hash differs from seq 5"),
        (lambda m: m.update(schemas_sha256="0" * 64), "embedded schemas differ"),
    ],
)
def test_edited_manifest_fails(
    export: Path, edit: Callable[[dict[str, Any]], None], needle: str
) -> None:
    _rewrite(export, manifest=edit)
    report = verify_export(export)
    assert not report.ok
    assert needle in report.message


def test_flipped_byte_in_the_raw_file_is_caught(export: Path, records: list[LogRecord]) -> None:
    raw = bytearray(export.read_bytes())
    at = raw.find(records[4].value) + len(records[4].value) - 1  # null codec: bytes are verbatim
    raw[at] ^= 0x01
    export.write_bytes(bytes(raw))
    report = verify_export(export)
    assert (report.ok, report.problem, report.seq, report.offset) == (False, "changed", 4, 44)


def test_broken_container_is_unreadable_in_one_line(export: Path) -> None:
    raw = bytearray(export.read_bytes())
    raw[-1] ^= 0xFF  # the last block's sync marker
    export.write_bytes(bytes(raw))
    report = verify_export(export)
    assert (report.ok, report.problem) == (False, "unreadable")
    assert "\n" not in report.message


def test_missing_or_garbage_file_is_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "g.avro"
    garbage.write_bytes(b"not avro at all")
    for path in (garbage, tmp_path / "absent.avro"):
        report = verify_export(path)
        assert (report.ok, report.problem) == (False, "unreadable")
        assert "\n" not in report.message


# --- the manifest's signature ---------------------------------------------------------------

KEYS = ManifestKeys.from_policy_key("k1", "the deployment's policy signing key")


def _rechain(path: Path, edit: Callable[[dict[str, Any]], None], at: int = 2) -> None:
    """A forger's complete rewrite: edit entry `at`, recompute every hash and the
    manifest's first/last hash, keep the old signature."""

    def entries(es: list[dict[str, Any]]) -> list[dict[str, Any]]:
        edit(es[at])
        prev = es[0]["prev_hash"]
        for entry in es:
            entry["prev_hash"] = prev
            entry["hash"] = prev = entry_hash(prev, entry)
        return es

    fixed = entries(read_export(path)[1])

    def manifest(m: dict[str, Any]) -> None:
        m["first_hash"], m["last_hash"] = fixed[0]["hash"], fixed[-1]["hash"]

    _rewrite(path, lambda _: fixed, manifest)


def test_a_signed_manifest_verifies_with_the_deployment_keys(
    tmp_path: Path, records: list[LogRecord], codec: Codec
) -> None:
    path = tmp_path / "signed.avro"
    write_export(path, "s-1", records, codec, keys=KEYS, created_at=CREATED)
    report = verify_export(path, KEYS)
    assert report.ok, report.message
    assert report.message.endswith("manifest signed by key k1")
    other = ManifestKeys.from_policy_key("k1", "another deployment's key")
    report = verify_export(path, other)
    assert (report.ok, report.problem) == (False, "signature")
    assert "does not verify" in report.message


def test_an_unsigned_manifest_fails_when_keys_are_given(export: Path) -> None:
    report = verify_export(export, KEYS)
    assert (report.ok, report.problem) == (False, "signature")
    assert report.message == "FAIL signature: the manifest is not signed"


def test_a_whole_file_rewrite_passes_the_chain_but_not_the_signature(
    tmp_path: Path, records: list[LogRecord], codec: Codec
) -> None:
    path = tmp_path / "forged.avro"
    write_export(path, "s-1", records, codec, keys=KEYS, created_at=CREATED)

    def edit(entry: dict[str, Any]) -> None:
        entry["value"] = entry["value"].replace(b"gpt-4o", b"gpt-4x")

    _rechain(path, edit)
    assert b"gpt-4x" in read_export(path)[1][2]["value"]
    assert verify_export(path).ok  # the chain alone cannot tell
    report = verify_export(path, KEYS)
    assert (report.ok, report.problem) == (False, "signature")
