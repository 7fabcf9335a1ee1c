"""Keeps the committed .avsc files and the manifest in step with the models.

`generate()` writes a new version file (Name.vN.avsc) and pins a new id for
every model whose generated schema differs from its latest committed version;
committed versions and ids are never rewritten. `drift()` reports the models
that would change, which the test suite and `govstream schemas check` use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro

from events.avro import canonical_json, schema_for
from events.models import CATALOG
from events.registry import MANIFEST, subject_for


def _load(manifest: Path) -> dict[str, Any]:
    return json.loads(manifest.read_text()) if manifest.exists() else {"subjects": {}}


def _latest_schema(manifest: Path, versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not versions:
        return None
    latest = max(versions, key=lambda v: v["version"])
    return json.loads((manifest.parent / latest["file"]).read_text())


def drift(manifest: Path = MANIFEST) -> list[str]:
    """Event types whose model no longer matches their latest committed schema."""
    data = _load(manifest)
    stale = []
    for name, model in CATALOG.items():
        committed = _latest_schema(manifest, data["subjects"].get(subject_for(name), []))
        if committed != schema_for(model):
            stale.append(name)
    return stale


def _check_compatible(old: dict[str, Any], new: dict[str, Any], name: str) -> None:
    """New readers must read old data and old readers new data (FULL compatibility)."""
    for writer, reader, direction in ((old, new, "backward"), (new, old, "forward")):
        try:
            fastavro.parse_schema(reader)
            # fastavro validates resolution lazily; resolving a minimal
            # record built from defaults is the cheapest reliable probe.
            _probe_resolution(writer, reader)
        except Exception as exc:
            raise ValueError(f"{name}: change is not {direction}-compatible: {exc}") from exc


def _probe_resolution(writer: dict[str, Any], reader: dict[str, Any]) -> None:
    import io

    writer_fields = {f["name"] for f in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] not in writer_fields and "default" not in field:
            raise ValueError(f"field {field['name']!r} was added without a default")
    buf = io.BytesIO()
    record = {f["name"]: _sample(f["type"]) for f in writer["fields"]}
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), record)
    buf.seek(0)
    fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


def _sample(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return None if "null" in avro_type else _sample(avro_type[0])
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "record":
            return {f["name"]: _sample(f["type"]) for f in avro_type["fields"]}
        if kind == "enum":
            return avro_type["symbols"][0]
        if kind == "array":
            return []
        if kind == "map":
            return {}
        return _sample(kind)
    return {"string": "x", "long": 0, "int": 0, "double": 0.0, "boolean": False, "bytes": b""}[
        avro_type
    ]


def generate(manifest: Path = MANIFEST) -> list[str]:
    """Write new schema versions for changed models; return what was written."""
    data = _load(manifest)
    subjects: dict[str, list[dict[str, Any]]] = data.setdefault("subjects", {})
    next_id = 1 + max((v["id"] for vs in subjects.values() for v in vs), default=0)
    written = []
    for name, model in CATALOG.items():
        subject = subject_for(name)
        versions = subjects.setdefault(subject, [])
        schema = schema_for(model)
        committed = _latest_schema(manifest, versions)
        if committed == schema:
            continue
        if committed is not None:
            _check_compatible(committed, schema, name)
        version = 1 + max((v["version"] for v in versions), default=0)
        file = f"{name}.v{version}.avsc"
        (manifest.parent / file).write_text(canonical_json(schema))
        versions.append({"version": version, "id": next_id, "file": file})
        written.append(f"{subject} v{version} -> id {next_id} ({file})")
        next_id += 1
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return written
