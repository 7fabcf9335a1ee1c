"""A runtime's client of the admission API: may this turn run, may this tool call run.

    client = AdmissionClient("http://127.0.0.1:6066", api_key, decision_keys={"dev-1": key})
    answer = client.turn("t-acme", "s-42", model="gpt-4o", estimated_tokens=800)
    if answer.decision in ("allow", "degrade"):
        ...call answer.model...

Answers are typed (`TurnAnswer`, `ToolAnswer`). Given `decision_keys`, a tool
answer's signed PolicyDecided is verified before it is returned, against the
very call asked about (`events.signing.verify_decision(proposal=...)`): a
decision that does not verify raises `DecisionRejected`, never comes back as an
allow. When the API cannot be reached (connection refused, timeout, 503) the
switch `on_unavailable` decides: "fail_closed" (the default) answers deny with
`ADMISSION_UNAVAILABLE`; "fail_open" answers allow with
`ADMISSION_UNAVAILABLE_FAIL_OPEN` and `unavailable=True`, so the runtime can
record that it ran ungoverned. A bad request (401, 403, 404, 422) is the
caller's mistake and raises `AdmissionError` either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from events.models import PolicyDecided
from events.signing import verify_decision

OnUnavailable = Literal["fail_closed", "fail_open"]
UNAVAILABLE = "ADMISSION_UNAVAILABLE"
UNAVAILABLE_FAIL_OPEN = "ADMISSION_UNAVAILABLE_FAIL_OPEN"

__all__ = [
    "AdmissionClient",
    "AdmissionError",
    "AsyncAdmissionClient",
    "ToolAnswer",
    "TurnAnswer",
]


class AdmissionError(Exception):
    """The API refused the request itself (key, tenant, body): fix the call."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True)
class TurnAnswer:
    decision: str  # allow | degrade | defer | deny
    reason_code: str
    model: str | None = None  # the model to call (a cheaper one on degrade)
    reservation_id: str | None = None
    remaining: Mapping[str, int | None] = field(default_factory=dict)
    unavailable: bool = False  # the API was not reached: on_unavailable answered

    @property
    def may_run(self) -> bool:
        return self.decision in ("allow", "degrade")


@dataclass(frozen=True)
class ToolAnswer:
    decision: str  # allow | defer (approval first) | deny
    reason_code: str
    policy_decision: PolicyDecided | None = None  # signed; verified when keys were given
    unavailable: bool = False

    @property
    def may_run(self) -> bool:
        return self.decision == "allow"


