"""The session builder a runtime uses instead of filling envelopes by hand.

    async with emitter_from_settings() as emitter:
        session = AsyncSession(emitter, tenant_id="acme", session_id="s-1",
                               workflow_id="support", tier="A", plan="pro",
                               actor_id="user-7")
        await session.start()
        await session.turn(model="gpt-4o-mini", input_tokens=812, output_tokens=214,
                           cost_usd_micros=250, latency_ms=930, first_token_ms=210)
        proposal = await session.propose_tool(tool="http", action="post",
                                              destination_host="api.example.com")
        await session.tool_completed(proposal.operation_key, status="succeeded")
        await session.close()

`Session` is the same over a `SyncEmitter` (`sync_emitter_from_settings()`),
without `await`. The emitters come from the GOVSTREAM_* settings: the broker
(GOVSTREAM_KAFKA_BOOTSTRAP, else the local broker `govstream broker status`
shows), the topic prefix, Kafka security and the schema registry.

The builder fills the envelope: a fresh event id per record, the time from its
clock, the session's correlation id, causation (the previous event; the
proposal for an approval or completion), and idempotency keys derived from the
session and the step's position. A step whose send fails is not counted: the
next call of the same kind is its retry and goes out with the same
idempotency key and the next attempt number, so the governor suppresses it if
the first send did land after all.

Each step goes through the lifecycle's own `transition` before it is sent; a
step the lifecycle would reject raises IllegalStep with the lifecycle's reason
code and reason, and nothing is sent. The builder only sees its own steps:
what the governor decides (a suspension after a budget is exceeded, a denied
tool call) arrives on the log, not here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from events.emitter import Emitter, SyncEmitter
from events.models import (
    ApprovalRecorded,
    CheckpointCreated,
    RiskLevel,
    SessionClosed,
    SessionEvent,
    SessionStarted,
    TaskSummaryUpdated,
    Tier,
    ToolCallCompleted,
    ToolCallProposed,
    ToolCallStatus,
    TurnCompleted,
    TurnOutcome,
)
from events.topics import Topics
from govstream.errors import GovstreamError
from projections.lifecycle import Applied, SessionState, transition

PRODUCER = "govstream-session/0.1"


def _emitter_options(overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from govstream.broker import resolve_bootstrap
    from govstream.settings import load

    settings = load(**overrides)
    options = {
        "topics": Topics(settings.topic_prefix),
        "schema_registry_url": settings.schema_registry_url,
    }
    return resolve_bootstrap(settings), options


def emitter_from_settings(**overrides: Any) -> Emitter:
    """An Emitter for the deployment the GOVSTREAM_* settings describe."""
    bootstrap, options = _emitter_options(overrides)
    return Emitter(bootstrap, **options)


def sync_emitter_from_settings(**overrides: Any) -> SyncEmitter:
    """A SyncEmitter for the deployment the GOVSTREAM_* settings describe."""
    bootstrap, options = _emitter_options(overrides)
    return SyncEmitter(bootstrap, **options)


R = TypeVar("R")
E = TypeVar("E", bound=SessionEvent)


class IllegalStep(GovstreamError):
    """The lifecycle would reject this step; nothing was sent."""

    exit_code = 2

    def __init__(
        self, reason_code: str, reason: str, pending: frozenset[str] = frozenset()
    ) -> None:
        hint = ""
        if pending:
            keys = ", ".join(sorted(pending))
            hint = (
                f" (pending operations: {keys}; end each with tool_completed(key, status=...), "
                'status="rejected" for a call policy denied)'
            )
        super().__init__(f"{reason_code}: {reason}{hint}")
        self.reason_code = reason_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Pending:
    """A built step waiting for its send: committed only once the broker has it."""

    event: SessionEvent
    state: SessionState


class _SessionSteps(Generic[R]):
    """What both builders share: building, checking and committing steps. `_send`
    is the only difference (it returns the event, or an awaitable of it)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        session_id: str,
        workflow_id: str | None = None,
        tier: Tier = "B",
        plan: str = "default",
        actor_id: str,
        actor_scope: list[str] | None = None,
        environment: str = "production",
        policy_version: str = "v1",
        correlation_id: str | None = None,
        producer: str = PRODUCER,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tenant_id = tenant_id
        self.session_id = session_id
        self.workflow_id = workflow_id
        self._start = {
            "tier": tier,
            "plan": plan,
            "actor_id": actor_id,
            "actor_scope": list(actor_scope or []),
            "policy_version": policy_version,
        }
        self.environment = environment
        self.correlation_id = correlation_id or session_id
        self.producer = producer
        self._clock = clock
        self.state: SessionState | None = None
        self.steps = 0  # steps the broker has acknowledged
        self._last_event_id: str | None = None
        self._proposals: dict[str, str] = {}  # operation key -> its proposal's event id
        self._failed: tuple[str, int] | None = None  # (kind, attempt) of an unsent step

    # --- the steps ----------------------------------------------------------------

    def start(self) -> R:
        return self._step(SessionStarted, "start", **self._start)

    def turn(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd_micros: int,
        latency_ms: int,
        first_token_ms: int | None = None,
        outcome: TurnOutcome = "ok",
        error_class: str | None = None,
        prompt_version: str = "v1",
        content: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        return self._step(
            TurnCompleted,
            "turn",
            idempotency_key,
            model=model,
            prompt_version=prompt_version,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd_micros=cost_usd_micros,
            first_token_ms=latency_ms if first_token_ms is None else first_token_ms,
            latency_ms=latency_ms,
            outcome=outcome,
            error_class=error_class,
            content=content,
        )

    def propose_tool(
        self,
        *,
        tool: str,
        action: str,
        operation_key: str | None = None,
        destination_host: str | None = None,
        method: str = "POST",
        payload_bytes: int = 0,
        risk_level: RiskLevel = "low",
        idempotency_key: str | None = None,
    ) -> R:
        """Propose a tool call; `operation_key` (default: derived from the step)
        names the operation in the approval and completion that follow."""
        key = operation_key or f"{self.session_id}/op-{self.steps + 1}"
        return self._step(
            ToolCallProposed,
            "propose_tool",
            idempotency_key,
            operation_key=key,
            tool=tool,
            action=action,
            destination_host=destination_host,
            method=method,
            payload_bytes=payload_bytes,
            risk_level=risk_level,
        )

    def approval(
        self,
        operation_key: str,
        *,
        approver: str,
        granted: bool,
        idempotency_key: str | None = None,
    ) -> R:
        return self._step(
            ApprovalRecorded,
            "approval",
            idempotency_key,
            operation_key=operation_key,
            approver=approver,
            granted=granted,
        )

    def tool_completed(
        self,
        operation_key: str,
        *,
        status: ToolCallStatus,
        latency_ms: int = 0,
        result_ref: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Report how a proposed call ended; a call policy denied ends status="rejected"."""
        return self._step(
            ToolCallCompleted,
            "tool_completed",
            idempotency_key,
            operation_key=operation_key,
            status=status,
            latency_ms=latency_ms,
            result_ref=result_ref,
        )

    def summary(
        self,
        objective: str,
        *,
        decisions: list[str] | None = None,
        facts: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        return self._step(
            TaskSummaryUpdated,
            "summary",
            idempotency_key,
            objective=objective,
            decisions=list(decisions or []),
            facts=list(facts or []),
        )

    def checkpoint(
        self, artifact_ref: str, *, summary: str = "", idempotency_key: str | None = None
    ) -> R:
        return self._step(
            CheckpointCreated,
            "checkpoint",
            idempotency_key,
            artifact_ref=artifact_ref,
            summary=summary,
        )

    def close(self, reason: str = "completed", *, idempotency_key: str | None = None) -> R:
        return self._step(SessionClosed, "close", idempotency_key, reason=reason)

    # --- the machinery ------------------------------------------------------------

    def _step(
        self, cls: type[E], kind: str, idempotency_key: str | None = None, **fields: Any
    ) -> R:
        return self._send(lambda: self._build(cls, kind, idempotency_key, fields))

    def _build(
        self, cls: type[E], kind: str, idempotency_key: str | None, fields: dict[str, Any]
    ) -> _Pending:
        attempt = self._failed[1] + 1 if self._failed and self._failed[0] == kind else 1
        event_id = str(uuid.uuid4())
        operation = fields.get("operation_key")
        cause = self._proposals.get(operation) if kind != "propose_tool" and operation else None
        event = cls(
            event_id=event_id,
            occurred_at=self._clock(),
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            workflow_id=self.workflow_id,
            # Stable across the runtime's retries: the session and the step's place.
            idempotency_key=idempotency_key or f"{self.session_id}/{self.steps + 1}/{kind}",
            attempt=attempt,
            causation_id=cause or self._last_event_id,
            correlation_id=self.correlation_id,
            environment=self.environment,
            producer=self.producer,
            **fields,
        )
        outcome = transition(self.state, event)
        if not isinstance(outcome, Applied):
            pending = self.state.pending_operations if self.state else frozenset()
            raise IllegalStep(outcome.reason_code, outcome.reason, pending)
        self._failed = (kind, attempt)  # until the broker has it
        return _Pending(event, outcome.new_state)

    def _commit(self, pending: _Pending) -> SessionEvent:
        event = pending.event
        self.state = pending.state
        self.steps += 1
        self._last_event_id = event.event_id
        self._failed = None
        if isinstance(event, ToolCallProposed):
            self._proposals[event.operation_key] = event.event_id
        elif isinstance(event, ToolCallCompleted):
            self._proposals.pop(event.operation_key, None)
        return event

    def _send(self, build: Callable[[], _Pending]) -> R:
        raise NotImplementedError


class Session(_SessionSteps[SessionEvent]):
    """The session builder over a SyncEmitter: each step returns the event sent."""

    def __init__(self, emitter: SyncEmitter, **session: Any) -> None:
        super().__init__(**session)
        self._emitter = emitter

    def _send(self, build: Callable[[], _Pending]) -> SessionEvent:
        pending = build()
        self._emitter.emit(pending.event)
        return self._commit(pending)


class AsyncSession(_SessionSteps[Awaitable[SessionEvent]]):
    """The session builder over an Emitter: each step is awaited and returns the event."""

    def __init__(self, emitter: Emitter, **session: Any) -> None:
        super().__init__(**session)
        self._emitter = emitter
        # A session is a sequence: steps awaited together still go out one by one,
        # each built on the state the previous one left.
        self._order = asyncio.Lock()

    async def _sent(self, build: Callable[[], _Pending]) -> SessionEvent:
        async with self._order:
            pending = build()
            await self._emitter.emit(pending.event)
            return self._commit(pending)

    def _send(self, build: Callable[[], _Pending]) -> Awaitable[SessionEvent]:
        return self._sent(build)
