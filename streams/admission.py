"""Request-time admission: POST /v1/admission/turn and /v1/admission/tool.

Served by the workers on Faust's web server (aiohttp), next to the agents that
own the state. A request is answered by the worker that owns its key: turns by
the owner of the tenant's budget-input partition, tools by the owner of the
session's partition; any other worker forwards the request there.

Turns: `projections.budget.admit_turn` decides against the budget table plus
the reservations answered but not yet applied (PendingReservations). Checking
and recording the reservation happen with no await in between, on the one
worker that owns the tenant, so concurrent requests cannot overspend. The
AdmissionDecided (carrying the reservation) is then written to the
budget-input topic and the answer waits for the broker's ack: a reservation
the client hears about is durable.

Tools: the signed PolicyDecided, from the session's entry if the operation was
decided before (the same operation_key always gets the same decision), else
evaluated now and sent to the session's owner as a signal.

Status codes: 200 an answer (deny included); from the guard
(streams/http_guard.py), before the body is read: 401 no or unknown API key,
403 a browser-shaped request, 415 a body that is not application/json; then
404 for a tenant or session the key may not see (its existence is not
disclosed), 422 a bad body (strict types: "100" is not a number), 503 the
owner is not known yet (start-up, rebalance).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import faust
import orjson
from aiohttp import web
from aiokafka.partitioner import murmur2
from faust.types import TP
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from events.codec import Codec
from events.models import (
    AdmissionDecided,
    Id,
    Key,
    Name,
    PolicyDecided,
    ToolCallProposed,
    session_key,
)
from events.topics import Topics
from govstream.settings import Settings
from projections.budget import ADMISSION_REASONS, TurnRequest, admission_event, admit_turn
from projections.lifecycle import state_from_dict
from streams.budget import BudgetRuntime
from streams.forwarder import Forwarder
from streams.http_guard import principal_of
from streams.processors import SessionRuntime, decide_proposal, read_entry

log = logging.getLogger(__name__)

PRODUCER = "govstream-admission/0.1"
FORWARDED = "X-Govstream-Forwarded"
_TOOL_OUTCOME: dict[str, Literal["allow", "deny", "defer"]] = {
    "allow": "allow",
    "deny": "deny",
    "require_approval": "defer",  # the call waits for an approval
}
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


_ID = TypeAdapter(Id)


def validated_id(value: str, what: str) -> str:
    """A path id in the events' alphabet, else 404 (no such thing can exist)."""
    try:
        return _ID.validate_python(value)
    except ValidationError:
        raise Refusal(404, f"no {what} {value[:64]!r}") from None


