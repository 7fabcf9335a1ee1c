"""The budget ledger: reserve, commit, release and threshold arithmetic. Pure.

No I/O and no clock reads: every time comes from an argument or an event, so
the live Faust tables and a replay from offset zero compute the same state.

Shape (see DESIGN.md, Processors: budget, and Pitfalls):

- A `Scope` names one budget: (kind, key, period). Periods are plain strings
  ("2026-11-23", "2026-11", "2026-11-23T14:05"), never windows, because
  windowed tables lose expiry after recovery (faust #385, #193).
- A `Balance` is the state of one scope: limit, committed usage, outstanding
  reservations, the idempotency keys already applied and the warnings already
  emitted. The keys live in the balance they protect, so a state change and
  its dedupe record are one table entry and commit together (faust #517).
- A `Gauge` is a concurrency counter (sessions per tenant, calls per tool)
  with the same discipline: acquire/release per holder id, idempotent.
- Operations return (new state, outcomes); nothing is mutated.

Admission reserves an estimate (`reserve`), the TurnCompleted commits the
actual usage (`commit`, releasing the reservation), a timeout releases it
(`release` / `expire_reservations`). Refusal counts reservations, so
concurrent admissions cannot overspend; commit never refuses, because the
turn has already happened, and that is exactly when the budget is exceeded.

Bounded memory trade-off: `applied_keys` keeps the last `key_bound` keys only.
A repeat older than that window is not caught here (it would be applied
again); the stream processor's dedupe table, with its own time window, sits in
front of the ledger and covers it. Size the bound above the number of
operations one scope sees within the dedupe window's reach of retries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from events.models import BudgetExceeded, BudgetWarning, SessionEvent, TenantBudgets, TurnCompleted
from projections.pricing import ModelPrice

__all__ = [
    "DEFAULT_KEY_BOUND",
    "DEFAULT_POLICY",
    "PRODUCER",
    "THRESHOLDS",
    "Acquired",
    "Balance",
    "BudgetPolicy",
    "Committed",
    "Duplicate",
    "Exceeded",
    "ExceededAction",
    "Gauge",
    "Ledger",
    "Outcome",
    "Refused",
    "Released",
    "Reservation",
    "Reserved",
    "Scope",
    "ScopedOutcome",
    "ThresholdCrossed",
    "acquire",
    "budget_events",
    "charge_turn",
    "charge_turn_delta",
    "commit",
    "crossed_thresholds",
    "day_period",
    "decide_action",
    "derived_event_id",
    "exceeded_event",
    "expire_reservations",
    "expire_slots",
    "fallback_chain",
    "fallback_model",
    "global_minute_scope",
    "hold",
    "limit_for",
    "minute_period",
    "month_period",
    "release",
    "release_slot",
    "reserve",
    "session_scope",
    "set_limit",
    "tenant_day_scope",
    "tenant_month_scope",
    "tenant_sessions_scope",
    "tool_calls_scope",
    "turn_charges",
    "turn_key",
    "warning_event",
    "workflow_scope",
]

PRODUCER = "govstream-budget/0.1"
THRESHOLDS: tuple[int, ...] = (50, 80, 100)
EXCEEDED_PCT = 100
# Room for the retries of a busy scope (a session window, a tenant-day) while
# keeping a table entry small; see the module docstring for the trade-off.
DEFAULT_KEY_BOUND = 1_000

# Fixed namespace: derived event ids must be the same on every replay.
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://govstream/budget-ledger")

# applied_keys holds two kinds of keys; the prefixes keep a producer's
# idempotency key from colliding with a reservation or holder id.
_COMMIT = "c:"
_SETTLED = "r:"
_HOLDER = "h:"


# --- scopes --------------------------------------------------------------------

BalanceKind = Literal[
    "session_tokens",
    "workflow_tokens",
    "tenant_cost_day",
    "tenant_cost_month",
    "global_tokens_minute",
]
GaugeKind = Literal["tenant_concurrent_sessions", "tool_concurrent_calls"]
ScopeKind = BalanceKind | GaugeKind

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


# --- outcomes --------------------------------------------------------------------


@dataclass(frozen=True)
class Reserved:
    reservation_id: str
    amount: int
    available: int | None  # what is left after this reservation; None = unlimited
    duplicate: bool = False  # the reservation was already held: nothing changed


@dataclass(frozen=True)
class Refused:
    request_id: str  # reservation id or gauge holder id
    reason: Literal["budget_exhausted", "insufficient_budget"]
    requested: int
    available: int


@dataclass(frozen=True)
class Committed:
    key: str
    amount: int
    used: int  # after this commit
    released: str | None = None  # reservation released by this commit, if it was held


@dataclass(frozen=True)
class Duplicate:
    """The key (idempotency key, reservation id, holder id) was already applied."""

    key: str


@dataclass(frozen=True)
class Released:
    request_id: str  # reservation id or gauge holder id
    amount: int
    expired: bool = False  # released by a timeout rather than explicitly


@dataclass(frozen=True)
class Acquired:
    holder_id: str
    in_use: int  # holders after this acquire
    duplicate: bool = False


@dataclass(frozen=True)
class ThresholdCrossed:
    pct: int
    used: int
    limit: int


@dataclass(frozen=True)
class Exceeded:
    used: int
    limit: int


Outcome = (
    Reserved | Refused | Committed | Duplicate | Released | Acquired | ThresholdCrossed | Exceeded
)


@dataclass(frozen=True)
class ScopedOutcome:
    scope: Scope
    outcome: Outcome


# --- balances --------------------------------------------------------------------


class Reservation(NamedTuple):
    amount: int
    reserved_at: datetime


def _check_amount(amount: int, what: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {amount!r}")


def _check_limits(limit: int | None, key_bound: int, applied_keys: tuple[str, ...]) -> None:
    """What a Balance and a Gauge both require of their limit and key window."""
    if limit is not None:
        _check_amount(limit, "limit")
    if key_bound < 1:
        raise ValueError(f"key_bound must be >= 1, got {key_bound}")
    if len(applied_keys) > key_bound:
        raise ValueError("applied_keys is longer than key_bound")


def _remember(keys: tuple[str, ...], key: str, bound: int) -> tuple[str, ...]:
    # FIFO window: the oldest key falls out first.
    if len(keys) >= bound:
        return (*keys[len(keys) - bound + 1 :], key)
    return (*keys, key)


@dataclass(frozen=True)
class Balance:
    """State of one scope. Not hashable (reservations are a dict); compare with ==.

    `reserved` is never mutated: every operation builds a new dict.
    """

    limit: int | None = None  # None = unlimited
    used: int = 0  # committed usage (tokens or micro-dollars)
    reserved: Mapping[str, Reservation] = field(default_factory=dict)
    applied_keys: tuple[str, ...] = ()  # oldest first, at most key_bound
    key_bound: int = DEFAULT_KEY_BOUND
    thresholds_emitted: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        _check_limits(self.limit, self.key_bound, self.applied_keys)
        _check_amount(self.used, "used")

    @property
    def reserved_total(self) -> int:
        return sum(r.amount for r in self.reserved.values())

    @property
    def available(self) -> int | None:
        """What a new reservation may still take; None = unlimited."""
        if self.limit is None:
            return None
        return max(0, self.limit - self.used - self.reserved_total)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for a table value (timestamps as ISO 8601)."""
        return {
            "limit": self.limit,
            "used": self.used,
            "reserved": {
                rid: [r.amount, r.reserved_at.isoformat()] for rid, r in self.reserved.items()
            },
            "applied_keys": list(self.applied_keys),
            "key_bound": self.key_bound,
            "thresholds_emitted": sorted(self.thresholds_emitted),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Balance:
        return cls(
            limit=data["limit"],
            used=data["used"],
            reserved={
                rid: Reservation(amount, datetime.fromisoformat(at))
                for rid, (amount, at) in data["reserved"].items()
            },
            applied_keys=tuple(data["applied_keys"]),
            key_bound=data["key_bound"],
            thresholds_emitted=frozenset(data["thresholds_emitted"]),
        )


def crossed_thresholds(
    used: int, limit: int | None, thresholds: Iterable[int] = THRESHOLDS
) -> frozenset[int]:
    """Thresholds (percent of limit) that `used` has reached. Integer arithmetic only."""
    if limit is None or used <= 0:  # nothing used: a zero budget is not yet crossed
        return frozenset()
    return frozenset(pct for pct in thresholds if used * 100 >= pct * limit)


def set_limit(balance: Balance, limit: int | None) -> Balance:
    """Apply a (possibly changed) plan limit.

    Warnings no longer crossed under the new limit are re-armed, so a tenant
    that upgrades its plan is warned (and stopped) again at the new limit.
    Thresholds newly crossed by a lowered limit fire at the next commit, which
    carries the session event that derived events need.
    """
    if balance.limit == limit:
        return balance
    still = balance.thresholds_emitted & crossed_thresholds(balance.used, limit)
    return replace(balance, limit=limit, thresholds_emitted=still)


def reserve(
    balance: Balance, reservation_id: str, amount: int, at: datetime
) -> tuple[Balance, list[Outcome]]:
    """Hold `amount` for a request that has not run yet; refused if it would overspend.

    Refuses when used + reserved + amount > limit. Idempotent per
    reservation_id: a held id answers Reserved(duplicate=True); an id already
    committed or released answers Duplicate (the request is over).
    """
    _check_amount(amount, "amount")
    held = balance.reserved.get(reservation_id)
    if held is not None:
        return balance, [Reserved(reservation_id, held.amount, balance.available, duplicate=True)]
    if _SETTLED + reservation_id in balance.applied_keys:
        return balance, [Duplicate(reservation_id)]
    if balance.limit is not None:
        # Not `available`: that is clamped at 0, and with usage already past
        # the limit even a zero reservation must be refused.
        headroom = balance.limit - balance.used - balance.reserved_total
        if amount > headroom:
            available = max(0, headroom)
            reason: Literal["budget_exhausted", "insufficient_budget"] = (
                "budget_exhausted" if available == 0 else "insufficient_budget"
            )
            return balance, [Refused(reservation_id, reason, amount, available)]
    reserved = {**balance.reserved, reservation_id: Reservation(amount, at)}
    new = replace(balance, reserved=reserved)
    return new, [Reserved(reservation_id, amount, new.available)]


def hold(balance: Balance, reservation_id: str, amount: int, at: datetime) -> Balance:
    """Record a reservation already granted against this balance, without a limit check.

    For the processor applying an admission the API answered (it checked the
    limit, counting reservations not yet applied). Idempotent: an id already
    held, committed or released changes nothing.
    """
    _check_amount(amount, "amount")
    if reservation_id in balance.reserved or _SETTLED + reservation_id in balance.applied_keys:
        return balance
    return replace(balance, reserved={**balance.reserved, reservation_id: Reservation(amount, at)})


def _settle(balance: Balance, reservation_id: str) -> tuple[Balance, Reservation | None]:
    """Drop a held reservation and remember its id, so a late repeat cannot re-reserve."""
    held = balance.reserved.get(reservation_id)
    if held is None:
        return balance, None
    reserved = {rid: r for rid, r in balance.reserved.items() if rid != reservation_id}
    keys = _remember(balance.applied_keys, _SETTLED + reservation_id, balance.key_bound)
    return replace(balance, reserved=reserved, applied_keys=keys), held


def commit(
    balance: Balance,
    idempotency_key: str,
    amount: int,
    reservation_id: str | None = None,
) -> tuple[Balance, list[Outcome]]:
    """Add actual usage once per idempotency key; release the reservation if given.

    Never refuses: the usage already happened. Crossing 50/80/100% of the limit
    yields ThresholdCrossed once per threshold per balance; reaching 100% also
    yields Exceeded (once, with the 100% warning).
    """
    _check_amount(amount, "amount")
    key = _COMMIT + idempotency_key
    if key in balance.applied_keys:
        return balance, [Duplicate(idempotency_key)]
    released = None
    if reservation_id is not None:
        balance, held = _settle(balance, reservation_id)
        released = reservation_id if held is not None else None
    used = balance.used + amount
    crossed = crossed_thresholds(used, balance.limit)
    new_pcts = sorted(crossed - balance.thresholds_emitted)
    new = replace(
        balance,
        used=used,
        applied_keys=_remember(balance.applied_keys, key, balance.key_bound),
        thresholds_emitted=balance.thresholds_emitted | crossed,
    )
    outcomes: list[Outcome] = [Committed(idempotency_key, amount, used, released)]
    if new.limit is not None:
        outcomes += [ThresholdCrossed(pct, used, new.limit) for pct in new_pcts]
        if EXCEEDED_PCT in new_pcts:
            outcomes.append(Exceeded(used, new.limit))
    return new, outcomes


def release(balance: Balance, reservation_id: str) -> tuple[Balance, list[Outcome]]:
    """Drop a reservation (the request timed out or was abandoned). Idempotent."""
    new, held = _settle(balance, reservation_id)
    if held is None:
        return balance, []
    return new, [Released(reservation_id, held.amount)]


def expire_reservations(
    balance: Balance, now: datetime, timeout: timedelta
) -> tuple[Balance, list[Outcome]]:
    """Release every reservation held for `timeout` or longer at `now`."""
    held = balance.reserved.items()
    due = sorted((r.reserved_at, rid) for rid, r in held if now - r.reserved_at >= timeout)
    outcomes: list[Outcome] = []
    for _, rid in due:
        balance, held = _settle(balance, rid)
        if held is not None:
            outcomes.append(Released(rid, held.amount, expired=True))
    return balance, outcomes


# --- gauges (concurrency limits) ---------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    """A concurrency counter: who holds a slot now. Not hashable; compare with ==."""

    limit: int | None = None  # None = unlimited
    holders: Mapping[str, datetime] = field(default_factory=dict)  # holder -> acquired_at
    applied_keys: tuple[str, ...] = ()  # released holder ids, at most key_bound
    key_bound: int = DEFAULT_KEY_BOUND

    def __post_init__(self) -> None:
        _check_limits(self.limit, self.key_bound, self.applied_keys)

    @property
    def in_use(self) -> int:
        return len(self.holders)

    @property
    def available(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.in_use)


def acquire(gauge: Gauge, holder_id: str, at: datetime) -> tuple[Gauge, list[Outcome]]:
    """Take one slot for `holder_id` (a session id, an operation key). Idempotent.

    A held id answers Acquired(duplicate=True); an id already released answers
    Duplicate, so a replayed start after its end does not take a slot again.
    """
    if holder_id in gauge.holders:
        return gauge, [Acquired(holder_id, gauge.in_use, duplicate=True)]
    if _HOLDER + holder_id in gauge.applied_keys:
        return gauge, [Duplicate(holder_id)]
    available = gauge.available
    if available is not None and available < 1:
        return gauge, [Refused(holder_id, "budget_exhausted", 1, 0)]
    new = replace(gauge, holders={**gauge.holders, holder_id: at})
    return new, [Acquired(holder_id, new.in_use)]


def release_slot(gauge: Gauge, holder_id: str) -> tuple[Gauge, list[Outcome]]:
    """Give the slot back. Idempotent: releasing a slot not held changes nothing."""
    return _vacate(gauge, holder_id, expired=False)


def _vacate(gauge: Gauge, holder_id: str, *, expired: bool) -> tuple[Gauge, list[Outcome]]:
    if holder_id not in gauge.holders:
        return gauge, []
    holders = {h: at for h, at in gauge.holders.items() if h != holder_id}
    keys = _remember(gauge.applied_keys, _HOLDER + holder_id, gauge.key_bound)
    return replace(gauge, holders=holders, applied_keys=keys), [
        Released(holder_id, 1, expired=expired)
    ]


def expire_slots(gauge: Gauge, now: datetime, timeout: timedelta) -> tuple[Gauge, list[Outcome]]:
    """Release slots held for `timeout` or longer (a holder that died without releasing)."""
    due = sorted((at, h) for h, at in gauge.holders.items() if now - at >= timeout)
    outcomes: list[Outcome] = []
    for _, holder in due:
        gauge, out = _vacate(gauge, holder, expired=True)
        outcomes += out
    return gauge, outcomes


# --- the ledger: every scope a turn charges ----------------------------------------

Ledger = Mapping[Scope, Balance]


def turn_key(turn: SessionEvent) -> str:
    """The key a turn is applied under, in every scope it charges.

    Producer idempotency keys are unique per tenant, not globally, and the
    global and workflow scopes are shared, so the tenant is part of the key
    (length-prefixed: no separator inside an id can make two keys collide).
    """
    return f"{len(turn.tenant_id)}:{turn.tenant_id}/{turn.idempotency_key}"


def turn_charges(turn: TurnCompleted) -> list[tuple[Scope, int]]:
    """(scope, amount) for every scope a turn charges. Tokens = input + output."""
    tokens = turn.input_tokens + turn.output_tokens
    at = turn.occurred_at
    charges = [(session_scope(turn.session_id), tokens)]
    if turn.workflow_id is not None:
        charges.append((workflow_scope(turn.workflow_id), tokens))
    charges += [
        (tenant_day_scope(turn.tenant_id, at), turn.cost_usd_micros),
        (tenant_month_scope(turn.tenant_id, at), turn.cost_usd_micros),
        (global_minute_scope(at), tokens),
    ]
    return charges


def limit_for(scope: Scope, budgets: TenantBudgets, global_limit: int | None) -> int | None:
    """The limit of a balance scope under a tenant's plan budgets."""
    match scope.kind:
        case "session_tokens":
            return budgets.tokens_per_session
        case "workflow_tokens":
            return budgets.tokens_per_workflow
        case "tenant_cost_day":
            return budgets.cost_per_day_usd_micros
        case "tenant_cost_month":
            return budgets.cost_per_month_usd_micros
        case "global_tokens_minute":
            return global_limit
        case "tenant_concurrent_sessions":
            return budgets.concurrent_sessions
        case _:
            # Tool concurrency is not part of TenantBudgets.
            raise ValueError(f"no plan budget for scope kind {scope.kind!r}")


def charge_turn_delta(
    ledger: Ledger,
    turn: TurnCompleted,
    budgets: TenantBudgets,
    global_limit: int | None,
    *,
    reservation_id: str | None = None,
    key_bound: int = DEFAULT_KEY_BOUND,
) -> tuple[dict[Scope, Balance], list[ScopedOutcome]]:
    """Like charge_turn, but returns only the balances that changed.

    For a table-backed processor: read the turn's scopes, write back the delta;
    no copy of the whole ledger per event. `key_bound` applies to new
    balances only (an existing balance keeps its own bound).
    """
    changes: dict[Scope, Balance] = {}
    outcomes: list[ScopedOutcome] = []
    key = turn_key(turn)
    for scope, amount in turn_charges(turn):
        old = ledger.get(scope) or Balance(key_bound=key_bound)
        balance = set_limit(old, limit_for(scope, budgets, global_limit))
        balance, out = commit(balance, key, amount, reservation_id)
        outcomes += [ScopedOutcome(scope, o) for o in out]
        if balance is not old or scope not in ledger:  # ops return the same object on no-op
            changes[scope] = balance
    return changes, outcomes


def charge_turn(
    ledger: Ledger,
    turn: TurnCompleted,
    budgets: TenantBudgets,
    global_limit: int | None,
    *,
    reservation_id: str | None = None,
    key_bound: int = DEFAULT_KEY_BOUND,
) -> tuple[dict[Scope, Balance], list[ScopedOutcome]]:
    """Apply one TurnCompleted to every scope it charges; idempotent per scope.

    Session, workflow (if any) and global-minute scopes are charged tokens
    (input + output); tenant day and month scopes are charged cost_usd_micros.
    `reservation_id`, when the turn was admitted with one, is released in
    every scope that holds it. Returns a new mapping; `ledger` is not changed.
    """
    changes, outcomes = charge_turn_delta(
        ledger, turn, budgets, global_limit, reservation_id=reservation_id, key_bound=key_bound
    )
    return {**ledger, **changes}, outcomes


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


def budget_events(
    cause: TurnCompleted,
    outcomes: Iterable[ScopedOutcome],
    tier: str,
    prices: Mapping[str, ModelPrice],
    policy: BudgetPolicy = DEFAULT_POLICY,
) -> list[BudgetWarning | BudgetExceeded]:
    """The derived events of one charged turn, in outcome order.

    `tier` is the session's tier (from its SessionStarted); the fallback is
    one step down from the model the turn used.
    """
    events: list[BudgetWarning | BudgetExceeded] = []
    for scoped in outcomes:
        match scoped.outcome:
            case ThresholdCrossed() as crossed:
                events.append(warning_event(cause, scoped.scope, crossed))
            case Exceeded() as exceeded:
                action, fallback = decide_action(policy, tier, prices, cause.model)
                events.append(exceeded_event(cause, scoped.scope, exceeded, action, fallback))
            case _:
                pass
    return events
