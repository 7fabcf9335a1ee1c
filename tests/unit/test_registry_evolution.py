"""Embedded registry ids, schema generation, and compatible evolution."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import fastavro
import pytest
from pydantic import create_model

from events import models, schemagen
from events.avro import schema_for
from events.codec import HEADER, Codec
from events.registry import MANIFEST, EmbeddedRegistry, SchemaNotFound, subject_for
from tests.factories import turn

SUBJECT = subject_for("TurnCompleted")
# The id the next new schema version gets: one above every committed id.
NEXT_ID = 1 + max(
    v["id"] for vs in json.loads(MANIFEST.read_text())["subjects"].values() for v in vs
)


def _turn_v2() -> type[models.TurnCompleted]:
    # Version 2 of TurnCompleted: one new field with a default.
    v2 = create_model("TurnCompleted", __base__=models.TurnCompleted, region=(str, "unknown"))
    v2.__doc__ = models.TurnCompleted.__doc__
    return v2


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A copy of the committed schemas to evolve without touching the repo."""
    target = tmp_path / "schemas"
    shutil.copytree(MANIFEST.parent, target)
    return target / "registry.json"


@pytest.fixture
def evolved(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, type]:
    v2 = _turn_v2()
    monkeypatch.setitem(models.CATALOG, "TurnCompleted", v2)
    monkeypatch.setattr(schemagen, "CATALOG", models.CATALOG)
    written = schemagen.generate(manifest)
    assert written == [f"{SUBJECT} v2 -> id {NEXT_ID} (TurnCompleted.v2.avsc)"]
    return manifest, v2


def test_ids_are_pinned_and_unique() -> None:
    data = json.loads(MANIFEST.read_text())
    ids = [v["id"] for versions in data["subjects"].values() for v in versions]
    assert len(ids) == len(set(ids))
    assert EmbeddedRegistry().latest(SUBJECT).schema_id == 2


def test_unknown_id_and_subject_raise() -> None:
    registry = EmbeddedRegistry()
    with pytest.raises(SchemaNotFound):
        registry.by_id(424242)
    with pytest.raises(SchemaNotFound):
        registry.latest("govstream.events.Nope")


def test_generate_is_a_no_op_when_models_match(manifest: Path) -> None:
    before = manifest.read_text()
    assert schemagen.generate(manifest) == []
    assert manifest.read_text() == before


def test_generate_adds_a_version_and_keeps_old_ids(evolved: tuple[Path, type]) -> None:
    manifest, _ = evolved
    registry = EmbeddedRegistry(manifest)
    assert [r.schema_id for r in registry.versions(SUBJECT)] == [2, NEXT_ID]
    committed_v1 = json.loads((MANIFEST.parent / "TurnCompleted.v1.avsc").read_text())
    assert registry.by_id(2).schema == committed_v1


def test_v2_reads_v1_bytes(evolved: tuple[Path, type]) -> None:
    manifest, v2 = evolved
    buf = io.BytesIO()
    buf.write(HEADER.pack(0, 2))  # a v1 producer: schema id 2, the v1 schema
    v1 = schema_for(models.TurnCompleted)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1), turn(input_tokens=11).model_dump())
    v1_bytes = buf.getvalue()
    decoded = Codec(EmbeddedRegistry(manifest)).decode(v1_bytes)
    assert isinstance(decoded.event, v2)
    assert decoded.event.region == "unknown"  # the default fills the new field
    assert decoded.event.input_tokens == 11


def test_v1_reads_v2_bytes(evolved: tuple[Path, type], monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, v2 = evolved
    event = v2(**turn(input_tokens=12).model_dump(), region="eu-west")
    v2_bytes = Codec(EmbeddedRegistry(manifest)).encode(event)
    assert v2_bytes[1:5] == NEXT_ID.to_bytes(4, "big")
    monkeypatch.setitem(models.CATALOG, "TurnCompleted", models.TurnCompleted)  # a v1 reader
    decoded = Codec(EmbeddedRegistry(manifest)).decode(v2_bytes)
    assert type(decoded.event) is models.TurnCompleted
    assert decoded.event.input_tokens == 12


def test_a_field_without_default_is_refused(
    manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = create_model("TurnCompleted", __base__=models.TurnCompleted, region=(str, ...))
    monkeypatch.setitem(models.CATALOG, "TurnCompleted", bad)
    with pytest.raises(ValueError, match="not backward-compatible"):
        schemagen.generate(manifest)


def test_plain_fastavro_resolves_v1_writer_to_v2_reader() -> None:
    v1 = schema_for(models.TurnCompleted)
    v2 = schema_for(_turn_v2())
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1), turn().model_dump())
    buf.seek(0)
    record = fastavro.schemaless_reader(buf, fastavro.parse_schema(v1), fastavro.parse_schema(v2))
    assert record["region"] == "unknown"
    assert HEADER.size == 5
