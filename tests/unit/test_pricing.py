"""Prices and per-turn cost: exact micro-dollars, rounded half-even once per turn."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from projections.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    cost_usd_micros,
    from_litellm,
)


@pytest.mark.parametrize(
    ("model", "input_tokens", "output_tokens", "expected"),
    [
        # 1000 * 2.50 + 500 * 10.00 = 2500 + 5000
        ("gpt-4o", 1000, 500, 7_500),
        # 20000 * 3.00 + 4000 * 15.00 = 60000 + 60000
        ("claude-sonnet-4", 20_000, 4_000, 120_000),
        # 1234 * 0.80 + 567 * 4.00 = 987.2 + 2268 = 3255.2 -> 3255
        ("claude-haiku-4", 1234, 567, 3_255),
        # one million each way at 0.60/0.60 = $1.20
        ("llama-3.1-70b", 1_000_000, 1_000_000, 1_200_000),
        # 7 * 0.15 = 1.05 -> 1
        ("gpt-4o-mini", 7, 0, 1),
        # 10 * 0.15 = 1.5 -> 2 (half to even)
        ("gpt-4o-mini", 10, 0, 2),
        # 30 * 0.15 = 4.5 -> 4 (half to even)
        ("gpt-4o-mini", 30, 0, 4),
        # 10 * 0.15 + 5 * 0.60 = 1.5 + 3.0 = 4.5 -> 4: rounded once per turn,
        # not per side (which would give 2 + 3 = 5)
        ("gpt-4o-mini", 10, 5, 4),
        # 3 * 0.15 + 1 * 0.60 = 0.45 + 0.60 = 1.05 -> 1
        ("gpt-4o-mini", 3, 1, 1),
        ("gpt-4o", 0, 0, 0),
    ],
)
def test_hand_computed_costs(
    model: str, input_tokens: int, output_tokens: int, expected: int
) -> None:
    assert cost_usd_micros(DEFAULT_PRICES, model, input_tokens, output_tokens) == expected


def test_default_table_has_the_published_prices() -> None:
    assert set(DEFAULT_PRICES) == {
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4",
        "claude-haiku-4",
        "llama-3.1-70b",
    }
    assert tuple(DEFAULT_PRICES["gpt-4o"]) == (Decimal("2.50"), Decimal("10.00"))
    assert tuple(DEFAULT_PRICES["gpt-4o-mini"]) == (Decimal("0.15"), Decimal("0.60"))
    assert DEFAULT_PRICES["claude-sonnet-4"] == ModelPrice(
        Decimal("3"), Decimal("15"), cached_input_per_mtok=Decimal("0.30")
    )


def test_unknown_model_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="no price for model 'gpt-5'") as info:
        cost_usd_micros(DEFAULT_PRICES, "gpt-5", 10, 10)
    assert "gpt-4o-mini" in str(info.value)  # lists the known models
    with pytest.raises(KeyError, match="no price for model 'x'"):
        cost_usd_micros({}, "x", 1, 1)


@pytest.mark.parametrize("tokens", [-1, 1.5, True, "10"])
def test_bad_token_counts_are_refused(tokens: object) -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        cost_usd_micros(DEFAULT_PRICES, "gpt-4o", tokens, 0)  # type: ignore[arg-type]


def test_huge_counts_stay_exact() -> None:
    # (2**53 + 1) * 0.15 = 9007199254740993 * 15 / 100 = 1351079888211148.95 -> ...149;
    # a float product could not even represent the token count.
    assert cost_usd_micros(DEFAULT_PRICES, "gpt-4o-mini", 2**53 + 1, 0) == 1_351_079_888_211_149


def test_from_mapping_accepts_dicts_pairs_and_a_models_wrapper() -> None:
    table = PriceTable.from_mapping({"a": {"input": 1, "output": "2.5"}, "b": [0.1, 0.3]})
    assert tuple(table["a"]) == (Decimal(1), Decimal("2.5"))
    # Floats go through their shortest text, not their binary value.
    assert tuple(table["b"]) == (Decimal("0.1"), Decimal("0.3"))
    # 25 * 0.1 + 5 * 0.3 = 2.5 + 1.5 = 4.0
    assert cost_usd_micros(table, "b", 25, 5) == 4
    wrapped = PriceTable.from_mapping({"models": {"a": [1, 2]}})
    assert list(wrapped) == ["a"]
    assert PriceTable.from_mapping(DEFAULT_PRICES.to_mapping()) == DEFAULT_PRICES


@pytest.mark.parametrize(
    "bad",
    [
        {"m": {"input": 1}},
        {"m": {"input": 1, "output": 2, "cached": 3}},
        {"m": [1]},
        {"m": {"input": -1, "output": 2}},
        {"m": {"input": "cheap", "output": 2}},
        {"m": {"input": "NaN", "output": 2}},
        {"": [1, 2]},
    ],
)
def test_from_mapping_rejects_bad_entries(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PriceTable.from_mapping(bad)


def test_load_json_and_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"gpt-4o-mini": {"input": 0.15, "output": 0.60}}))
    table = PriceTable.load(as_json)
    assert tuple(table["gpt-4o-mini"]) == (Decimal("0.15"), Decimal("0.6"))
    assert cost_usd_micros(table, "gpt-4o-mini", 10, 5) == 4

    as_yaml = tmp_path / "prices.yaml"
    as_yaml.write_text(
        "models:\n  gpt-4o:\n    input: 2.50\n    output: 10.00\n  tiny: [0.15, 0.60]\n"
    )
    table = PriceTable.load(as_yaml)
    assert tuple(table["gpt-4o"]) == (Decimal("2.50"), Decimal("10.00"))
    assert cost_usd_micros(table, "gpt-4o", 1000, 500) == 7_500
    assert cost_usd_micros(table, "tiny", 30, 0) == 4


# --- the catalog: dates, cached input, LiteLLM -------------------------------------------

CATALOG = {
    "currency": "USD",
    "models": {
        "o3": [
            {"effective_from": "2025-04-16", "input": "10.00", "output": "40.00"},
            {"effective_from": "2025-06-10", "input": "2.00", "output": "8.00",
             "cached_input": "0.50"},
        ],
        "gpt-4o": {"input": "2.50", "output": "10.00", "cached_input": "1.25"},
    },
}  # fmt: skip


def test_a_price_change_applies_from_its_date_and_history_keeps_its_price() -> None:
    table = PriceTable.from_mapping(CATALOG)
    before, after = table.at(date(2025, 6, 9)), table.at(date(2025, 6, 10))
    assert cost_usd_micros(before, "o3", 1_000, 1_000) == 50_000
    assert cost_usd_micros(after, "o3", 1_000, 1_000) == 10_000
    assert "o3" not in table.at(date(2025, 4, 15))  # not priced yet: unknown that day
    assert table["o3"].input_per_mtok == Decimal("2.00")  # the newest price
    assert PriceTable.from_mapping(table.to_mapping()) == table  # the format round-trips


def test_cached_input_tokens_cost_the_cached_price_or_the_input_price() -> None:
    table = PriceTable.from_mapping(CATALOG)
    assert cost_usd_micros(table, "gpt-4o", 0, 0, cached_input_tokens=1_000) == 1_250
    plain = PriceTable.from_mapping({"m": {"input": "2", "output": "4"}})
    assert cost_usd_micros(plain, "m", 0, 0, cached_input_tokens=1_000) == 2_000


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        ({"models": {"m": {"input": "1", "output": "2", "currency": "EUR"}}}, "only USD"),
        ({"currency": "EUR", "models": {}}, "only USD"),
        ({"models": {"m": {"input": "1", "output": "2", "effective_from": "soon"}}}, "a date"),
        ({"models": {"m": [{"input": "1", "output": "2", "effective_from": "2025-01-01"},
                           {"input": "1", "output": "3", "effective_from": "2025-01-01"}]}},
         "same day"),
        ({"models": {"m": {"input": "1", "output": "2", "cache": "1"}}}, "cached_input"),
        ({"models": {}, "prices": {}}, "unknown top-level keys"),
    ],
)  # fmt: skip
def test_a_bad_catalog_is_one_clear_error(catalog: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.from_mapping(catalog)


def test_litellm_prices_import() -> None:
    data = json.loads(
        (Path(__file__).parents[1] / "data" / "litellm_prices_sample.json").read_text()
    )
    table = from_litellm(data)
    assert set(table) == {"gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-20241022",
                          "text-embedding-3-small"}  # fmt: skip
    assert tuple(table["gpt-4o"]) == tuple(DEFAULT_PRICES["gpt-4o"])  # 2.5e-06/token = 2.5/Mtok
    assert table["gpt-4o-mini"].cached_input_per_mtok == Decimal("0.075")
    assert table["claude-3-5-haiku-20241022"].output_per_mtok == Decimal("4")
    dated = from_litellm(data, effective_from=date(2026, 12, 1))
    assert "gpt-4o" not in dated.at(date(2026, 11, 30))


def test_prices_import_writes_a_catalog_the_governor_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from govstream.cli import main
    from govstream.settings import Settings, governor_config

    sample = Path(__file__).parents[1] / "data" / "litellm_prices_sample.json"
    out = tmp_path / "prices.yaml"
    assert main(["prices", "import", str(sample), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 4 models to {out}\n"
    config = governor_config(Settings(home=tmp_path, prices_path=out))
    assert cost_usd_micros(config.prices, "gpt-4o", 1_000, 1_000) == 12_500
    assert main(["prices", "import", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
