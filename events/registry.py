"""Schema registries: subject/version -> schema id, and id -> schema.

Subjects follow Confluent's RecordNameStrategy: the subject of an event is its
fully qualified record name (govstream.events.TurnCompleted), so one topic can
carry many event types and any tool that speaks the Confluent wire format can
resolve the schema id in each record.

Two implementations:
- EmbeddedRegistry: the committed manifest events/schemas/registry.json pins
  each subject/version to a stable id and a schema file, so every process
  agrees on ids without a server.
- ConfluentRegistry: any Confluent-compatible Schema Registry API (Confluent,
  Karapace, Redpanda, Apicurio ccompat), used when
  GOVSTREAM_SCHEMA_REGISTRY_URL is set.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastavro
import httpx

from events.avro import NAMESPACE, canonical_json

SCHEMA_DIR = Path(__file__).parent / "schemas"
MANIFEST = SCHEMA_DIR / "registry.json"


class SchemaNotFound(LookupError):
    """No schema is registered under that id or subject."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer: a transient fault, never a verdict on a record.

    Decoding lets it propagate (the record is not dead-lettered); the consumer
    stops before committing, and the record is read again once it answers.
    """


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    schema_id: int
    schema: dict[str, Any]

    @property
    def parsed(self) -> Any:
        return _parse(self.schema_id, json.dumps(self.schema, sort_keys=True))

    @property
    def record_name(self) -> str:
        return self.subject.rsplit(".", 1)[-1]


_parse_cache: dict[tuple[int, str], Any] = {}


def _parse(schema_id: int, text: str) -> Any:
    key = (schema_id, text)
    parsed = _parse_cache.get(key)
    if parsed is None:
        parsed = fastavro.parse_schema(json.loads(text))
        _parse_cache[key] = parsed
    return parsed


def subject_for(record_name: str) -> str:
    return f"{NAMESPACE}.{record_name}"


class SchemaRegistry(Protocol):
    def by_id(self, schema_id: int) -> RegisteredSchema: ...

    def latest(self, subject: str) -> RegisteredSchema: ...

    def id_for(self, subject: str, schema: dict[str, Any]) -> int: ...


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


class EmbeddedRegistry:
    """Reads the committed manifest; ids never change once committed."""

    def __init__(self, manifest: Path = MANIFEST) -> None:
        self.manifest = manifest
        data = json.loads(manifest.read_text()) if manifest.exists() else {"subjects": {}}
        self._by_id: dict[int, RegisteredSchema] = {}
        self._by_subject: dict[str, list[RegisteredSchema]] = {}
        for subject, versions in data["subjects"].items():
            for entry in versions:
                schema = json.loads((manifest.parent / entry["file"]).read_text())
                reg = RegisteredSchema(subject, entry["version"], entry["id"], schema)
                self._by_id[reg.schema_id] = reg
                self._by_subject.setdefault(subject, []).append(reg)
        for versions in self._by_subject.values():
            versions.sort(key=lambda r: r.version)

    def by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaNotFound(f"unknown schema id {schema_id}") from None

    def latest(self, subject: str) -> RegisteredSchema:
        versions = self._by_subject.get(subject)
        if not versions:
            raise SchemaNotFound(f"no schema registered for subject {subject}")
        return versions[-1]

    def versions(self, subject: str) -> list[RegisteredSchema]:
        return list(self._by_subject.get(subject, []))

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        text = _schema_text(schema)
        for reg in self._by_subject.get(subject, []):
            if _schema_text(reg.schema) == text:
                return reg.schema_id
        raise SchemaNotFound(
            f"schema of {subject} is not in the manifest; run `govstream schemas generate`"
        )


class ConfluentRegistry:
    """Client for the Confluent Schema Registry REST API (and compatibles)."""

    def __init__(self, url: str, *, auto_register: bool = True, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.auto_register = auto_register
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        self._lock = threading.Lock()
        self._by_id: dict[int, RegisteredSchema] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {exc}") from exc
        if response.status_code == 404:
            raise SchemaNotFound(f"schema registry: {path} not found")
        if response.status_code >= 500:
            raise RegistryUnavailable(f"schema registry {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise SchemaNotFound(f"schema registry {path}: HTTP {response.status_code}")
        return response.json()

    def by_id(self, schema_id: int) -> RegisteredSchema:
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        data = self._call("GET", f"/schemas/ids/{schema_id}")
        schema = json.loads(data["schema"])
        subject = f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"
        reg = RegisteredSchema(subject, data.get("version", 0), schema_id, schema)
        with self._lock:
            self._by_id[schema_id] = reg
        return reg

    def latest(self, subject: str) -> RegisteredSchema:
        data = self._call("GET", f"/subjects/{subject}/versions/latest")
        reg = RegisteredSchema(subject, data["version"], data["id"], json.loads(data["schema"]))
        with self._lock:
            self._by_id.setdefault(reg.schema_id, reg)
        return reg

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        text = _schema_text(schema)
        with self._lock:
            cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        body = {"schema": canonical_json(schema)}
        path = f"/subjects/{subject}/versions" if self.auto_register else f"/subjects/{subject}"
        schema_id = int(self._call("POST", path, body)["id"])
        with self._lock:
            self._ids[(subject, text)] = schema_id
        return schema_id

    def close(self) -> None:
        self._http.close()


def registry_from_settings(url: str | None) -> SchemaRegistry:
    return ConfluentRegistry(url) if url else EmbeddedRegistry()
