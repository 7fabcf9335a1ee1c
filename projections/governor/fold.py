"""The governor's fold: one record of a tenant partition's log at a time. Pure.

    step(state, event, log_ms, config) -> Folded(derived, answer)

Per record, in this order: dedupe (the session's idempotency keys, one
bounded window), lifecycle, policy (signed decisions, the first per
operation key wins), budgets (session, workflow, tenant day and month,
concurrent sessions and tool calls, the global tokens-per-minute share),
memory (turn, task and policy strata, compaction requests). A turn that
crosses a session budget gates the session in the same step: a tier that
suspends is suspended before the next record is folded, and the next tool
proposal or turn admission of the session is refused with the budget reason.

No clock, no randomness, no measured durations: times come from the events
and from `log_ms`, the record's log time (reservations expire by it);
derived event ids are uuid5 of their cause. So a rebuild from offset zero
reproduces every entry and every derived event byte for byte.

Admission requests (AdmissionRequested, appended by a worker to the tenant's
log before it answers) are decided here, in log order, like every other
record: the `answer` is what the API returns.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from events.models import (
    DERIVED_EVENTS,
    AdmissionDecided,
    AdmissionRequested,
    ApprovalRecorded,
    CheckpointCreated,
    ContextCompactionRequested,
    DuplicateSuppressed,
    Event,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionQuarantined,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TaskSummaryUpdated,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.signing import build_policy_decided, proposal_digest
from projections.governor import budgets
from projections.governor.config import GovernorConfig
from projections.governor.state import (
    EPOCH,
    PartitionState,
    PolicyRecord,
    SessionEntry,
    TenantEntry,
    TurnMemo,
    canonical,
    iso,
    session_key,
    tenant_key,
)
from projections.ledger import (
    Exceeded,
    exceeded_event,
    fallback_chain,
    tenant_sessions_scope,
    tool_calls_scope,
)
from projections.lifecycle import Applied, derived_events, transition
from projections.policy import Decision, PolicyContext, evaluate
from projections.pricing import prices_for
from projections.redaction import Redactor

PRODUCER = "govstream-governor/1"
DEFAULT_PLAN = "free"
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:governor")
_DUPLICATE_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:DuplicateSuppressed")
_SUSPENDED_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:BudgetSuspension")
_COMPACTION_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:ContextCompactionRequested")
_TOOL_OUTCOME = {"allow": "allow", "deny": "deny", "require_approval": "defer"}
LIFECYCLE_TYPES = (
    SessionStarted, TurnCompleted, ToolCallProposed, ApprovalRecorded, ToolCallCompleted,
    TaskSummaryUpdated, CheckpointCreated, SessionSuspended, SessionResumed, SessionClosed,
    SessionFailed, SessionQuarantined,
)  # fmt: skip
ADMISSION_REASONS: dict[str, str] = {
    "ADMITTED": "every budget has room for the estimate; it is reserved",
    "DEGRADED_TO_CHEAPER_MODEL": "the requested model does not fit the cost budget "
    "(or the session was degraded); a cheaper model from the fallback tree does",
    "SESSION_SUSPENDED_BY_BUDGET": "a budget of this session was exceeded and its tier suspends",
    "UNKNOWN_TENANT": "the tenant has no profile and this deployment refuses unknown tenants",
    "OPERATION_KEY_CONFLICT": "the operation key was decided for another call (tool, "
    "destination, method, size or risk)",
    "SESSION_TOKENS_EXHAUSTED": "the session's token budget has no room for the estimate",
    "WORKFLOW_TOKENS_EXHAUSTED": "the workflow's cumulative token budget has no room",
    "TENANT_DAY_COST_EXHAUSTED": "the tenant's daily cost budget has no room, at any model",
    "TENANT_MONTH_COST_EXHAUSTED": "the tenant's monthly cost budget has no room, at any model",
    "GLOBAL_RATE_LIMITED": "the global tokens-per-minute envelope is full: retry next minute",
    "UNKNOWN_MODEL": "the model has no price, so its cost cannot be reserved",
    "ADMITTED_AT_FALLBACK_PRICE": "the model has no price: its estimate is reserved at the "
    "configured fallback price (GOVSTREAM_FALLBACK_PRICE)",
}
_EXHAUSTED = {
    "session_tokens": "SESSION_TOKENS_EXHAUSTED",
    "workflow_tokens": "WORKFLOW_TOKENS_EXHAUSTED",
    "tenant_cost_day": "TENANT_DAY_COST_EXHAUSTED",
    "tenant_cost_month": "TENANT_MONTH_COST_EXHAUSTED",
}
# A proposal refused because the tenant's calls of that tool are all in flight.
CONCURRENCY_REASON = "CONCURRENT_CALLS_EXHAUSTED"


@dataclass(slots=True)
class Folded:
    """What one record derives, the answer to an admission request, and whether the
    record was applied (False: a repeat of an applied operation, or not for the fold)."""

    derived: list[SessionEvent] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    applied: bool = True


_NOTHING = Folded(applied=False)


NOT_STARTED = "SESSION_NOT_STARTED"  # a refusal that decides nothing (see _decide)
CONFLICT = "OPERATION_KEY_CONFLICT"  # another call under a decided operation key
# Refusals that decide no operation: the key keeps (or awaits) its own decision.
NOT_AN_OPERATION_DECISION = frozenset({NOT_STARTED, CONFLICT})


def _id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "\x1f".join(parts)))


def _log_time(log_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=log_ms)


# --- the entry point ------------------------------------------------------------------------


def step(state: PartitionState, event: Event, log_ms: int, config: GovernorConfig) -> Folded:
    """Fold one record (already through the ingest rules) into `state`'s overlay."""
    partition = state.partition()
    if log_ms > partition.clock_ms:
        partition.clock_ms = log_ms
    if isinstance(event, TenantProfileUpdated):
        return _profile(state, event, log_ms, config)
    if not isinstance(event, SessionEvent):
        return _NOTHING
    if isinstance(event, DERIVED_EVENTS):
        return _NOTHING  # a worker's own record of a fact: nothing to decide again
    session = state.session(event.tenant_id, event.session_id)
    seen = session.applied.get(event.idempotency_key)
    if seen is not None:
        if seen[0] == event.event_id:
            return _NOTHING  # a redelivery of the same record
        return Folded([_duplicate(event, seen)], applied=False)
    session.applied[event.idempotency_key] = (event.event_id, event.attempt)
    if len(session.applied) > config.dedupe_window:
        del session.applied[next(iter(session.applied))]  # the oldest key goes first
    session.updated_at = iso(event.occurred_at)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return Folded()
    return handler(state, session, event, log_ms, config)


