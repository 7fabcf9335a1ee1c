"""Model prices and the cost of one turn, in exact integer micro-dollars. Pure.

Prices are USD per million tokens (Mtok), input and output separately, as the
providers publish them. One token at P USD/Mtok costs P micro-dollars, so

    cost_usd_micros = round_half_even(P_in * input_tokens + P_out * output_tokens)

computed in Decimal (prices are parsed from their decimal text, never through
binary floats) and rounded once per turn: summing per-turn integers is then
exact, and the same turn always costs the same number of micro-dollars in the
simulator, the budget ledger and ClickHouse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PRICES",
    "ModelPrice",
    "PriceTable",
    "cost_usd_micros",
    "from_litellm",
    "in_force",
]

# Plenty for tokens < 2**63 times prices with a few decimals; set explicitly so
# a caller's decimal context cannot change the result.
_CONTEXT = Context(prec=50, rounding=ROUND_HALF_EVEN)
_ONE = Decimal(1)


def _price(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a price in USD per Mtok, got {value!r}")
    try:
        # str() first: Decimal(0.15) would carry the float's binary error.
        price = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"{where}: price must be a finite number >= 0, got {value!r}")
    return price


EPOCH = date(1970, 1, 1)  # "effective since always": a price given without a date
CURRENCY = "USD"  # budgets and costs are USD micro-dollars; a price in another currency is refused
_ENTRY_KEYS = {"input", "output", "cached_input", "effective_from", "currency"}


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, in force from `effective_from` (a UTC date)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None  # None: cached input costs as input
    effective_from: date = EPOCH
    currency: str = CURRENCY

    def __iter__(self) -> Iterator[Decimal]:  # unpacks as (input, output)
        yield self.input_per_mtok
        yield self.output_per_mtok


def _entry(model: str, raw: Any) -> ModelPrice:
    where = model
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return ModelPrice(_price(raw[0], f"{where}.input"), _price(raw[1], f"{where}.output"))
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected {{input, output}} or [input, output]")
    if "effective_from" in raw:
        where = f"{model}@{raw['effective_from']}"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown or not {"input", "output"} <= set(raw):
        raise ValueError(
            f"{where}: expected keys input, output (USD per Mtok) and optionally "
            f"cached_input, effective_from, currency; got {sorted(raw)}"
        )
    currency = str(raw.get("currency", CURRENCY)).upper()
    if currency != CURRENCY:
        raise ValueError(f"{where}: currency {currency!r}: only USD prices (budgets are USD)")
    since = EPOCH
    if "effective_from" in raw:
        try:
            since = date.fromisoformat(str(raw["effective_from"]))
        except ValueError:
            raise ValueError(f"{where}: effective_from must be a date (YYYY-MM-DD)") from None
    cached = raw.get("cached_input")
    return ModelPrice(
        _price(raw["input"], f"{where}.input"),
        _price(raw["output"], f"{where}.output"),
        None if cached is None else _price(cached, f"{where}.cached_input"),
        since,
        currency,
    )


@dataclass(frozen=True)
class PriceTable(Mapping[str, ModelPrice]):
    """model -> its newest ModelPrice; `history` keeps every price with its date, and
    `at(day)` is the table in force on a day (a change applies from its date on, so
    history keeps its price)."""

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    history: Mapping[str, tuple[ModelPrice, ...]] = field(default_factory=dict)
    _days: dict[date, PriceTable] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.history:  # undated prices: each model's history is its one price
            object.__setattr__(self, "history", {m: (p,) for m, p in self.prices.items()})

    def __getitem__(self, model: str) -> ModelPrice:
        try:
            return self.prices[model]
        except KeyError:
            known = ", ".join(sorted(self.prices)) or "none"
            raise KeyError(f"no price for model {model!r} (known models: {known})") from None

    def __contains__(self, model: object) -> bool:
        # Mapping's own goes through __getitem__, whose miss builds a message naming
        # every model: "is it priced?" is asked of each unpriced turn.
        return model in self.prices

    def __iter__(self) -> Iterator[str]:
        return iter(self.prices)

    def __len__(self) -> int:
        return len(self.prices)

    def at(self, day: date) -> PriceTable:
        """The prices in force on `day` (a model not priced yet that day is absent)."""
        table = self._days.get(day)
        if table is None:
            current: dict[str, ModelPrice] = {}
            for model, prices in self.history.items():
                valid = [p for p in prices if p.effective_from <= day]
                if valid:
                    current[model] = valid[-1]
            table = self._days[day] = PriceTable(current)
        return table

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PriceTable:
        """A catalog: {"currency": "USD", "models": {model: entry or [entries]}}, where
        an entry is {"input", "output"[, "cached_input", "effective_from", "currency"]}
        in USD per Mtok, or [input, output]. The bare {model: entry} form of earlier
        price files is accepted too."""
        if not isinstance(mapping, Mapping):
            raise ValueError("a price table must be a mapping of model -> prices")
        if "models" in mapping and isinstance(mapping["models"], Mapping):
            extra = set(mapping) - {"models", "currency"}
            if extra:
                raise ValueError(f"unknown top-level keys {sorted(extra)} (models, currency)")
            top = str(mapping.get("currency", CURRENCY)).upper()
            if top != CURRENCY:
                raise ValueError(f"currency {top!r}: only USD prices (budgets are USD)")
            mapping = mapping["models"]
        history: dict[str, tuple[ModelPrice, ...]] = {}
        for model, raw in mapping.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"model names must be non-empty strings, got {model!r}")
            dated = isinstance(raw, list) and raw and all(isinstance(e, Mapping) for e in raw)
            entries = [_entry(model, e) for e in raw] if dated else [_entry(model, raw)]
            entries.sort(key=lambda e: e.effective_from)
            days = [e.effective_from for e in entries]
            if len(set(days)) != len(days):
                raise ValueError(f"{model}: two prices effective from the same day")
            history[model] = tuple(entries)
        return cls({m: h[-1] for m, h in history.items()}, history)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read a .json, .yaml or .yml price catalog."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # lazy: only price files need it

            # Floats in YAML would pass through binary; the BaseLoader keeps
            # every scalar as the text written, which _price parses exactly.
            data = yaml.load(text, Loader=yaml.BaseLoader)
        else:
            data = json.loads(text, parse_float=Decimal)
        return cls.from_mapping(data or {})

    def to_mapping(self) -> dict[str, Any]:
        """The catalog format (prices as decimal strings, so nothing is lost)."""

        def entry(p: ModelPrice) -> dict[str, str]:
            out = {"input": str(p.input_per_mtok), "output": str(p.output_per_mtok)}
            if p.cached_input_per_mtok is not None:
                out["cached_input"] = str(p.cached_input_per_mtok)
            if p.effective_from != EPOCH:
                out["effective_from"] = p.effective_from.isoformat()
            return out

        models = {
            m: entry(h[0]) if len(h) == 1 else [entry(p) for p in h]
            for m, h in self.history.items()
        }
        return {"currency": CURRENCY, "models": models}


def in_force(prices: Mapping[str, ModelPrice], at: date | datetime) -> Mapping[str, ModelPrice]:
    """The prices in force at `at` (a UTC date, or a time whose UTC date counts)."""
    if not isinstance(prices, PriceTable):
        return prices
    day = at.astimezone(UTC).date() if isinstance(at, datetime) else at
    return prices.at(day)


def prices_for(
    prices: Mapping[str, ModelPrice],
    model: str,
    at: date | datetime,
    fallback: ModelPrice | None,
) -> tuple[Mapping[str, ModelPrice], bool]:
    """(the prices in force at `at`, charged at the fallback): an unpriced `model` gets the
    deployment's fallback price when there is one (the governor and the OTLP intake)."""
    table = in_force(prices, at)
    if model in table or fallback is None:
        return table, False
    return {**table, model: fallback}, True


