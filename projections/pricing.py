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
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable", "cost_usd_micros"]

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


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def __iter__(self) -> Iterator[Decimal]:  # unpacks as (input, output)
        yield self.input_per_mtok
        yield self.output_per_mtok


@dataclass(frozen=True)
class PriceTable(Mapping[str, ModelPrice]):
    """model -> ModelPrice (USD per Mtok, input and output)."""

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)

    def __getitem__(self, model: str) -> ModelPrice:
        try:
            return self.prices[model]
        except KeyError:
            known = ", ".join(sorted(self.prices)) or "none"
            raise KeyError(f"no price for model {model!r} (known models: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.prices)

    def __len__(self) -> int:
        return len(self.prices)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PriceTable:
        """Accepts {model: {"input": 2.5, "output": 10}} or {model: [2.5, 10]}.

        A top-level {"models": {...}} wrapper is accepted too, so a price file
        can grow other sections later.
        """
        if not isinstance(mapping, Mapping):
            raise ValueError("a price table must be a mapping of model -> prices")
        if set(mapping) == {"models"} and isinstance(mapping["models"], Mapping):
            mapping = mapping["models"]
        prices: dict[str, ModelPrice] = {}
        for model, entry in mapping.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"model names must be non-empty strings, got {model!r}")
            if isinstance(entry, Mapping):
                unknown = set(entry) - {"input", "output"}
                if unknown or not {"input", "output"} <= set(entry):
                    raise ValueError(
                        f"{model}: expected keys 'input' and 'output' (USD per Mtok), "
                        f"got {sorted(entry)}"
                    )
                raw_in, raw_out = entry["input"], entry["output"]
            elif isinstance(entry, list | tuple) and len(entry) == 2:
                raw_in, raw_out = entry
            else:
                raise ValueError(f"{model}: expected {{input, output}} or [input, output]")
            prices[model] = ModelPrice(
                _price(raw_in, f"{model}.input"), _price(raw_out, f"{model}.output")
            )
        return cls(prices)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """Read a .json, .yaml or .yml price file."""
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

    def to_mapping(self) -> dict[str, dict[str, str]]:
        """JSON-able form (prices as decimal strings, so nothing is lost)."""
        return {
            model: {"input": str(p.input_per_mtok), "output": str(p.output_per_mtok)}
            for model, p in self.prices.items()
        }


DEFAULT_PRICES = PriceTable.from_mapping(
    {
        "gpt-4o": {"input": "2.50", "output": "10.00"},
        "gpt-4o-mini": {"input": "0.15", "output": "0.60"},
        "claude-sonnet-4": {"input": "3.00", "output": "15.00"},
        "claude-haiku-4": {"input": "0.80", "output": "4.00"},
        "llama-3.1-70b": {"input": "0.60", "output": "0.60"},
    }
)


def cost_usd_micros(
    prices: Mapping[str, ModelPrice], model: str, input_tokens: int, output_tokens: int
) -> int:
    """Cost of one turn in micro-dollars, exact, rounded half-even once.

    USD/Mtok * tokens is micro-dollars, so no scaling is involved; only the
    sub-micro-dollar remainder of cheap models (0.15 * 7 = 1.05) is rounded.
    Unknown model -> KeyError naming the model.
    """
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    try:
        price = prices[model]
    except KeyError:
        if isinstance(prices, PriceTable):
            raise  # already carries the clear message
        raise KeyError(f"no price for model {model!r}") from None
    total = _CONTEXT.add(
        _CONTEXT.multiply(price.input_per_mtok, Decimal(input_tokens)),
        _CONTEXT.multiply(price.output_per_mtok, Decimal(output_tokens)),
    )
    return int(total.quantize(_ONE, rounding=ROUND_HALF_EVEN, context=_CONTEXT))