def fold_log(
    items: Iterable[tuple[Any, Event]], config: GovernorConfig
) -> Iterator[tuple[Any, Event, Folded]]:
    """Fold one partition's records (position with `timestamp_ms`, event) in log
    order from an empty state: what replay, backtest and reprice walk through."""
    state = PartitionState()
    for position, event in items:
        yield position, event, step(state, event, position.timestamp_ms, config)


def _duplicate(event: SessionEvent, seen: tuple[str, int]) -> DuplicateSuppressed:
    original, attempt = seen
    event_id = str(uuid.uuid5(_DUPLICATE_NS, f"{original}:{event.event_id}"))
    return DuplicateSuppressed(
        **event.envelope_for_derived(event_id, f"DuplicateSuppressed/{event_id}", PRODUCER),
        duplicate_event_id=event.event_id,
        original_event_id=original,
        duplicate_attempt=event.attempt,
        original_attempt=attempt,
        suppressed_by="governor",
    )


# --- lifecycle --------------------------------------------------------------------------------


def _lifecycle(
    session: SessionEntry, event: SessionEvent, config: GovernorConfig
) -> tuple[bool, list[SessionEvent]]:
    """(applied, derived) of the session's state machine for `event`."""
    result = transition(session.lifecycle, event, config.lifecycle)
    if result.new_state is not None:
        session.lifecycle = result.new_state
    return isinstance(result, Applied), derived_events(event, result)