class Refusal(Exception):
    """An HTTP error answer: status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer (orjson), the one shape every admission-API route returns."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (what producers use)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Admission:
    """The admission endpoints of one worker.

    Answers are recorded through the Forwarder's producer: under exactly_once
    Faust's producer only sends inside a stream's transaction, and a web
    request is not in one.
    """

    def __init__(
        self,
        app: faust.App,
        *,
        settings: Settings,
        topics: Topics,
        codec: Codec,
        sessions: SessionRuntime,
        budgets: BudgetRuntime,
        forwarder: Forwarder,
    ) -> None:
        self.forwarder = forwarder
        self.app, self.settings, self.topics, self.codec = app, settings, topics, codec
        self.sessions, self.budgets = sessions, budgets
        self.partitions = settings.topic_partitions

    async def _record(self, topic: str, key: str, event: BaseModel) -> None:
        """Send and wait for the broker's ack (acks=all)."""
        await self.forwarder.send(topic, key.encode(), self.codec.encode(event))

    def mount(self, router: web.UrlDispatcher) -> None:
        """Add the endpoints to Faust's web server (before it starts)."""
        router.add_post("/v1/admission/turn", self._endpoint(TurnBody, self.admit_turn, "budget"))
        router.add_post("/v1/admission/tool", self._endpoint(ToolBody, self.admit_tool, "session"))
        router.add_get("/v1/budgets/{tenant}", self.budgets_of)

    async def budgets_of(self, request: web.Request) -> web.Response:
        """GET /v1/budgets/{tenant}: the tenant's balances and gauges, as the owner holds them."""
        tenant = request.match_info["tenant"]
        try:
            self.authorize(request, tenant)
            validated_id(tenant, "tenant")
            forward_to = self.owner_of(self.topics.budget_input, tenant, request)
            if forward_to is not None:
                return await self.forward(forward_to, request, b"")
        except Refusal as refusal:
            return json_response({"error": str(refusal)}, status=refusal.status)
        now = datetime.now(UTC)
        timeout = self.budgets.config.reservation_timeout
        balances, gauges = {}, {}
        for key, value in list(self.budgets.table.items()):
            kind, _, rest = key.partition("|")
            owner, _, name = rest.partition("|")
            if owner != tenant or value is None:
                continue
            if kind == "b":
                held = [
                    a
                    for a, at in value["reserved"].values()
                    if now - datetime.fromisoformat(at) < timeout
                ]
                balances[name] = {
                    "limit": value["limit"],
                    "used": value["used"],
                    "reserved": sum(held),
                }
            elif kind == "g":
                gauges[name] = {"limit": value["limit"], "in_use": len(value["holders"])}
        profile = self.budgets.profiles.get(tenant)
        return json_response(
            {
                "tenant": tenant,
                "plan": profile.plan if profile else None,
                "balances": balances,
                "gauges": gauges,
                "pending_reservations": self.budgets.pending.count_of(tenant),
            }
        )

    # --- the shared request path: auth, body, routing --------------------------------

    def _endpoint(
        self,
        body_type: type[BaseModel],
        handler: Callable[[Any], Awaitable[dict[str, Any]]],
        owner: Literal["budget", "session"],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            try:
                raw = await request.read()  # the guard has authenticated the caller
                body = self._parse(body_type, raw)
                self.authorize(request, body.tenant)  # type: ignore[attr-defined]
                topic = self.topics.budget_input if owner == "budget" else self.topics.sessions
                key = body.tenant if owner == "budget" else body.session  # type: ignore[attr-defined]
                forward_to = self.owner_of(topic, key, request)
                if forward_to is not None:
                    return await self.forward(forward_to, request, raw)
                return json_response(await handler(body))
            except Refusal as refusal:
                return json_response({"error": str(refusal)}, status=refusal.status)

        return endpoint

    @staticmethod
    def _parse(body_type: type[BaseModel], raw: bytes) -> BaseModel:
        try:
            return body_type.model_validate_json(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "body"
            raise Refusal(422, f"{where}: {error['msg']}") from None

    @staticmethod
    def authorize(request: web.Request, tenant: str) -> None:
        """404 when the request's key may not act for `tenant`: whether another
        tenant (or its session) exists is not disclosed."""
        if not principal_of(request).may_act_for(tenant):
            raise Refusal(404, f"no tenant {tenant!r} for this API key")

    def owner_of(self, topic: str, key: str, request: web.Request) -> str | None:
        """None when this worker owns `key`; else the owner's base URL."""
        tp = TP(topic, partition_for(key, self.partitions))
        if self.app.assignor.is_active(tp):
            if self.app.rebalancing or self.app.in_recovery or not self._recovered():
                raise Refusal(503, "the worker is recovering its tables; retry shortly")
            return None
        if request.headers.get(FORWARDED):
            raise Refusal(503, f"partition {tp.partition} of {topic} moved; retry shortly")
        for host, assigned in self.app.assignor.external_topic_distribution.items():
            if tp.partition in assigned.get(topic, ()):
                return host if "://" in host else f"http://{host}"
        raise Refusal(503, f"no worker owns partition {tp.partition} of {topic} yet; retry shortly")

    def _recovered(self) -> bool:
        return bool(self.app.tables.recovery.completed.is_set())

    async def forward(self, base: str, request: web.Request, raw: bytes) -> web.Response:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "x-api-key", "content-type")
        }
        headers[FORWARDED] = "1"
        url = f"{base.rstrip('/')}{request.path_qs}"
        async with self.app.http_client.request(
            request.method, url, data=raw, headers=headers
        ) as response:
            return web.Response(
                body=await response.read(), status=response.status, content_type="application/json"
            )

    # --- turns ----------------------------------------------------------------------

    async def admit_turn(self, body: TurnBody) -> dict[str, Any]:
        now = datetime.now(UTC)
        runtime = self.budgets
        runtime.pending.forget_older_than(now - runtime.config.reservation_timeout)
        request = TurnRequest(
            body.tenant, body.session, body.workflow, body.model, body.estimated_tokens
        )
        partition = partition_for(body.tenant, self.partitions)
        admission = admit_turn(
            runtime.table,
            request,
            runtime.profiles.budgets(body.tenant),
            partition,
            runtime.config,
            runtime.pending.totals,
            now,
        )
        reservation_id = None
        if admission.reserves:
            reservation_id = str(uuid.uuid4())
            # No await between the check above and this line: the next request
            # on this worker already sees the reservation.
            runtime.pending.add(reservation_id, admission.amounts, now, body.tenant)
        event = admission_event(request, admission, reservation_id, now, body.environment)
        # A reservation goes through the budget agent (which applies it, then
        # records the event); a refusal is recorded as it is.
        topic = self.topics.budget_input if reservation_id else self.topics.derived
        key = body.tenant if reservation_id else body.session
        try:
            await self._record(topic, key, event)
        except Exception:
            if reservation_id is not None:
                runtime.pending.settle(reservation_id)
            log.exception("admission: recording the decision failed")
            raise Refusal(503, "could not record the admission; retry") from None
        return {
            "decision": admission.decision,
            "reason_code": admission.reason_code,
            "reason": ADMISSION_REASONS[admission.reason_code],
            "model": admission.model,
            "reservation_id": reservation_id,
            "remaining": admission.remaining,
            "event_id": event.event_id,
        }

    # --- tools ----------------------------------------------------------------------

    async def admit_tool(self, body: ToolBody) -> dict[str, Any]:
        # Every lookup is the tenant's own: its session entry, its operation keys.
        runtime = self.sessions
        entry = read_entry(runtime.table.get(session_key(body.tenant, body.session))) or {}
        stored = (entry.get("decisions") or {}).get(body.operation_key)
        pending_key = (body.tenant, body.operation_key)
        known = runtime.pending_decisions.get(pending_key)
        if stored is not None:
            decided = PolicyDecided.model_validate(stored)
        elif known is not None:
            decided = known
        else:
            decided = self._decide(body, entry)
            runtime.pending_decisions[pending_key] = decided
            await self._signal(body, decided)
        return {
            "decision": _TOOL_OUTCOME[decided.decision],
            "reason_code": decided.reason_code,
            "policy_decision": decided.model_dump(mode="json"),
        }

    def _decide(self, body: ToolBody, entry: dict[str, Any]) -> PolicyDecided:
        now = datetime.now(UTC)
        proposal = ToolCallProposed(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            tenant_id=body.tenant,
            session_id=body.session,
            workflow_id=body.workflow,
            idempotency_key=f"admission-tool/{body.operation_key}",
            environment=body.environment,
            producer=PRODUCER,
            tool=body.tool,
            action=body.action,
            operation_key=body.operation_key,
            destination_host=body.destination_host,
            method=body.method,
            payload_bytes=body.payload_bytes,
            risk_level=body.risk_level,
        )
        raw_state = entry.get("lifecycle")
        status = str(state_from_dict(raw_state).status) if raw_state else "none"
        runtime = self.sessions
        return decide_proposal(
            proposal,
            entry,
            status,
            policy=runtime.policy,
            signing=runtime.signing,
            now=now,
            profile=runtime.profiles.get(body.tenant),
        )

    async def _signal(self, body: ToolBody, decided: PolicyDecided) -> None:
        recorded = AdmissionDecided(
            event_id=str(uuid.uuid4()),
            occurred_at=decided.occurred_at,
            tenant_id=body.tenant,
            session_id=body.session,
            workflow_id=body.workflow,
            idempotency_key=f"admission/{decided.event_id}",
            environment=body.environment,
            producer=PRODUCER,
            request_kind="tool",
            decision=_TOOL_OUTCOME[decided.decision],
            reason_code=decided.reason_code,
        )
        try:
            for event in (decided, recorded):
                await self._record(self.topics.session_signals, body.session, event)
        except Exception:
            self.sessions.pending_decisions.pop((body.tenant, body.operation_key), None)
            log.exception("admission: recording the tool decision failed")
            raise Refusal(503, "could not record the decision; retry") from None
