"""Reprice: historical turn cost under a corrected price table, per tenant. Pure.

`reprice(turns, prices)` folds TurnCompleted events into per-tenant totals in
integer micro-dollars:

- old cost: the cost each turn recorded (TurnCompleted.cost_usd_micros). That
  is what the stream charged: the governor's budgets
  (projections.governor.budgets `charge`) and the ClickHouse turns table both
  take the recorded cost, never a recomputation.
- new cost: projections.pricing.cost_usd_micros with the new table, per turn
  (rounded once per turn, exactly as a turn is priced live).

The turns are the ones the governor's fold applied (projections/governor
`fold_log`: the first record of each idempotency key in log order; a retry
or a redelivery is not applied), so a reprice counts what was charged. A
model missing from the new table is an error
(`UnpricedModels`, one line naming every missing model and how many turns use
it): a partial reprice would silently understate the new cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from events.models import TurnCompleted
from projections.pricing import ModelPrice, cost_usd_micros, in_force

__all__ = ["RepriceResult", "TenantCost", "UnpricedModels", "reprice", "usd"]


class UnpricedModels(ValueError):
    """Models the turns use that the new price table does not price."""

    def __init__(self, missing: Mapping[str, int]) -> None:
        self.missing = dict(missing)
        listed = ", ".join(f"{model!r} ({n} turns)" for model, n in sorted(self.missing.items()))
        super().__init__(f"no price for model {listed} in the new price table")


@dataclass(frozen=True, slots=True)
class TenantCost:
    tenant: str
    turns: int
    old_micros: int
    new_micros: int

    @property
    def difference_micros(self) -> int:
        return self.new_micros - self.old_micros

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "turns": self.turns,
            "old_cost_usd_micros": self.old_micros,
            "new_cost_usd_micros": self.new_micros,
            "difference_usd_micros": self.difference_micros,
        }


@dataclass(frozen=True, slots=True)
class RepriceResult:
    tenants: tuple[TenantCost, ...]  # sorted by tenant
    duplicates: int  # TurnCompleted records not counted (retries and redeliveries)

    @property
    def total(self) -> TenantCost:
        return TenantCost(
            "TOTAL",
            sum(t.turns for t in self.tenants),
            sum(t.old_micros for t in self.tenants),
            sum(t.new_micros for t in self.tenants),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenants": [t.to_dict() for t in self.tenants],
            "total": self.total.to_dict(),
            "duplicates": self.duplicates,
        }


def reprice(
    turns: Iterable[tuple[TurnCompleted, bool]],
    prices: Mapping[str, ModelPrice],
    *,
    tenant: str | None = None,
) -> RepriceResult:
    """Per-tenant old (recorded) and new (repriced) cost of the applied turns.

    `turns`: (turn, whether the fold applied it). Raises UnpricedModels when an
    applied turn's model has no price in `prices`.
    """
    kept: list[TurnCompleted] = []
    duplicates = 0
    for turn, applied in turns:
        if not isinstance(turn, TurnCompleted) or (tenant is not None and turn.tenant_id != tenant):
            continue
        if applied:
            kept.append(turn)
        else:
            duplicates += 1
    missing: dict[str, int] = {}
    totals: dict[str, list[int]] = {}
    for turn in kept:
        priced = in_force(prices, turn.occurred_at)  # each turn at the price of its day
        if turn.model not in priced:
            missing[turn.model] = missing.get(turn.model, 0) + 1
            continue
        new = cost_usd_micros(priced, turn.model, turn.input_tokens, turn.output_tokens)
        row = totals.setdefault(turn.tenant_id, [0, 0, 0])
        row[0] += 1
        row[1] += turn.cost_usd_micros
        row[2] += new
    if missing:
        raise UnpricedModels(missing)
    return RepriceResult(
        tuple(TenantCost(name, *totals[name]) for name in sorted(totals)), duplicates
    )


def usd(micros: int, *, signed: bool = False) -> str:
    """Micro-dollars as exact decimal dollars: 1234567 -> "1.234567"."""
    sign = "-" if micros < 0 else ("+" if signed and micros > 0 else "")
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"
