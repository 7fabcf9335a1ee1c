"""The budget processor's core: one tenant's budgets as table entries. Pure.

The ledger (projections/ledger.py) does the arithmetic of one scope; this
module decides which scopes an event touches, where they live in the table and
what is emitted. The Faust agent (streams/budget.py) reads entries, calls
`apply` or `admit_turn`, writes back `BudgetStep.changes` and sends the events.

Everything for a tenant lives under the tenant's partition of the
budget-input topic (keyed by tenant_id): tenant-level limits see all of the
tenant's sessions. Table keys are strings:

    b|<tenant>|<kind>|<key>|<period>   a Balance (tokens or micro-dollars)
    g|<tenant>|<kind>|<key>            a Gauge (concurrent sessions, calls per tool)
    s|<tenant>|<session_id>            session meta: tier, open reservations,
                                       open tool calls, budget verdict

The global tokens-per-minute envelope cannot be one entry: tenants live on
every partition. Each partition enforces an equal share of it
(limit // partitions), under the key b|*|global_tokens_minute|p<N>|<minute>.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from events.models import (
    AdmissionDecided,
    BudgetExceeded,
    BudgetWarning,
    PolicyDecided,
    SessionClosed,
    SessionEvent,
    SessionFailed,
    SessionStarted,
    TenantBudgets,
    ToolCallCompleted,
    TurnCompleted,
)
from projections.ledger import (
    DEFAULT_KEY_BOUND,
    DEFAULT_POLICY,
    Balance,
    BudgetPolicy,
    Committed,
    Exceeded,
    Gauge,
    Refused,
    Scope,
    ScopedOutcome,
    acquire,
    budget_events,
    commit,
    exceeded_event,
    fallback_chain,
    global_minute_scope,
    hold,
    limit_for,
    release,
    release_slot,
    session_scope,
    set_limit,
    tenant_day_scope,
    tenant_month_scope,
    tenant_sessions_scope,
    tool_calls_scope,
    turn_charges,
    turn_key,
    workflow_scope,
)
from projections.pricing import ModelPrice, cost_usd_micros

__all__ = [
    "ADMISSION_REASONS",
    "BudgetConfig",
    "BudgetStep",
    "TurnAdmission",
    "TurnRequest",
    "admit_turn",
    "apply",
    "balance_key",
    "reservation_amounts",
    "session_key",
]

PRODUCER = "govstream-admission/0.1"
_ADMISSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://govstream/admission")

# reason_code -> meaning, for turn admissions (README "Admission reason codes").
ADMISSION_REASONS: dict[str, str] = {
    "ADMITTED": "every budget has room for the estimate; it is reserved",
    "DEGRADED_TO_CHEAPER_MODEL": "the requested model does not fit the cost budget "
    "(or the session was degraded); a cheaper model from the fallback tree does",
    "SESSION_SUSPENDED_BY_BUDGET": "a budget of this session was exceeded and its tier suspends",
    "SESSION_TOKENS_EXHAUSTED": "the session's token budget has no room for the estimate",
    "WORKFLOW_TOKENS_EXHAUSTED": "the workflow's cumulative token budget has no room",
    "TENANT_DAY_COST_EXHAUSTED": "the tenant's daily cost budget has no room, at any model",
    "TENANT_MONTH_COST_EXHAUSTED": "the tenant's monthly cost budget has no room, at any model",
    "GLOBAL_RATE_LIMITED": "the global tokens-per-minute envelope is full: retry next minute",
    "UNKNOWN_MODEL": "the model has no price, so its cost cannot be reserved",
}

_EXHAUSTED_REASON = {
    "session_tokens": "SESSION_TOKENS_EXHAUSTED",
    "workflow_tokens": "WORKFLOW_TOKENS_EXHAUSTED",
    "tenant_cost_day": "TENANT_DAY_COST_EXHAUSTED",
    "tenant_cost_month": "TENANT_MONTH_COST_EXHAUSTED",
}

_COST_KINDS = frozenset({"tenant_cost_day", "tenant_cost_month"})


@dataclass(frozen=True)
class BudgetConfig:
    prices: Mapping[str, ModelPrice]
    policy: BudgetPolicy = DEFAULT_POLICY
    global_tokens_per_minute: int | None = None
    partitions: int = 1
    reservation_timeout: timedelta = timedelta(seconds=60)
    key_bound: int = DEFAULT_KEY_BOUND

    @property
    def global_share(self) -> int | None:
        """This partition's share of the global envelope."""
        if self.global_tokens_per_minute is None:
            return None
        return max(1, self.global_tokens_per_minute // self.partitions)


@dataclass
class BudgetStep:
    """What one event does: table writes (None = delete) and events to send."""

    changes: dict[str, Any] = field(default_factory=dict)
    derived: list[SessionEvent] = field(default_factory=list)  # to the derived topic
    signals: list[SessionEvent] = field(default_factory=list)  # to the session's owner


# --- table keys -------------------------------------------------------------------


def balance_key(tenant_id: str, scope: Scope, partition: int) -> str:
    if scope.kind == "global_tokens_minute":
        return f"b|*|global_tokens_minute|p{partition}|{scope.period}"
    return f"b|{tenant_id}|{scope.kind}|{scope.key}|{scope.period}"


def gauge_key(tenant_id: str, scope: Scope) -> str:
    return f"g|{tenant_id}|{scope.kind}|{scope.key}"


def session_key(tenant_id: str, session_id: str) -> str:
    return f"s|{tenant_id}|{session_id}"


def _new_meta(tier: str | None = None, workflow_id: str | None = None) -> dict[str, Any]:
    return {
        "tier": tier,
        "workflow_id": workflow_id,
        # [[reservation_id, reserved_at iso, {balance key: amount}]], oldest first
        "reservations": [],
        "tools": {},  # operation_key -> tool, calls holding a slot
        "verdict": None,  # {"action", "scope", "fallback_model"} once a budget is exceeded
    }


class _View:
    """Reads through pending writes: a step sees its own changes."""

    def __init__(self, table: Mapping[str, Any], changes: dict[str, Any]) -> None:
        self.table, self.changes = table, changes

    def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self.table.get(key)


def _limit(scope: Scope, budgets: TenantBudgets, config: BudgetConfig) -> int | None:
    if scope.kind == "tool_concurrent_calls":
        return budgets.concurrent_calls_per_tool
    return limit_for(scope, budgets, config.global_share)


def _balance(view: _View, key: str, limit: int | None, config: BudgetConfig) -> Balance:
    raw = view.get(key)
    balance = Balance.from_dict(raw) if raw is not None else Balance(key_bound=config.key_bound)
    return set_limit(balance, limit)


_KEEP = -1  # _gauge: keep the stored limit (a release needs no plan)


def _gauge(view: _View, key: str, limit: int | None, config: BudgetConfig) -> Gauge:
    raw = view.get(key)
    if raw is None:
        return Gauge(limit=None if limit == _KEEP else limit, key_bound=config.key_bound)
    return Gauge(
        limit=raw["limit"] if limit == _KEEP else limit,
        holders={h: datetime.fromisoformat(at) for h, at in raw["holders"].items()},
        applied_keys=tuple(raw["applied_keys"]),
        key_bound=raw["key_bound"],
    )


def _gauge_dict(gauge: Gauge) -> dict[str, Any]:
    return {
        "limit": gauge.limit,
        "holders": {h: at.isoformat() for h, at in gauge.holders.items()},
        "applied_keys": list(gauge.applied_keys),
        "key_bound": gauge.key_bound,
    }


# --- reservations -------------------------------------------------------------------


def _turn_scopes(
    tenant_id: str, session_id: str, workflow_id: str | None, at: datetime
) -> list[Scope]:
    scopes = [session_scope(session_id)]
    if workflow_id is not None:
        scopes.append(workflow_scope(workflow_id))
    return [
        *scopes,
        tenant_day_scope(tenant_id, at),
        tenant_month_scope(tenant_id, at),
        global_minute_scope(at),
    ]


def reservation_amounts(
    config: BudgetConfig,
    tenant_id: str,
    session_id: str,
    workflow_id: str | None,
    model: str,
    estimated_tokens: int,
    at: datetime,
    partition: int,
) -> dict[str, int]:
    """{balance key: amount} a turn estimate reserves.

    Tokens for token scopes; for cost scopes the estimate priced as if every
    token were an output token (the dearer side): an upper bound, so a
    reservation never lets a turn overspend. Unknown model -> KeyError.
    """
    cost = cost_usd_micros(config.prices, model, 0, estimated_tokens)
    return {
        balance_key(tenant_id, scope, partition): cost
        if scope.kind in _COST_KINDS
        else estimated_tokens
        for scope in _turn_scopes(tenant_id, session_id, workflow_id, at)
    }


def _expired(reserved_at: str, now: datetime, config: BudgetConfig) -> bool:
    return now - datetime.fromisoformat(reserved_at) >= config.reservation_timeout


# --- admission (request time) -----------------------------------------------------


@dataclass(frozen=True)
class TurnRequest:
    tenant_id: str
    session_id: str
    workflow_id: str | None
    model: str
    estimated_tokens: int


@dataclass(frozen=True)
class TurnAdmission:
    decision: Literal["allow", "degrade", "defer", "deny"]
    reason_code: str
    model: str | None  # the model to use (the fallback when degraded)
    amounts: dict[str, int]  # what is reserved, by balance key; {} unless allow/degrade
    remaining: dict[str, int | None]  # per scope kind, after this reservation

    @property
    def reserves(self) -> bool:
        return self.decision in ("allow", "degrade")


def _headroom(
    view: _View,
    key: str,
    limit: int | None,
    pending: Mapping[str, int],
    now: datetime,
    config: BudgetConfig,
) -> int | None:
    """Room left in a balance at `now`, counting reservations not yet applied.

    Reservations past the timeout count as released even before the agent
    releases them.
    """
    if limit is None:
        return None
    raw = view.get(key)
    used = held = 0
    if raw is not None:
        used = raw["used"]
        held = sum(
            amount for amount, at in raw["reserved"].values() if not _expired(at, now, config)
        )
    return limit - used - held - pending.get(key, 0)


def admit_turn(
    table: Mapping[str, Any],
    request: TurnRequest,
    budgets: TenantBudgets,
    partition: int,
    config: BudgetConfig,
    pending: Mapping[str, int],
    now: datetime,
) -> TurnAdmission:
    """May this turn run, at which model? Reads only; the caller reserves.

    `pending` is what admissions already answered but not yet applied by the
    agent hold, per balance key: with it, concurrent requests on the owning
    worker cannot overspend between the answer and the agent's write.
    """
    view = _View(table, {})
    meta = view.get(session_key(request.tenant_id, request.session_id)) or _new_meta()
    verdict = meta.get("verdict")
    if verdict is not None and verdict["action"] == "suspend":
        return TurnAdmission("deny", "SESSION_SUSPENDED_BY_BUDGET", None, {}, {})
    workflow_id = request.workflow_id or meta.get("workflow_id")
    tier = meta.get("tier") or "C"

    candidates = [request.model]
    try:
        candidates += fallback_chain(config.prices, request.model)
    except KeyError:
        return TurnAdmission("deny", "UNKNOWN_MODEL", None, {}, {})
    if verdict is not None and verdict.get("fallback_model") in candidates:
        # A degraded session keeps to the fallback model (or cheaper).
        candidates = candidates[candidates.index(verdict["fallback_model"]) :]
    if config.policy.action_for(tier) != "degrade":
        candidates = candidates[:1]

    scopes = _turn_scopes(request.tenant_id, request.session_id, workflow_id, now)
    refusal = "GLOBAL_RATE_LIMITED"
    for model in candidates:
        amounts = reservation_amounts(
            config,
            request.tenant_id,
            request.session_id,
            workflow_id,
            model,
            request.estimated_tokens,
            now,
            partition,
        )
        remaining: dict[str, int | None] = {}
        short: Scope | None = None
        for scope in scopes:
            key = balance_key(request.tenant_id, scope, partition)
            room = _headroom(view, key, _limit(scope, budgets, config), pending, now, config)
            if room is not None and amounts[key] > room:
                short = short or scope
            remaining[scope.kind] = None if room is None else room - amounts[key]
        if short is None:
            degraded = model != request.model
            return TurnAdmission(
                "degrade" if degraded else "allow",
                "DEGRADED_TO_CHEAPER_MODEL" if degraded else "ADMITTED",
                model,
                amounts,
                remaining,
            )
        if short.kind == "global_tokens_minute":
            return TurnAdmission("defer", "GLOBAL_RATE_LIMITED", None, {}, remaining)
        refusal = _EXHAUSTED_REASON[short.kind]
        if short.kind not in _COST_KINDS:
            break  # a cheaper model needs as many tokens
    return TurnAdmission("deny", refusal, None, {}, {})


def admission_event(
    request: TurnRequest,
    admission: TurnAdmission,
    reservation_id: str | None,
    now: datetime,
    environment: str,
) -> AdmissionDecided:
    """The AdmissionDecided that records a turn admission (and carries its reservation)."""
    event_id = str(uuid.uuid4())
    token_room = [
        v
        for k, v in admission.remaining.items()
        if k in ("session_tokens", "workflow_tokens", "global_tokens_minute") and v is not None
    ]
    return AdmissionDecided(
        event_id=event_id,
        occurred_at=now,
        tenant_id=request.tenant_id,
        session_id=request.session_id,
        workflow_id=request.workflow_id,
        idempotency_key=f"admission/{event_id}",
        environment=environment,
        producer=PRODUCER,
        request_kind="turn",
        decision=admission.decision,
        reason_code=admission.reason_code,
        model=admission.model,
        estimated_tokens=request.estimated_tokens,
        remaining_tokens=min(token_room) if token_room else None,
        reservation_id=reservation_id,
    )


# --- the stream side: apply one event ------------------------------------------------


def _verdict_events(
    cause: SessionEvent, outcomes: list[ScopedOutcome], tier: str, config: BudgetConfig
) -> tuple[list[BudgetWarning | BudgetExceeded], dict[str, Any] | None]:
    """Warnings and exceedings of one turn, and the session's verdict if any.

    The global envelope is a rate limit shared by every tenant on the
    partition: exceeding it is reported (action "deny": admission defers
    until the next minute) but never suspends or degrades a session.
    """
    assert isinstance(cause, TurnCompleted)
    events = budget_events(cause, outcomes, tier, config.prices, config.policy)
    verdict = None
    for index, event in enumerate(events):
        if not isinstance(event, BudgetExceeded):
            continue
        if event.scope == "global_minute":
            events[index] = event.model_copy(update={"action": "deny", "fallback_model": None})
        else:
            verdict = {
                "action": event.action,
                "scope": event.scope,
                "fallback_model": event.fallback_model,
            }
    return events, verdict


def _expire_session(
    view: _View,
    step: BudgetStep,
    meta: dict[str, Any],
    now: datetime,
    config: BudgetConfig,
    *,
    all_: bool = False,
) -> dict[str, Any]:
    """Release the session's reservations that timed out (or all of them)."""
    kept = []
    for rid, at, amounts in meta["reservations"]:
        if all_ or _expired(at, now, config):
            for key in amounts:
                raw = view.get(key)
                if raw is not None:
                    balance, _ = release(Balance.from_dict(raw), rid)
                    step.changes[key] = balance.to_dict()
        else:
            kept.append([rid, at, amounts])
    return {**meta, "reservations": kept}


_ROLLED = frozenset({"global_tokens_minute", "tenant_cost_day"})


def _current_period(step: BudgetStep, view: _View, key: str) -> bool:
    """Keep one balance per rolling scope: the newest period's.

    Minute and day balances would otherwise pile up forever (the month
    balance and the archive keep the history). A newer period drops the
    previous one; an older period (a late event) is not current: its charge
    or hold is skipped rather than bringing a closed period back.
    """
    marker = f"m|{key.rsplit('|', 1)[0]}"
    previous = view.get(marker)
    if previous is not None and key < previous:
        return False
    if previous != key:
        if previous is not None:
            step.changes[previous] = None
        step.changes[marker] = key
    return True


def apply(
    table: Mapping[str, Any],
    event: SessionEvent,
    budgets: TenantBudgets,
    partition: int,
    config: BudgetConfig,
) -> BudgetStep:
    """Fold one event of the budget-input topic into the tenant's entries."""
    step = BudgetStep()
    view = _View(table, step.changes)
    tenant, session = event.tenant_id, event.session_id
    skey = session_key(tenant, session)
    meta: dict[str, Any] = view.get(skey) or _new_meta(workflow_id=event.workflow_id)
    meta = _expire_session(view, step, meta, event.occurred_at, config)

    if isinstance(event, SessionStarted):
        meta = {**meta, "tier": event.tier, "workflow_id": event.workflow_id}
        scope = tenant_sessions_scope(tenant)
        gkey = gauge_key(tenant, scope)
        gauge, out = acquire(
            _gauge(view, gkey, _limit(scope, budgets, config), config), session, event.occurred_at
        )
        step.changes[gkey] = _gauge_dict(gauge)
        if any(isinstance(o, Refused) for o in out):
            # Over the tenant's concurrent sessions: the tier's action, without a fallback.
            exceeded = exceeded_event(
                event, scope, Exceeded(gauge.in_use + 1, gauge.limit or 0), "suspend", None
            )
            step.signals.append(exceeded)
            meta = {
                **meta,
                "verdict": {"action": "suspend", "scope": exceeded.scope, "fallback_model": None},
            }

    elif isinstance(event, TurnCompleted):
        reservation_id = meta["reservations"][0][0] if meta["reservations"] else None
        outcomes: list[ScopedOutcome] = []
        writes: dict[str, Any] = {}
        ikey = turn_key(event)
        for scope, amount in turn_charges(event):
            key = balance_key(tenant, scope, partition)
            if scope.kind in _ROLLED and not _current_period(step, view, key):
                continue  # a late turn does not reopen a closed minute or day
            balance = _balance(view, key, _limit(scope, budgets, config), config)
            balance, out = commit(balance, ikey, amount, reservation_id)
            writes[key] = balance.to_dict()
            outcomes += [ScopedOutcome(scope, o) for o in out]
        if not any(isinstance(o.outcome, Committed) for o in outcomes):
            # A redelivered turn: nothing to charge, and its session's next
            # reservation belongs to the next turn.
            step.changes[skey] = meta
            return step
        step.changes.update(writes)
        if reservation_id is not None:
            # Scopes the reservation held that the turn did not charge (a
            # different day, say) release it too.
            for key in meta["reservations"][0][2]:
                if key not in step.changes and view.get(key) is not None:
                    balance, _ = release(Balance.from_dict(view.get(key)), reservation_id)
                    step.changes[key] = balance.to_dict()
            meta = {**meta, "reservations": meta["reservations"][1:]}
        events, verdict = _verdict_events(event, outcomes, meta.get("tier") or "C", config)
        for derived in events:
            to_session = isinstance(derived, BudgetExceeded) and derived.action != "deny"
            (step.signals if to_session else step.derived).append(derived)
        if verdict is not None and (meta.get("verdict") or {}).get("action") != "suspend":
            meta = {**meta, "verdict": verdict}

    elif isinstance(event, AdmissionDecided) and event.request_kind == "turn":
        rid = event.reservation_id
        known = {r[0] for r in meta["reservations"]}
        if rid is not None and event.model is not None and rid not in known:
            if event.workflow_id is not None and meta.get("workflow_id") is None:
                meta = {**meta, "workflow_id": event.workflow_id}
            amounts = reservation_amounts(
                config,
                tenant,
                session,
                meta.get("workflow_id"),
                event.model,
                event.estimated_tokens,
                event.occurred_at,
                partition,
            )
            fresh = False
            session_balance = balance_key(tenant, session_scope(session), partition)
            scopes = _turn_scopes(tenant, session, meta.get("workflow_id"), event.occurred_at)
            for scope in scopes:
                key = balance_key(tenant, scope, partition)
                if scope.kind in _ROLLED and not _current_period(step, view, key):
                    continue
                # The plan's limit, so a balance first touched by a hold shows it.
                balance = _balance(view, key, _limit(scope, budgets, config), config)
                # The API checked the limit, counting reservations not yet applied.
                held = hold(balance, rid, amounts[key], event.occurred_at)
                if key == session_balance:
                    # The session balance lives as long as the session and
                    # remembers settled ids: it tells a new hold from a repeat.
                    fresh = held is not balance
                step.changes[key] = held.to_dict()
            if fresh:  # not a redelivery of a reservation already settled
                record = [rid, event.occurred_at.isoformat(), amounts]
                meta = {**meta, "reservations": [*meta["reservations"], record]}
        step.derived.append(event)

    elif isinstance(event, PolicyDecided) and event.decision == "allow":
        scope = tool_calls_scope(event.tool)
        gkey = gauge_key(tenant, scope)
        gauge, out = acquire(
            _gauge(view, gkey, _limit(scope, budgets, config), config),
            event.operation_key,
            event.occurred_at,
        )
        step.changes[gkey] = _gauge_dict(gauge)
        meta = {**meta, "tools": {**meta["tools"], event.operation_key: event.tool}}
        if any(isinstance(o, Refused) for o in out):
            # Detected, not prevented: the decision was already signed.
            step.derived.append(
                exceeded_event(
                    event, scope, Exceeded(gauge.in_use + 1, gauge.limit or 0), "deny", None
                )
            )

    elif isinstance(event, ToolCallCompleted):
        tool = meta["tools"].get(event.operation_key)
        if tool is not None:
            gkey = gauge_key(tenant, tool_calls_scope(tool))
            gauge, _ = release_slot(_gauge(view, gkey, _KEEP, config), event.operation_key)
            step.changes[gkey] = _gauge_dict(gauge)
            meta = {
                **meta,
                "tools": {k: v for k, v in meta["tools"].items() if k != event.operation_key},
            }

    if isinstance(event, SessionClosed | SessionFailed):
        meta = _expire_session(view, step, meta, event.occurred_at, config, all_=True)
        gkey = gauge_key(tenant, tenant_sessions_scope(tenant))
        gauge, _ = release_slot(_gauge(view, gkey, _KEEP, config), session)
        step.changes[gkey] = _gauge_dict(gauge)
        for op, tool in meta["tools"].items():
            tkey = gauge_key(tenant, tool_calls_scope(tool))
            tool_gauge, _ = release_slot(_gauge(view, tkey, _KEEP, config), op)
            step.changes[tkey] = _gauge_dict(tool_gauge)
        step.changes[balance_key(tenant, session_scope(session), partition)] = None
        step.changes[skey] = None
    else:
        step.changes[skey] = meta
    return step
