"""Budgets on the governor's typed state: charge, reserve, thresholds. Pure.

Scopes (projections.ledger.Scope names them in derived events): the session's
tokens, the workflow's cumulative tokens, the tenant's cost per UTC day and
per month, and this partition's share of the global tokens-per-minute
envelope. Limits come from the tenant's newest profile in the log.

A turn is charged at its own time (day, month and minute of occurred_at); a
period older than a balance's current one is never reopened (a late turn is
not charged there), a newer one starts the balance afresh. Reservations
(turn admissions) expire by log time. Crossing 50/80/100% of a limit derives
a BudgetWarning, 100% also a BudgetExceeded with the tier's action.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from events.models import BudgetExceeded, BudgetWarning, SessionEvent, TenantBudgets
from projections.governor.config import GovernorConfig
from projections.governor.state import (
    Balance,
    PartitionState,
    SessionEntry,
    TenantEntry,
    tenant_key,
)
from projections.ledger import (
    EXCEEDED_PCT,
    Exceeded,
    Scope,
    ThresholdCrossed,
    crossed_thresholds,
    decide_action,
    exceeded_event,
    global_minute_scope,
    session_scope,
    tenant_day_scope,
    tenant_month_scope,
    warning_event,
    workflow_scope,
)
from projections.pricing import ModelPrice, cost_usd_micros, in_force

COST_KINDS = frozenset({"tenant_cost_day", "tenant_cost_month"})


@dataclass(slots=True)
class Charge:
    """One scope a turn (or a reservation) touches: its balance and limit."""

    scope: Scope
    balance: Balance
    limit: int | None


def known(state: PartitionState, tenant_id: str) -> bool:
    """Whether the tenant has a profile in the log."""
    tenant = state.peek(tenant_key(tenant_id))
    return isinstance(tenant, TenantEntry) and bool(tenant.profiles)


def budgets_of(state: PartitionState, tenant_id: str, config: GovernorConfig) -> TenantBudgets:
    """The limits of the tenant's newest profile in the log; with no profile, the
    deployment's defaults (never unlimited by omission)."""
    tenant = state.peek(tenant_key(tenant_id))
    if not isinstance(tenant, TenantEntry) or not tenant.profiles:
        return config.default_budgets
    return _parsed(orjson.dumps(tenant.profiles[-1][2].get("budgets") or {}))


@functools.lru_cache(maxsize=4096)
def _parsed(budgets: bytes) -> TenantBudgets:
    return TenantBudgets.model_validate_json(budgets)


def scopes(
    state: PartitionState,
    session: SessionEntry,
    workflow_id: str | None,
    at: Any,
    config: GovernorConfig,
    *,
    late_joins_current: bool = False,
) -> list[Charge] | None:
    """The balances a turn at `at` touches, rolled to its periods; None when the
    turn's day, month or minute is older than a balance's (a late turn), unless
    `late_joins_current`: an admission asks about now, and a period the balance
    has already left behind means "now" is that later period."""
    tenant_id = session.tenant_id
    budgets = budgets_of(state, tenant_id, config)
    tenant = state.tenant(tenant_id)
    charges = [
        Charge(session_scope(session.session_id), session.tokens, budgets.tokens_per_session)
    ]
    if workflow_id is not None:
        workflow = state.workflow(tenant_id, workflow_id)
        charges.append(
            Charge(workflow_scope(workflow_id), workflow.tokens, budgets.tokens_per_workflow)
        )
    rolled = [
        Charge(tenant_day_scope(tenant_id, at), tenant.day, budgets.cost_per_day_usd_micros),
        Charge(tenant_month_scope(tenant_id, at), tenant.month, budgets.cost_per_month_usd_micros),
        Charge(global_minute_scope(at), state.partition().minute, config.global_share),
    ]
    for charge in rolled:
        if charge.scope.period < charge.balance.period:
            if late_joins_current:
                continue  # reserved against the balance's current period
            return None
        charge.balance.roll(charge.scope.period)
    return charges + rolled


def amount_for(scope: Scope, tokens: int, cost: int) -> int:
    return cost if scope.kind in COST_KINDS else tokens


def charge(
    charges: list[Charge],
    tokens: int,
    cost: int,
    cause: SessionEvent,
    tier: str,
    model: str | None,
    config: GovernorConfig,
) -> tuple[list[BudgetWarning | BudgetExceeded], dict[str, Any] | None]:
    """Add a turn's usage; the warnings and exceedings it derives and the verdict
    (action, scope, fallback) a session budget sets, if one was exceeded.

    The global envelope is a rate limit shared by every tenant of the
    partition: exceeding it is reported (action "deny") but never suspends or
    degrades a session.
    """
    events: list[BudgetWarning | BudgetExceeded] = []
    verdict = None
    for item in charges:
        balance = item.balance
        before = balance.used
        balance.used = before + amount_for(item.scope, tokens, cost)
        if item.limit is None:
            continue
        new = sorted(
            crossed_thresholds(balance.used, item.limit) - crossed_thresholds(before, item.limit)
        )
        for pct in new:
            events.append(
                warning_event(cause, item.scope, ThresholdCrossed(pct, balance.used, item.limit))
            )
        if EXCEEDED_PCT not in new:
            continue
        exceeded = Exceeded(balance.used, item.limit)
        if item.scope.kind == "global_tokens_minute":
            events.append(exceeded_event(cause, item.scope, exceeded, "deny", None))  # type: ignore[arg-type]
            continue
        prices = in_force(config.prices, cause.occurred_at)
        action, fallback = decide_action(config.budget_policy, tier, prices, model)
        events.append(exceeded_event(cause, item.scope, exceeded, action, fallback))
        verdict = verdict or {
            "action": action,
            "scope": item.scope.event_scope,
            "fallback_model": fallback,
        }
    return events, verdict


def reservation_amounts(
    charges: list[Charge], model: str, estimated_tokens: int, prices: Mapping[str, ModelPrice]
) -> dict[str, int]:
    """What a turn estimate reserves per scope kind: tokens, or for cost scopes the
    estimate priced (at the prices in force) as if every token were an output token
    (an upper bound). Unknown model -> KeyError."""
    cost = cost_usd_micros(prices, model, 0, estimated_tokens)
    return {c.scope.kind: amount_for(c.scope, estimated_tokens, cost) for c in charges}


def headroom(charge: Charge, now_ms: int) -> int | None:
    if charge.limit is None:
        return None
    return charge.limit - charge.balance.used - charge.balance.held(now_ms)


def release(session: SessionEntry, state: PartitionState, rid: str) -> None:
    """Drop a reservation from every balance that holds it, and from the session."""
    held = session.reservations.pop(rid, None)
    if held is None:
        return
    for balance in _balances(state, session, held):
        balance.reserved.pop(rid, None)


def _balances(state: PartitionState, session: SessionEntry, held: dict[str, Any]) -> list[Balance]:
    out = [session.tokens, state.tenant(session.tenant_id).day]
    out.append(state.tenant(session.tenant_id).month)
    out.append(state.partition().minute)
    workflow = held.get("workflow_id")
    if workflow is not None:
        out.append(state.workflow(session.tenant_id, workflow).tokens)
    return out


def expire(session: SessionEntry, state: PartitionState, now_ms: int) -> None:
    """Forget the session's reservations whose time is up (they no longer count)."""
    for rid, held in list(session.reservations.items()):
        if held["expires_ms"] <= now_ms:
            release(session, state, rid)
