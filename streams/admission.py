"""The admission API on the governor: turns, tools, budgets and context.

POST /v1/admission/turn and /v1/admission/tool are log-first: the worker that
owns the tenant's partition appends an AdmissionRequested (signed) to the
tenant's log and answers what the governor decides when its fold reaches the
record. So every answer is decided in log order, like the stream's own
records: a tool decision a client hears is the first decision for its
operation key in log order, and concurrent turn admissions reserve one after
another against the same balances. Any other worker forwards the request to
the owner.

GET /v1/budgets/{tenant} and GET /v1/sessions/{id}/context answer from the
owner's state.

Status codes: 200 an answer (deny included); from the guard
(streams/http_guard.py), before the body is read: 401 no or unknown key, 403
a browser-shaped request, 415 a body that is not application/json; then 404
for a tenant or session the key may not see (its existence is not
disclosed), 422 a bad body (strict types), 503 while the owner is restoring,
moving or did not decide within the timeout (retry).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp import ClientSession, web
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from events.models import AdmissionRequested, Id, Key, Name
from projections.governor.context import compact_context, tenant_balances
from projections.governor.fold import CONFLICT
from projections.governor.state import SessionEntry, TenantEntry, session_key, tenant_key
from streams.governor import Governor, Partition, PartitionMoved
from streams.http_guard import principal_of

log = logging.getLogger(__name__)

PRODUCER = "govstream-admission/1"
FORWARDED = "X-Govstream-Forwarded"
_ID = TypeAdapter(Id)


class _SessionRequest(BaseModel):
    """What every admission request names: who asks, for which session.

    Strict: a number must be a JSON number ("100" and true are refused), ids
    have the events' alphabet (events.models: no "/", no leading dot).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tenant: Id
    session: Id
    workflow: Id | None = None
    environment: Id = Field(default="production", max_length=64)


class TurnBody(_SessionRequest):
    model: Name
    estimated_tokens: int = Field(ge=0, le=10_000_000)