def _suspend(
    state: PartitionState,
    session: SessionEntry,
    cause: SessionEvent,
    scope: str,
    config: GovernorConfig,
) -> list[SessionEvent]:
    """A budget suspends the session now: a derived SessionSuspended, applied in place.
    Where the machine has no such edge (a session not yet active) the gate alone
    refuses its calls and turns."""
    if session.lifecycle is None:
        return []
    suspended = SessionSuspended(
        **cause.envelope_for_derived(
            str(uuid.uuid5(_SUSPENDED_NS, cause.event_id)),
            f"budget-suspend/{cause.event_id}",
            PRODUCER,
        ),
        reason=f"budget exceeded: {scope}"[:500],
    )
    result = transition(session.lifecycle, suspended, config.lifecycle)
    if not isinstance(result, Applied):
        return []
    session.lifecycle = result.new_state
    return [suspended]


def _started(
    state: PartitionState,
    session: SessionEntry,
    event: SessionStarted,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    fresh = session.lifecycle is None
    applied, out = _lifecycle(session, event, config)
    if not (applied and fresh):
        return Folded(out)
    session.plan, session.tier, session.workflow_id = event.plan, event.tier, event.workflow_id
    tenant = state.tenant(event.tenant_id)
    if event.session_id not in tenant.sessions:
        tenant.sessions.append(event.session_id)
    limit = budgets.budgets_of(state, event.tenant_id, config).concurrent_sessions
    if limit is not None and len(tenant.sessions) > limit:
        # Over the tenant's concurrent sessions: gated from the start, holding no slot.
        tenant.sessions.remove(event.session_id)
        scope = tenant_sessions_scope(event.tenant_id)
        out.append(
            exceeded_event(event, scope, Exceeded(len(tenant.sessions) + 1, limit), "suspend", None)
        )
        session.verdict = {"action": "suspend", "scope": scope.event_scope, "fallback_model": None}
        out += _suspend(state, session, event, scope.event_scope, config)
    return Folded(out)


def _lifecycle_only(
    state: PartitionState,
    session: SessionEntry,
    event: SessionEvent,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    return Folded(_lifecycle(session, event, config)[1])


def _resumed(
    state: PartitionState,
    session: SessionEntry,
    event: SessionResumed,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    applied, out = _lifecycle(session, event, config)
    if applied:
        # The operator's resume lifts the budget gate; admission still refuses
        # turns while the budget itself has no room.
        session.verdict = None
    return Folded(out)


def _ended(
    state: PartitionState,
    session: SessionEntry,
    event: SessionEvent,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    applied, out = _lifecycle(session, event, config)
    if applied:
        tenant = state.tenant(event.tenant_id)
        if event.session_id in tenant.sessions:
            tenant.sessions.remove(event.session_id)
        for op, tool in session.tools.items():
            calls = tenant.tool_calls.get(tool)
            if calls and op in calls:
                calls.remove(op)
        session.tools = {}
        for rid in list(session.reservations):
            budgets.release(session, state, rid)
    return Folded(out)


# --- turns ------------------------------------------------------------------------------------


def _turn(
    state: PartitionState,
    session: SessionEntry,
    event: TurnCompleted,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    _, out = _lifecycle(session, event, config)  # a rejected turn is still charged: it ran
    spent_in, spent_out, spent_cost = session.spent
    session.spent = (
        spent_in + event.input_tokens,
        spent_out + event.output_tokens,
        spent_cost + event.cost_usd_micros,
    )
    workflow = event.workflow_id or session.workflow_id
    charges = budgets.scopes(state, session, workflow, event.occurred_at, config)
    if session.reservations:  # the oldest reservation is this turn's
        budgets.release(session, state, next(iter(session.reservations)))
    if charges is not None:
        tokens = event.input_tokens + event.output_tokens
        found, verdict = budgets.charge(
            charges, tokens, event.cost_usd_micros, event, session.tier or "C", event.model, config
        )
        out += found
        if verdict is not None and (session.verdict or {}).get("action") != "suspend":
            session.verdict = verdict
            if verdict["action"] == "suspend":
                out += _suspend(state, session, event, verdict["scope"], config)
    out += _remember_turn(session, event, config)
    return Folded(out)


def _redact(text: str, config: GovernorConfig) -> tuple[str, dict[str, Any] | None]:
    return _redacted(config.redactor, text)


@functools.lru_cache(maxsize=65_536)
def _redacted(redactor: Redactor, text: str) -> tuple[str, dict[str, Any] | None]:
    # Task summaries repeat their items on every update: redact each text once.
    result = redactor.redact(text)
    return result.text, result.record.to_dict()


def _remember_turn(
    session: SessionEntry, event: TurnCompleted, config: GovernorConfig
) -> list[SessionEvent]:
    """Turn memory: the turn (content redacted), the retention window, compaction."""
    content = redaction = None
    if event.content is not None:
        content, redaction = _redact(event.content, config)
    at = iso(event.occurred_at)
    memo = TurnMemo(
        event.event_id, at, event.model, event.input_tokens, event.output_tokens,
        event.cost_usd_micros, str(event.outcome), content, redaction,
    )  # fmt: skip
    turns = session.turns
    newest = max(at, turns[-1].at) if turns else at
    cutoff = iso(datetime.fromisoformat(newest) - config.turn_retention)
    if turns and turns[0].at < cutoff:
        turns[:] = [t for t in turns if t.at >= cutoff]
        session.turn_tokens = sum(t.tokens for t in turns)
    if turns and at < turns[-1].at:
        turns.append(memo)
        turns.sort(key=lambda t: t.at)  # stable: log order among equal times
    else:
        turns.append(memo)
    session.turn_tokens += memo.tokens
    if session.compaction is None and session.turn_tokens > config.compaction_threshold_tokens:
        session.compaction = {"requested_at": at, "turn_tokens": session.turn_tokens}
        event_id = str(uuid.uuid5(_COMPACTION_NS, event.event_id))
        return [
            ContextCompactionRequested(
                **event.envelope_for_derived(
                    event_id, f"ContextCompactionRequested/{event_id}", PRODUCER
                ),
                turn_tokens=session.turn_tokens,
                threshold=config.compaction_threshold_tokens,
            )
        ]
    return []


# --- task memory ------------------------------------------------------------------------------


def _merge(items: list[dict[str, str]], texts: list[str], at: str) -> None:
    known = {i["text"] for i in items}
    for text in dict.fromkeys(texts):
        if text not in known:
            items.append({"text": text, "at": at})


def _task(
    state: PartitionState,
    session: SessionEntry,
    event: SessionEvent,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    _, out = _lifecycle(session, event, config)
    at = iso(event.occurred_at)
    task = session.task
    if isinstance(event, TaskSummaryUpdated):
        redact = lambda text: _redact(text, config)[0]  # noqa: E731
        task.objective = {"text": redact(event.objective), "at": at}
        _merge(task.decisions, [redact(t) for t in event.decisions], at)
        _merge(task.facts, [redact(t) for t in event.facts], at)
    elif isinstance(event, CheckpointCreated):
        task.checkpoints.append(
            {
                "artifact_ref": _redact(event.artifact_ref, config)[0],
                "summary": _redact(event.summary, config)[0],
                "at": at,
            }
        )
        # The runtime compacted: earlier turns live on in the checkpoint.
        session.turns = [t for t in session.turns if t.at > at]
        session.turn_tokens = sum(t.tokens for t in session.turns)
        session.compaction = None
    cutoff = iso(event.occurred_at - config.task_retention)
    for items in (task.decisions, task.facts, task.checkpoints):
        if items and items[0]["at"] < cutoff:
            items[:] = [i for i in items if i["at"] >= cutoff]
    if task.objective is not None and task.objective["at"] < cutoff:
        task.objective = None
    return Folded(out)


# --- tools and policy -------------------------------------------------------------------------


def _context(
    state: PartitionState,
    session: SessionEntry,
    environment: str,
    status: str,
    config: GovernorConfig,
) -> PolicyContext:
    """The session's side of a policy evaluation: plan, state, budget gate, tenant profile.
    The tenant's current plan wins over the plan the session started with."""
    tenant = state.peek(tenant_key(session.tenant_id))
    profile = tenant.profile if isinstance(tenant, TenantEntry) else None
    plan = (profile or {}).get("plan") or session.plan or DEFAULT_PLAN
    gate = session.verdict is not None and session.verdict["action"] in ("suspend", "degrade")
    return PolicyContext(
        plan=plan,
        environment=environment,
        session_status=status,
        budget_exceeded=gate,
        tenant_egress_allowlist=tuple((profile or {}).get("egress_allowlist") or ()),
        tenant_tool_permissions=dict((profile or {}).get("tool_permissions") or {}),
        tenant_refused=config.refuse_unknown_tenants and profile is None,
    )


def _stored(state: PartitionState, tenant_id: str, operation_key: str) -> dict[str, Any] | None:
    """The first decision of the tenant's operation, wherever it was made."""
    where = state.operations.get((tenant_id, operation_key))
    if where is None:
        return None
    owner = state.peek(where)
    return owner.decisions.get(operation_key) if isinstance(owner, SessionEntry) else None


def _decide(
    state: PartitionState,
    session: SessionEntry,
    proposal: ToolCallProposed,
    status: str,
    log_ms: int,
    config: GovernorConfig,
) -> tuple[PolicyDecided, bool]:
    """(the operation's decision, whether it is new). The first decision in log order
    wins: a later proposal or request for the same operation gets it again."""
    stored = _stored(state, proposal.tenant_id, proposal.operation_key)
    if stored is not None:
        digest = stored.get("proposal_digest")
        if digest and digest != proposal_digest(proposal):
            # Another call under a decided operation key: refused, never given the
            # stored decision (nor remembered: the key keeps its first decision).
            conflict = Decision("deny", CONFLICT, "operation_key.conflict", config.policy.version)
            return _sign(proposal, conflict, config, _id("PolicyDecided", proposal.event_id)), True
        return PolicyDecided.model_validate(stored), False
    context = _context(state, session, proposal.environment, status, config)
    decision = evaluate(config.policy, proposal, context, _log_time(log_ms))
    tenant = state.tenant(proposal.tenant_id)
    limit = budgets.budgets_of(state, proposal.tenant_id, config).concurrent_calls_per_tool
    calls = tenant.tool_calls.get(proposal.tool, [])
    if decision.decision == "allow" and limit is not None and len(calls) >= limit:
        # Every call of this tool the tenant may run at once is in flight.
        scope = tool_calls_scope(proposal.tool)
        decision = Decision(
            "deny", CONCURRENCY_REASON, f"budget.{scope.kind}", decision.policy_version
        )
    # Before its session started, a proposal is refused but the operation is not
    # decided: the refusal has an id of its own and the key stays free.
    early = decision.reason_code == NOT_STARTED
    decided = _sign(
        proposal, decision, config, _id("PolicyDecided", proposal.event_id) if early else None
    )
    if early:
        return decided, True
    session.decisions[proposal.operation_key] = decided.model_dump(mode="json")
    state.operations[(proposal.tenant_id, proposal.operation_key)] = session_key(
        session.tenant_id, session.session_id
    )
    if decided.decision == "allow":
        tenant.tool_calls.setdefault(proposal.tool, []).append(proposal.operation_key)
        session.tools[proposal.operation_key] = proposal.tool
    _remember_decision(session, decided)
    return decided, True


def _sign(
    proposal: ToolCallProposed, decision: Decision, config: GovernorConfig, event_id: str | None
) -> PolicyDecided:
    return build_policy_decided(
        proposal,
        decision,
        key=config.signing_key,
        key_id=config.key_id,
        evaluation_us=0,  # no measured durations in the log: a rebuild re-derives every byte
        ttl=config.decision_ttl,
        now=proposal.occurred_at,
        event_id=event_id,
    )


def _remember_decision(session: SessionEntry, decided: PolicyDecided) -> None:
    """Policy memory: an immutable record, chained to the one before by its hash."""
    if not session.policy_head:
        session.policy_head = policy_genesis(session.session_id)
    record = {
        "seq": len(session.policy),
        "event_id": decided.event_id,
        "at": iso(decided.occurred_at),
        "operation_key": decided.operation_key,
        "tool": decided.tool,
        "action": decided.action,
        "decision": str(decided.decision),
        "reason_code": decided.reason_code,
        "rule_id": decided.rule_id,
        "policy_version": decided.policy_version,
        "signature": decided.signature,
        "prev_hash": session.policy_head,
    }
    digest = hashlib.sha256(session.policy_head.encode() + canonical(record)).hexdigest()
    session.policy.append(PolicyRecord(**record, hash=digest))
    session.policy_head = digest


def policy_genesis(session_id: str) -> str:
    return hashlib.sha256(f"govstream.policy-memory:{session_id}".encode()).hexdigest()


def policy_chain_ok(session: SessionEntry) -> int | None:
    """None when every policy record chains to the one before; else the first bad seq."""
    head = policy_genesis(session.session_id)
    for record in session.policy:
        body = record.to_json()
        del body["hash"]
        digest = hashlib.sha256(head.encode() + canonical(body)).hexdigest()
        if record.prev_hash != head or record.hash != digest:
            return record.seq
        head = record.hash
    return None


def _proposed(
    state: PartitionState,
    session: SessionEntry,
    event: ToolCallProposed,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    status = session.status
    _, out = _lifecycle(session, event, config)
    decided, _ = _decide(state, session, event, status, log_ms, config)
    if decided.reason_code == NOT_STARTED:
        # Nor is the proposal remembered: the runtime's retry once the session
        # started (the same idempotency key) is decided, not suppressed.
        session.applied.pop(event.idempotency_key, None)
    out.append(decided)
    return Folded(out)


def _completed_tool(
    state: PartitionState,
    session: SessionEntry,
    event: ToolCallCompleted,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    _, out = _lifecycle(session, event, config)
    tool = session.tools.pop(event.operation_key, None)
    if tool is not None:
        calls = state.tenant(event.tenant_id).tool_calls.get(tool)
        if calls and event.operation_key in calls:
            calls.remove(event.operation_key)
    return Folded(out)


# --- admission requests -----------------------------------------------------------------------


def _admission(
    state: PartitionState,
    session: SessionEntry,
    event: AdmissionRequested,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    if event.request_kind == "tool":
        return _admit_tool(state, session, event, log_ms, config)
    return _admit_turn(state, session, event, log_ms, config)


def _admission_decided(event: AdmissionRequested, **fields: Any) -> AdmissionDecided:
    event_id = _id("AdmissionDecided", event.event_id)
    return AdmissionDecided(
        **event.envelope_for_derived(event_id, f"admission/{event.event_id}", PRODUCER),
        request_kind=event.request_kind,
        **fields,
    )


def _admit_tool(
    state: PartitionState,
    session: SessionEntry,
    event: AdmissionRequested,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    proposal = ToolCallProposed(
        **event.envelope_for_derived(event.event_id, event.idempotency_key, event.producer),
        tool=event.tool or "",
        action=event.action or "",
        operation_key=event.operation_key or "",
        destination_host=event.destination_host,
        method=event.method or "POST",
        payload_bytes=event.payload_bytes,
        risk_level=event.risk_level or "critical",
    )
    decided, new = _decide(state, session, proposal, session.status, log_ms, config)
    outcome = _TOOL_OUTCOME[decided.decision]
    recorded = _admission_decided(event, decision=outcome, reason_code=decided.reason_code)
    answer = {
        "decision": outcome,
        "reason_code": decided.reason_code,
        "policy_decision": decided.model_dump(mode="json"),
    }
    return Folded([decided, recorded] if new else [recorded], answer)


def _admit_turn(
    state: PartitionState,
    session: SessionEntry,
    event: AdmissionRequested,
    log_ms: int,
    config: GovernorConfig,
) -> Folded:
    now_ms = max(log_ms, state.clock_ms)
    budgets.expire(session, state, now_ms)
    model = event.model or ""

    def refused(decision: str, code: str, remaining: dict[str, int | None] | None = None) -> Folded:
        recorded = _admission_decided(
            event, decision=decision, reason_code=code, estimated_tokens=event.estimated_tokens
        )
        answer = _turn_answer(decision, code, None, None, remaining or {}, recorded)
        return Folded([recorded], answer)

    if config.refuse_unknown_tenants and not budgets.known(state, event.tenant_id):
        return refused("deny", "UNKNOWN_TENANT")
    verdict = session.verdict
    if verdict is not None and verdict["action"] == "suspend":
        return refused("deny", "SESSION_SUSPENDED_BY_BUDGET")
    # An unpriced model is charged at the deployment's fallback price (and said so).
    prices, at_fallback = prices_for(config.prices, model, event.occurred_at, config.fallback_price)
    try:
        candidates = [model] if at_fallback else [model, *fallback_chain(prices, model)]
    except KeyError:
        return refused("deny", "UNKNOWN_MODEL")
    if verdict is not None and verdict.get("fallback_model") in candidates:
        # A degraded session keeps to the fallback model (or cheaper).
        candidates = candidates[candidates.index(verdict["fallback_model"]) :]
    if config.budget_policy.action_for(session.tier or "C") != "degrade":
        candidates = candidates[:1]
    workflow = event.workflow_id or session.workflow_id
    # Requests are stamped when the API receives them and appended concurrently, so
    # one may reach the log after a later one rolled a period: it asks about now.
    charges = budgets.scopes(
        state, session, workflow, event.occurred_at, config, late_joins_current=True
    )
    if charges is None:  # cannot be: late_joins_current never refuses
        raise RuntimeError("admission found no balances for a turn")
    refusal = "GLOBAL_RATE_LIMITED"
    for candidate in candidates:
        amounts = budgets.reservation_amounts(charges, candidate, event.estimated_tokens, prices)
        remaining: dict[str, int | None] = {}
        short = None
        for charge in charges:
            room = budgets.headroom(charge, now_ms)
            amount = amounts[charge.scope.kind]
            if room is not None and amount > room:
                short = short or charge.scope
            remaining[charge.scope.kind] = None if room is None else room - amount
        if short is None:
            rid = _id("reservation", event.event_id)
            expires = now_ms + config.reservation_ms
            for charge in charges:
                charge.balance.reserved[rid] = (amounts[charge.scope.kind], expires)
            session.reservations[rid] = {
                "model": candidate,
                "expires_ms": expires,
                "workflow_id": workflow,
            }
            degraded = candidate != model
            decision = "degrade" if degraded else "allow"
            code = (
                "ADMITTED_AT_FALLBACK_PRICE"
                if at_fallback
                else "DEGRADED_TO_CHEAPER_MODEL"
                if degraded
                else "ADMITTED"
            )
            token_kinds = ("session_tokens", "workflow_tokens", "global_tokens_minute")
            tokens_left = [v for k, v in remaining.items() if k in token_kinds and v is not None]
            recorded = _admission_decided(
                event,
                decision=decision,
                reason_code=code,
                model=candidate,
                estimated_tokens=event.estimated_tokens,
                remaining_tokens=min(tokens_left) if tokens_left else None,
                reservation_id=rid,
            )
            return Folded(
                [recorded], _turn_answer(decision, code, candidate, rid, remaining, recorded)
            )
        if short.kind == "global_tokens_minute":
            return refused("defer", "GLOBAL_RATE_LIMITED", remaining)
        refusal = _EXHAUSTED[short.kind]
        if short.kind not in budgets.COST_KINDS:
            break  # a cheaper model needs as many tokens
    return refused("deny", refusal)


def _turn_answer(
    decision: str,
    code: str,
    model: str | None,
    rid: str | None,
    remaining: dict[str, int | None],
    recorded: AdmissionDecided,
) -> dict[str, Any]:
    return {
        "decision": decision,
        "reason_code": code,
        "reason": ADMISSION_REASONS[code],
        "model": model,
        "reservation_id": rid,
        "remaining": remaining,
        "event_id": recorded.event_id,
    }


# --- tenant profiles ------------------------------------------------------------------------------


def _profile(
    state: PartitionState, event: TenantProfileUpdated, log_ms: int, config: GovernorConfig
) -> Folded:
    """A profile relayed into the tenant's log: from here on, its limits and plan apply."""
    tenant = state.tenant(event.tenant_id)
    if any(p[2]["event_id"] == event.event_id for p in tenant.profiles):
        return _NOTHING
    tenant.latest_version += 1
    tenant.profiles.append((tenant.latest_version, log_ms, event.model_dump(mode="json")))
    del tenant.profiles[: -config.tenant_versions]
    return _NOTHING


Handler = Callable[[PartitionState, SessionEntry, Any, int, GovernorConfig], Folded]
_HANDLERS: dict[type, Handler] = {
    SessionStarted: _started,
    TurnCompleted: _turn,
    ToolCallProposed: _proposed,
    ApprovalRecorded: _lifecycle_only,
    ToolCallCompleted: _completed_tool,
    TaskSummaryUpdated: _task,
    CheckpointCreated: _task,
    SessionSuspended: _lifecycle_only,
    SessionQuarantined: _lifecycle_only,
    SessionResumed: _resumed,
    SessionClosed: _ended,
    SessionFailed: _ended,
    AdmissionRequested: _admission,
}