class _Calls:
    """What the sync and async clients share: settings, bodies, answers, the fallback.
    A client names its httpx class; only sending differs (`await` or not)."""

    _client: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        on_unavailable: OnUnavailable = "fail_closed",
        decision_keys: Mapping[str, bytes | str] | None = None,
        environment: str = "production",
    ) -> None:
        if on_unavailable not in ("fail_closed", "fail_open"):
            raise ValueError("on_unavailable is fail_closed or fail_open")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.on_unavailable, self.keys, self.environment = (
            on_unavailable,
            decision_keys,
            environment,
        )
        self._http = self._client(timeout=timeout, headers=self.headers)

    def turn_body(self, tenant: str, session: str, model: str, tokens: int,
                  workflow: str | None) -> dict[str, Any]:  # fmt: skip
        return {"tenant": tenant, "session": session, "model": model, "estimated_tokens": tokens,
                "workflow": workflow, "environment": self.environment}  # fmt: skip

    def tool_body(self, tenant: str, session: str, tool: str, action: str, operation_key: str,
                  destination_host: str | None, method: str, payload_bytes: int,
                  risk_level: str, workflow: str | None) -> dict[str, Any]:  # fmt: skip
        return {"tenant": tenant, "session": session, "tool": tool, "action": action,
                "operation_key": operation_key, "destination_host": destination_host,
                "method": method, "payload_bytes": payload_bytes, "risk_level": risk_level,
                "workflow": workflow, "environment": self.environment}  # fmt: skip

    def _answer(self, reply: httpx.Response) -> dict[str, Any] | None:
        """The JSON answer; None when the API is unavailable (503); raises on a bad call."""
        if reply.status_code in (200, 409):  # 409: another call under a decided key
            return reply.json()  # type: ignore[no-any-return]
        if reply.status_code >= 500:  # 503 and the like: unavailable
            return None
        try:
            message = reply.json().get("error", reply.text)
        except ValueError:
            message = reply.text
        raise AdmissionError(reply.status_code, str(message)[:300])

    def turn_answer(self, reply: httpx.Response | None) -> TurnAnswer:
        data = None if reply is None else self._answer(reply)
        if data is None:
            return TurnAnswer(*self._fallback(), unavailable=True)
        return TurnAnswer(
            data["decision"], data["reason_code"], data.get("model"),
            data.get("reservation_id"), data.get("remaining") or {},
        )  # fmt: skip

    def tool_answer(self, reply: httpx.Response | None, body: dict[str, Any]) -> ToolAnswer:
        data = None if reply is None else self._answer(reply)
        if data is None:
            return ToolAnswer(*self._fallback(), unavailable=True)
        signed = data.get("policy_decision")
        decision = None if signed is None else PolicyDecided.model_validate(signed)
        if decision is not None and self.keys is not None:
            call = {**body, "tenant_id": body["tenant"], "session_id": body["session"]}
            verify_decision(decision, self.keys, datetime.now(UTC), proposal=call)
        return ToolAnswer(data["decision"], data["reason_code"], decision)

    def _fallback(self) -> tuple[str, str]:
        """(decision, reason code) when the API cannot be reached: on_unavailable's."""
        if self.on_unavailable == "fail_open":
            return "allow", UNAVAILABLE_FAIL_OPEN
        return "deny", UNAVAILABLE


class AdmissionClient(_Calls):
    """Synchronous client (httpx)."""

    _client = httpx.Client
    _http: httpx.Client

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        try:
            return self._http.post(f"{self.url}{path}", json=body)
        except httpx.TransportError:  # refused, reset, timed out
            return None

    def turn(self, tenant: str, session: str, *, model: str, estimated_tokens: int,
             workflow: str | None = None) -> TurnAnswer:  # fmt: skip
        body = self.turn_body(tenant, session, model, estimated_tokens, workflow)
        return self.turn_answer(self._post("/v1/admission/turn", body))

    def tool(self, tenant: str, session: str, *, tool: str, action: str, operation_key: str,
             risk_level: str, destination_host: str | None = None, method: str = "POST",
             payload_bytes: int = 0, workflow: str | None = None) -> ToolAnswer:  # fmt: skip
        body = self.tool_body(tenant, session, tool, action, operation_key, destination_host,
                              method, payload_bytes, risk_level, workflow)  # fmt: skip
        return self.tool_answer(self._post("/v1/admission/tool", body), body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdmissionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAdmissionClient(_Calls):
    """The same on asyncio (httpx.AsyncClient)."""

    _client = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        try:
            return await self._http.post(f"{self.url}{path}", json=body)
        except httpx.TransportError:
            return None

    async def turn(self, tenant: str, session: str, *, model: str, estimated_tokens: int,
                   workflow: str | None = None) -> TurnAnswer:  # fmt: skip
        body = self.turn_body(tenant, session, model, estimated_tokens, workflow)
        return self.turn_answer(await self._post("/v1/admission/turn", body))

    async def tool(self, tenant: str, session: str, *, tool: str, action: str,
                   operation_key: str, risk_level: str, destination_host: str | None = None,
                   method: str = "POST", payload_bytes: int = 0,
                   workflow: str | None = None) -> ToolAnswer:  # fmt: skip
        body = self.tool_body(tenant, session, tool, action, operation_key, destination_host,
                              method, payload_bytes, risk_level, workflow)  # fmt: skip
        return self.tool_answer(await self._post("/v1/admission/tool", body), body)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAdmissionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
