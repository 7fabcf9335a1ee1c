"""The memory agents: projections.memory's folds, live in Faust tables.

Two agents, thin adapters around the pure folds:

- `session-memory` reads the sessions and derived topics (both keyed by
  session_id, co-partitioned) and keeps one entry per session in the
  `session-memory` table: turn, task and policy memory. It writes the
  ContextCompactionRequested the fold asks for to the derived topic.
- `tenant-memory` reads the tenants topic into the `tenant-memory` table:
  the versioned profile memory.

Table values are serialized with `canonical_json` (codec "govstream-canonical"),
so a value in the changelog is byte for byte what `govstream replay rebuild`
computes from the log for the same key.

GET /v1/sessions/{id}/context answers from these tables on the worker that
owns the session's partition (any other worker forwards), tenant-scoped with
the admission API's keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import faust
from aiohttp import web
from faust.serializers import codecs

from events.codec import Codec
from events.models import SessionEvent, TenantProfileUpdated, session_key
from events.topics import Topics
from govstream.settings import Settings
from projections.memory import (
    MemoryConfig,
    canonical_json,
    compact_context,
    session_step,
    tenant_step,
)
from projections.redaction import Redactor
from streams.ingest import Ingested, InputRules, ingest, source_record
from streams.stats import AgentStats

__all__ = [
    "CANONICAL",
    "SESSION_TABLE",
    "TENANT_TABLE",
    "MemoryRuntime",
    "changelog_topic",
    "memory_config",
    "register_memory",
]

log = logging.getLogger(__name__)

SESSION_TABLE = "session-memory"
TENANT_TABLE = "tenant-memory"
CANONICAL = "govstream-canonical"


class _CanonicalJson(codecs.Codec):
    """Table values as canonical JSON (sorted keys, no spaces): one byte form per state."""

    def _dumps(self, obj: Any) -> bytes:
        return canonical_json(obj)

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


codecs.register(CANONICAL, _CanonicalJson())


def memory_config(settings: Settings) -> MemoryConfig:
    return MemoryConfig(
        turn_retention_hours=settings.memory_turn_retention_hours,
        task_retention_days=settings.memory_task_retention_days,
        tenant_versions=settings.memory_tenant_versions,
        compaction_threshold_tokens=settings.compaction_threshold_tokens,
        dedupe_window=settings.dedupe_window,
        redactor=Redactor.build(settings.redaction_patterns),
    )


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog topic (`<app id>-<table>-changelog`)."""
    return f"{settings.consumer_group}-{table}-changelog"


@dataclass
class MemoryRuntime:
    sessions: Any  # faust Table: session_id -> memory
    tenants: Any  # faust Table: tenant_id -> profile memory
    config: MemoryConfig
    stats: AgentStats = field(default_factory=AgentStats)


def register_memory(
    app: faust.App, *, settings: Settings, topics: Topics, codec: Codec, rules: InputRules
) -> MemoryRuntime:
    schema = faust.Schema(key_serializer="json", value_serializer=CANONICAL)
    runtime = MemoryRuntime(
        sessions=app.Table(
            SESSION_TABLE, default=None, schema=schema, partitions=settings.topic_partitions
        ),
        tenants=app.Table(
            TENANT_TABLE, default=None, schema=schema, partitions=settings.topic_partitions
        ),
        config=memory_config(settings),
    )
    for table in (runtime.sessions, runtime.tenants):
        # Faust sends changelog records with the table's own serializer
        # attribute (derived from value_type, "json"), not the schema's.
        table.value_serializer = CANONICAL
    config, stats = runtime.config, runtime.stats
    sessions_table, tenants_table = runtime.sessions, runtime.tenants

    source = app.topic(
        topics.sessions, topics.derived, key_serializer="raw", value_serializer="raw"
    )
    derived_topic = app.topic(
        topics.derived,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=1,
    )

    @app.agent(source, concurrency=1, name="session-memory")
    async def session_memory(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            item = ingest(codec, source_record(record), rules)
            if not isinstance(item, Ingested) or not isinstance(item.event, SessionEvent):
                stats.record(skipped=True)  # the sink dead-letters it
                continue
            event = item.event
            before = sessions_table.get(event.session_key)
            after, out = session_step(before, event, config)
            if after is None or after == before:
                stats.record(skipped=True)
                continue
            sessions_table[event.session_key] = after
            key = event.session_id.encode()
            for derived in out:
                data = codec.encode(derived)
                headers = [rules.signer.header(key, data)]
                await derived_topic.send(key=key, value=data, headers=headers)
            stats.record(len(out))

    tenants_source = app.topic(topics.tenants, key_serializer="raw", value_serializer="raw")

    @app.agent(tenants_source, concurrency=1, name="tenant-memory")
    async def tenant_memory(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            item = ingest(codec, source_record(record), rules)
            if not isinstance(item, Ingested) or not isinstance(item.event, TenantProfileUpdated):
                continue
            event = item.event
            before = tenants_table.get(event.tenant_id)
            after = tenant_step(before, event, config)
            if after is not None and after != before:
                tenants_table[event.tenant_id] = after

    return runtime


def session_constraints(entry: dict[str, Any] | None) -> dict[str, Any]:
    """The session processor's side of the active constraints: status and budget verdict."""
    if not entry:
        return {"status": "unknown", "budget": None}
    lifecycle = entry.get("lifecycle") or {}
    return {"status": lifecycle.get("status", "unknown"), "budget": entry.get("budget")}


def mount_context(
    router: web.UrlDispatcher,
    *,
    admission: Any,
    memory: MemoryRuntime,
    session_table: Any,
    settings: Settings,
    topics: Topics,
) -> None:
    """GET /v1/sessions/{id}/context[?tokens=N][&tenant=T], on the admission API's
    keys and routing.

    A tenant key reads its own sessions; an operator key names the tenant
    (`tenant=`). 404 for a session with no memory, or one of another tenant
    (its existence is not disclosed); 422 for a bad `tokens` or an operator
    request without `tenant`; 503 while the owner recovers.
    """
    from streams.admission import Refusal, json_response, validated_id
    from streams.http_guard import principal_of

    async def context(request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        try:
            principal = principal_of(request)
            tenant = principal.tenant or request.query.get("tenant")
            if tenant is None:
                raise Refusal(422, "tenant: an operator key names the tenant (?tenant=T)")
            admission.authorize(request, tenant)
            validated_id(tenant, "tenant")
            validated_id(session_id, "session")
            budget = settings.context_token_budget
            if "tokens" in request.query:
                text = request.query["tokens"]
                if not (text.isascii() and text.isdigit()):
                    raise Refusal(422, "tokens: expected a whole number >= 0")
                budget = int(text)
            forward_to = admission.owner_of(topics.sessions, session_id, request)
            if forward_to is not None:
                return await admission.forward(forward_to, request, b"")
            key = session_key(tenant, session_id)
            stored = memory.sessions.get(key)
            if stored is None:
                raise Refusal(404, f"no memory for session {session_id!r}")
            answer = compact_context(
                stored,
                token_budget=budget,
                constraints=session_constraints(session_table.get(key)),
                tenant=memory.tenants.get(tenant),
            )
        except Refusal as refusal:
            return json_response({"error": str(refusal)}, status=refusal.status)
        return json_response(answer)

    router.add_get("/v1/sessions/{session_id}/context", context)