class ToolBody(_SessionRequest):
    tool: Name
    action: Name
    operation_key: Key
    destination_host: str | None = Field(default=None, max_length=512)
    method: str = Field(default="POST", min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    payload_bytes: int = Field(default=0, ge=0, le=2**31 - 1)
    risk_level: Literal["low", "medium", "high", "critical"]


class Refusal(Exception):
    """An HTTP error answer: status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer (orjson), the one shape every API route returns."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (what producers use)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def validated_id(value: str, what: str) -> str:
    """A path id in the events' alphabet, else 404 (no such thing can exist)."""
    try:
        return _ID.validate_python(value)
    except ValidationError:
        raise Refusal(404, f"no {what} {value[:64]!r}") from None


def parse(body_type: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        return body_type.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise Refusal(422, f"{where}: {error['msg']}") from None


def authorize(request: web.Request, tenant: str) -> None:
    """404 when the request's key may not act for `tenant`: whether another
    tenant (or its session) exists is not disclosed."""
    if not principal_of(request).may_act_for(tenant):
        raise Refusal(404, f"no tenant {tenant!r} for this API key")


class AdmissionApi:
    """The routes of one worker, answered from (or forwarded to) the governor."""

    def __init__(
        self,
        governor: Governor,
        *,
        partitions: int,
        http: Callable[[], ClientSession],
        self_url: str,
        timeout: float,
        context_token_budget: int,
    ) -> None:
        self.governor, self.partitions, self.http = governor, partitions, http
        self.self_url, self.timeout = self_url.rstrip("/"), timeout
        self.context_token_budget = context_token_budget

    def mount(self, router: web.UrlDispatcher) -> None:
        """Add the routes to the worker's web server (before it starts)."""
        router.add_post("/v1/admission/turn", self._endpoint(TurnBody, self._turn))
        router.add_post("/v1/admission/tool", self._endpoint(ToolBody, self._tool))
        router.add_get("/v1/budgets/{tenant}", self._budgets)
        router.add_get("/v1/sessions/{session_id}/context", self._context)

    # --- routing ---------------------------------------------------------------------------

    def _partition(self, tenant: str) -> int:
        return partition_for(tenant, self.partitions)

    def _local(self, number: int, request: web.Request) -> str | None:
        """None when this worker serves partition `number` now, else the owner's URL."""
        if self.governor.partition_ready(number) is not None:
            return None
        owner = self.governor.owner(number)
        if number in self.governor.partitions:
            raise Refusal(503, "the worker is restoring this tenant's state; retry shortly")
        if request.headers.get(FORWARDED) or owner is None or owner.rstrip("/") == self.self_url:
            raise Refusal(503, f"no worker serves partition {number} yet; retry shortly")
        return owner

    async def _served_here(self, tenant: str, request: web.Request) -> Partition | web.Response:
        """The tenant's partition when this worker serves it now, else the owner's
        answer to the forwarded request (a read: no body)."""
        number = self._partition(tenant)
        owner = self._local(number, request)
        if owner is not None:
            return await self._forward(owner, request, b"")
        part = self.governor.partition_ready(number)
        if part is None:
            raise Refusal(503, "the tenant's partition moved; retry shortly")
        return part

    async def _forward(self, base: str, request: web.Request, raw: bytes) -> web.Response:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "x-api-key", "content-type")
        }
        headers[FORWARDED] = "1"
        url = f"{base.rstrip('/')}{request.path_qs}"
        try:
            async with self.http().request(
                request.method, url, data=raw or None, headers=headers
            ) as response:
                return web.Response(
                    body=await response.read(),
                    status=response.status,
                    content_type="application/json",
                )
        except OSError as exc:
            raise Refusal(503, f"the owner of this tenant did not answer ({exc}); retry") from None

    # --- admission ---------------------------------------------------------------------------

    def _endpoint(
        self,
        body_type: type[BaseModel],
        build: Callable[[Any], AdmissionRequested],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            try:
                raw = await request.read()  # the guard has authenticated the caller
                body = parse(body_type, raw)
                tenant = body.tenant  # type: ignore[attr-defined]
                authorize(request, tenant)
                number = self._partition(tenant)
                owner = self._local(number, request)
                if owner is not None:
                    return await self._forward(owner, request, raw)
                try:
                    answer = await self.governor.admit(number, build(body), self.timeout)
                except PartitionMoved:
                    raise Refusal(503, "the tenant's partition moved; retry shortly") from None
                except TimeoutError:
                    raise Refusal(503, "not decided in time; retry") from None
                # Another call under a decided operation key: a conflict, not a verdict.
                conflict = answer.get("reason_code") == CONFLICT
                return json_response(answer, status=409 if conflict else 200)
            except Refusal as refusal:
                return json_response({"error": str(refusal)}, status=refusal.status)

        return endpoint

    @staticmethod
    def _request(body: Any, kind: Literal["turn", "tool"], **fields: Any) -> AdmissionRequested:
        event_id = str(uuid.uuid4())
        return AdmissionRequested(
            event_id=event_id,
            occurred_at=datetime.now(UTC),
            tenant_id=body.tenant,
            session_id=body.session,
            workflow_id=body.workflow,
            idempotency_key=f"admission/{event_id}",
            environment=body.environment,
            producer=PRODUCER,
            request_kind=kind,
            **fields,
        )

    def _turn(self, body: TurnBody) -> AdmissionRequested:
        return self._request(body, "turn", model=body.model, estimated_tokens=body.estimated_tokens)

    def _tool(self, body: ToolBody) -> AdmissionRequested:
        return self._request(
            body, "tool", tool=body.tool, action=body.action, operation_key=body.operation_key,
            destination_host=body.destination_host, method=body.method,
            payload_bytes=body.payload_bytes, risk_level=body.risk_level,
        )  # fmt: skip

    # --- reads -----------------------------------------------------------------------------

    async def _budgets(self, request: web.Request) -> web.Response:
        """GET /v1/budgets/{tenant}[?session=S]: the tenant's balances and gauges (and
        the session's token balance), as the owner holds them."""
        tenant = request.match_info["tenant"]
        try:
            authorize(request, tenant)
            validated_id(tenant, "tenant")
            session = request.query.get("session")
            if session is not None:
                validated_id(session, "session")
            part = await self._served_here(tenant, request)
            if isinstance(part, web.Response):
                return part
            return json_response(tenant_balances(part.state, tenant, self.governor.config, session))
        except Refusal as refusal:
            return json_response({"error": str(refusal)}, status=refusal.status)

    async def _context(self, request: web.Request) -> web.Response:
        """GET /v1/sessions/{id}/context[?tokens=N][&tenant=T]: a tenant key reads its
        own sessions; an operator key names the tenant."""
        session_id = request.match_info["session_id"]
        try:
            principal = principal_of(request)
            tenant = principal.tenant or request.query.get("tenant")
            if tenant is None:
                raise Refusal(422, "tenant: an operator key names the tenant (?tenant=T)")
            authorize(request, tenant)
            validated_id(tenant, "tenant")
            validated_id(session_id, "session")
            budget = self.context_token_budget
            if "tokens" in request.query:
                text = request.query["tokens"]
                if not (text.isascii() and text.isdigit()):
                    raise Refusal(422, "tokens: expected a whole number >= 0")
                budget = int(text)
            part = await self._served_here(tenant, request)
            if isinstance(part, web.Response):
                return part
            session = part.state.peek(session_key(tenant, session_id))
            if not isinstance(session, SessionEntry) or (
                session.lifecycle is None and not session.turns
            ):
                raise Refusal(404, f"no memory for session {session_id!r}")
            tenant_entry = part.state.peek(tenant_key(tenant))
            answer = compact_context(
                session,
                tenant_entry if isinstance(tenant_entry, TenantEntry) else None,
                token_budget=budget,
            )
        except Refusal as refusal:
            return json_response({"error": str(refusal)}, status=refusal.status)
        return json_response(answer)
