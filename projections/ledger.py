"""Budget scopes, thresholds, exceeded actions and derived budget events. Pure.

The vocabulary the governor's fold (projections/governor) budgets with; the
balances themselves (usage, reservations, periods) live in its typed state
(projections/governor/state.py) and are charged by
projections/governor/budgets.py. No I/O and no clock reads: every time comes
from an argument or an event, so a live fold and a replay from offset zero
derive the same events.

- A `Scope` names one budget: (kind, key, period). Periods are plain UTC
  strings ("2026-11-23", "2026-11", "2026-11-23T14:05"), never windows: a
  budget rolls over at UTC midnight, on the first of the month and on the
  minute. Balance kinds (session and workflow tokens, tenant cost per day and
  month, global tokens per minute) and concurrency limits (sessions per
  tenant, calls per tool) share the one naming.
- `crossed_thresholds`: which of 50/80/100% of a limit a usage has reached,
  in integer arithmetic; reaching `EXCEEDED_PCT` is exceeding the budget.
- `BudgetPolicy` / `decide_action`: what exceeding does, per session tier:
  suspend, or degrade to the next cheaper model of the fallback tree
  (`fallback_model` / `fallback_chain`, by blended marginal price).
- `warning_event` / `exceeded_event`: the derived BudgetWarning and
  BudgetExceeded, with ids (`derived_event_id`) and idempotency keys that a
  replay derives identically.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from events.models import BudgetExceeded, BudgetWarning, SessionEvent
from projections.pricing import ModelPrice

__all__ = [
    "DEFAULT_POLICY",
    "EXCEEDED_PCT",
    "PRODUCER",
    "THRESHOLDS",
    "BudgetPolicy",
    "Exceeded",
    "ExceededAction",
    "Scope",
    "ThresholdCrossed",
    "crossed_thresholds",
    "day_period",
    "decide_action",
    "derived_event_id",
    "exceeded_event",
    "fallback_chain",
    "fallback_model",
    "global_minute_scope",
    "minute_period",
    "month_period",
    "session_scope",
    "tenant_day_scope",
    "tenant_month_scope",
    "tenant_sessions_scope",
    "tool_calls_scope",
    "warning_event",
    "workflow_scope",
]

PRODUCER = "govstream-budget/0.1"
THRESHOLDS: tuple[int, ...] = (50, 80, 100)
EXCEEDED_PCT = 100

# Fixed namespace: derived event ids must be the same on every replay.
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://govstream/budget-ledger")


# --- scopes --------------------------------------------------------------------

ScopeKind = Literal[
    "session_tokens",
    "workflow_tokens",
    "tenant_cost_day",
    "tenant_cost_month",
    "global_tokens_minute",
    "tenant_concurrent_sessions",
    "tool_concurrent_calls",
]

GLOBAL_KEY = "global"

# The vocabulary of BudgetWarning/BudgetExceeded.scope ("session | workflow |
# tenant_day | tenant_month | ...").
_EVENT_SCOPE: dict[str, str] = {
    "session_tokens": "session",
    "workflow_tokens": "workflow",
    "tenant_cost_day": "tenant_day",
    "tenant_cost_month": "tenant_month",
    "global_tokens_minute": "global_minute",
    "tenant_concurrent_sessions": "tenant_sessions",
    "tool_concurrent_calls": "tool_calls",
}


@dataclass(frozen=True, order=True)
class Scope:
    """One budget: kind, key (session/workflow/tenant id, "global", tool) and period."""

    kind: ScopeKind
    key: str
    period: str = ""  # "" = no calendar period (the session window, a workflow)

    @property
    def event_scope(self) -> str:
        """The name used in BudgetWarning/BudgetExceeded.scope."""
        return _EVENT_SCOPE[self.kind]

    @property
    def event_scope_key(self) -> str:
        """scope_key of derived events: the key, with the period when there is one."""
        return f"{self.key}@{self.period}" if self.period else self.key


def _as_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"timestamp must carry a timezone (UTC), got {at!r}")
    return at.astimezone(UTC)


def day_period(at: datetime) -> str:
    """The day of `at` in UTC, "YYYY-MM-DD": the tenant-day budget rolls over at UTC midnight."""
    return _as_utc(at).strftime("%Y-%m-%d")


def month_period(at: datetime) -> str:
    """The month of `at` in UTC, "YYYY-MM"."""
    return _as_utc(at).strftime("%Y-%m")


def minute_period(at: datetime) -> str:
    """The minute of `at` in UTC, "YYYY-MM-DDTHH:MM"."""
    return _as_utc(at).strftime("%Y-%m-%dT%H:%M")


def session_scope(session_id: str) -> Scope:
    return Scope("session_tokens", session_id)


def workflow_scope(workflow_id: str) -> Scope:
    return Scope("workflow_tokens", workflow_id)


def tenant_day_scope(tenant_id: str, at: datetime) -> Scope:
    return Scope("tenant_cost_day", tenant_id, day_period(at))


def tenant_month_scope(tenant_id: str, at: datetime) -> Scope:
    return Scope("tenant_cost_month", tenant_id, month_period(at))


def global_minute_scope(at: datetime) -> Scope:
    return Scope("global_tokens_minute", GLOBAL_KEY, minute_period(at))


def tenant_sessions_scope(tenant_id: str) -> Scope:
    return Scope("tenant_concurrent_sessions", tenant_id)


def tool_calls_scope(tool: str) -> Scope:
    return Scope("tool_concurrent_calls", tool)


# --- thresholds ------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdCrossed:
    pct: int
    used: int
    limit: int


@dataclass(frozen=True)
class Exceeded:
    used: int
    limit: int


def crossed_thresholds(
    used: int, limit: int | None, thresholds: Iterable[int] = THRESHOLDS
) -> frozenset[int]:
    """Thresholds (percent of limit) that `used` has reached. Integer arithmetic only."""
    if limit is None or used <= 0:  # nothing used: a zero budget is not yet crossed
        return frozenset()
    return frozenset(pct for pct in thresholds if used * 100 >= pct * limit)


# --- what happens on exceeding: policy and model fallback ----------------------------

ExceededAction = Literal["suspend", "degrade"]


def _default_actions() -> dict[str, ExceededAction]:
    # Interactive and assistive sessions keep working on a cheaper model;
    # async jobs can wait for the next period or an operator.
    return {"A": "degrade", "B": "degrade", "C": "suspend"}


@dataclass(frozen=True)
class BudgetPolicy:
    """Tier -> action when a budget is exceeded."""

    actions: Mapping[str, ExceededAction] = field(default_factory=_default_actions)
    otherwise: ExceededAction = "suspend"  # unknown tier: the safe choice

    def action_for(self, tier: str) -> ExceededAction:
        return self.actions.get(tier, self.otherwise)


DEFAULT_POLICY = BudgetPolicy()


def _blended(price: ModelPrice) -> Decimal:
    # Marginal cost of a token pair: input + output price per Mtok.
    return price.input_per_mtok + price.output_per_mtok


def fallback_model(prices: Mapping[str, ModelPrice], model: str) -> str | None:
    """The next cheaper model by blended marginal cost; None if `model` is the cheapest.

    "Next cheaper" is the most expensive model strictly cheaper than `model`
    (ties broken by name, so the answer is deterministic). Unknown model ->
    KeyError, as in pricing.
    """
    current = _blended(prices[model])
    cheaper = [(_blended(p), name) for name, p in prices.items() if _blended(p) < current]
    if not cheaper:
        return None
    best = max(cost for cost, _ in cheaper)
    return min(name for cost, name in cheaper if cost == best)


def fallback_chain(prices: Mapping[str, ModelPrice], model: str) -> list[str]:
    """Every step down from `model` to the cheapest model (the fallback tree's path)."""
    chain: list[str] = []
    nxt = fallback_model(prices, model)
    while nxt is not None:
        chain.append(nxt)
        nxt = fallback_model(prices, nxt)
    return chain


def decide_action(
    policy: BudgetPolicy, tier: str, prices: Mapping[str, ModelPrice], model: str | None
) -> tuple[ExceededAction, str | None]:
    """(action, fallback model). Degrading without a cheaper model means suspending."""
    action = policy.action_for(tier)
    if action == "suspend" or model is None:
        return "suspend", None
    try:
        fallback = fallback_model(prices, model)
    except KeyError:  # an unpriced model has no place in the tree
        fallback = None
    if fallback is None:
        return "suspend", None
    return "degrade", fallback


# --- outcomes -> derived events ----------------------------------------------------


def derived_event_id(cause_event_id: str, scope: Scope, event_type: str, pct: int) -> str:
    """uuid5 over (cause, scope, type, pct): a replay derives the same event id."""
    # JSON keeps the parts unambiguous whatever characters the ids hold.
    name = json.dumps([cause_event_id, scope.kind, scope.key, scope.period, event_type, pct])
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def _envelope(cause: SessionEvent, event_id: str) -> dict[str, Any]:
    # The key is deterministic too, so the dedupe step recognises a re-derived event.
    return cause.envelope_for_derived(event_id, event_id, PRODUCER)


def warning_event(cause: SessionEvent, scope: Scope, crossed: ThresholdCrossed) -> BudgetWarning:
    event_id = derived_event_id(cause.event_id, scope, "BudgetWarning", crossed.pct)
    return BudgetWarning(
        **_envelope(cause, event_id),
        scope=scope.event_scope,
        scope_key=scope.event_scope_key,
        limit=crossed.limit,
        used=crossed.used,
        threshold_pct=crossed.pct,
    )


def exceeded_event(
    cause: SessionEvent,
    scope: Scope,
    exceeded: Exceeded,
    action: ExceededAction,
    fallback: str | None,
) -> BudgetExceeded:
    event_id = derived_event_id(cause.event_id, scope, "BudgetExceeded", EXCEEDED_PCT)
    return BudgetExceeded(
        **_envelope(cause, event_id),
        scope=scope.event_scope,
        scope_key=scope.event_scope_key,
        limit=exceeded.limit,
        used=exceeded.used,
        action=action,
        fallback_model=fallback,
    )