def from_litellm(data: Mapping[str, Any], *, effective_from: date | None = None) -> PriceTable:
    """A catalog from LiteLLM's `model_prices_and_context_window.json` (USD per token:
    input_cost_per_token, output_cost_per_token, cache_read_input_token_cost). Entries
    without both token prices (images, audio, the "sample_spec" template) are skipped."""
    models: dict[str, dict[str, str]] = {}
    for name, spec in data.items():
        if not isinstance(spec, Mapping) or name == "sample_spec":
            continue
        raw_in, raw_out = spec.get("input_cost_per_token"), spec.get("output_cost_per_token")
        if raw_in is None or raw_out is None:
            continue
        entry = {"input": _per_mtok(raw_in, name), "output": _per_mtok(raw_out, name)}
        cached = spec.get("cache_read_input_token_cost")
        if cached is not None:
            entry["cached_input"] = _per_mtok(cached, name)
        if effective_from is not None:
            entry["effective_from"] = effective_from.isoformat()
        models[name] = entry
    if not models:
        raise ValueError("no model with input and output token prices in that file")
    return PriceTable.from_mapping({"currency": CURRENCY, "models": models})


def _per_mtok(per_token: Any, model: str) -> str:
    """USD per token (a JSON float such as 2.5e-06) -> USD per Mtok as exact text."""
    return format((_price(per_token, model) * 1_000_000).normalize(), "f")


DEFAULT_PRICES = PriceTable.from_mapping(
    {
        "currency": "USD",
        "models": {
            "gpt-4o": {"input": "2.50", "output": "10.00", "cached_input": "1.25"},
            "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075"},
            "claude-sonnet-4": {"input": "3.00", "output": "15.00", "cached_input": "0.30"},
            "claude-haiku-4": {"input": "0.80", "output": "4.00", "cached_input": "0.08"},
            "llama-3.1-70b": {"input": "0.60", "output": "0.60"},
        },
    }
)


def cost_usd_micros(
    prices: Mapping[str, ModelPrice],
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
) -> int:
    """Cost of one turn in micro-dollars, exact, rounded half-even once.

    USD/Mtok * tokens is micro-dollars, so no scaling is involved; only the
    sub-micro-dollar remainder of cheap models (0.15 * 7 = 1.05) is rounded.
    Unknown model -> KeyError naming the model.
    """
    counts = (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_input_tokens", cached_input_tokens),
    )
    for name, value in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    try:
        price = prices[model]
    except KeyError:
        if isinstance(prices, PriceTable):
            raise  # already carries the clear message
        raise KeyError(f"no price for model {model!r}") from None
    cached_price = price.cached_input_per_mtok
    total = _CONTEXT.add(
        _CONTEXT.multiply(price.input_per_mtok, Decimal(input_tokens)),
        _CONTEXT.multiply(price.output_per_mtok, Decimal(output_tokens)),
    )
    if cached_input_tokens:
        per = price.input_per_mtok if cached_price is None else cached_price
        total = _CONTEXT.add(total, _CONTEXT.multiply(per, Decimal(cached_input_tokens)))
    return int(total.quantize(_ONE, rounding=ROUND_HALF_EVEN, context=_CONTEXT))
