"""Reprice core: exact micro-dollar differences per tenant, first attempt wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from govstream.cli import main
from govstream.settings import Settings, governor_config
from projections.governor.fold import fold_log
from projections.pricing import DEFAULT_PRICES, PriceTable, cost_usd_micros
from projections.reprice import UnpricedModels, reprice, usd
from tests.factories import T0_MS, turn

CONFIG = governor_config(Settings(home="/nonexistent"))


class _At:
    timestamp_ms = T0_MS


def applied(turns: list) -> list:  # type: ignore[type-arg]
    """(turn, applied) as the governor's fold applies them, in this log order."""
    return [(e, f.applied) for _, e, f in fold_log(((_At(), t) for t in turns), CONFIG)]


# gpt-4o-mini: 0.15 in / 0.60 out per Mtok; gpt-4o: 2.50 / 10.00
DOUBLED_OUTPUT = PriceTable.from_mapping(
    {
        "gpt-4o": {"input": "2.50", "output": "20.00"},
        "gpt-4o-mini": {"input": "0.15", "output": "1.20"},
    }
)


def _turn(tenant: str, key: str, model: str, tin: int, tout: int, attempt: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    return turn(
        tenant_id=tenant,
        idempotency_key=key,
        model=model,
        input_tokens=tin,
        output_tokens=tout,
        cost_usd_micros=cost_usd_micros(DEFAULT_PRICES, model, tin, tout),
        attempt=attempt,
        **kw,
    )


def test_doubled_output_price_gives_the_exact_difference_per_tenant() -> None:
    turns = [
        _turn("t-a", "a-1", "gpt-4o", 1000, 500),  # old 2500 + 5000 = 7500, new 2500 + 10000
        _turn("t-a", "a-2", "gpt-4o-mini", 1200, 300),  # old 180 + 180 = 360, new 180 + 360
        _turn("t-b", "b-1", "gpt-4o", 0, 1_000_000),  # old 10 USD, new 20 USD
    ]
    # a redelivery and a retry (higher attempt, more tokens): neither counts again
    retry = _turn("t-a", "a-1", "gpt-4o", 9000, 9000, attempt=2)
    result = reprice(applied([*turns, turns[0], retry]), DOUBLED_OUTPUT)
    rows = {t.tenant: (t.turns, t.old_micros, t.new_micros, t.difference_micros)
            for t in result.tenants}  # fmt: skip
    assert rows == {
        "t-a": (2, 7_860, 13_040, 5_000 + 180),
        "t-b": (1, 10_000_000, 20_000_000, 10_000_000),
    }
    assert result.duplicates == 2
    total = result.total
    assert (total.turns, total.old_micros, total.new_micros) == (3, 10_007_860, 20_013_040)
    assert result.to_dict()["total"]["difference_usd_micros"] == 10_005_180


def test_old_cost_is_what_the_turn_recorded() -> None:
    # a turn that was charged 1 micro-dollar (the stream charges the recorded cost)
    odd = turn(tenant_id="t-a", idempotency_key="k", model="gpt-4o", input_tokens=0,
               output_tokens=100, cost_usd_micros=1)  # fmt: skip
    result = reprice(applied([odd]), DOUBLED_OUTPUT)
    assert (result.tenants[0].old_micros, result.tenants[0].new_micros) == (1, 2_000)


def test_the_first_applied_turn_counts_and_tenants_do_not_share_keys() -> None:
    first = _turn("t-a", "k", "gpt-4o-mini", 100, 100, attempt=1)
    retry = _turn("t-a", "k", "gpt-4o-mini", 5, 5, attempt=3)
    other = _turn("t-b", "k", "gpt-4o-mini", 1, 1)  # the same key in another tenant
    result = reprice(applied([first, retry, other]), DOUBLED_OUTPUT)
    assert [(t.tenant, t.turns) for t in result.tenants] == [("t-a", 1), ("t-b", 1)]
    assert result.duplicates == 1


def test_a_model_missing_from_the_new_table_is_named() -> None:
    turns = [_turn("t-a", "1", "claude-haiku-4", 10, 10), _turn("t-a", "2", "gpt-4o", 1, 1),
             _turn("t-b", "3", "claude-haiku-4", 10, 10)]  # fmt: skip
    with pytest.raises(UnpricedModels) as caught:
        reprice(applied(turns), DOUBLED_OUTPUT)
    assert caught.value.missing == {"claude-haiku-4": 2}
    assert "'claude-haiku-4' (2 turns)" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tenant_filter_and_empty_log() -> None:
    turns = applied([_turn("t-a", "1", "gpt-4o", 1, 1), _turn("t-b", "2", "gpt-4o", 1, 1)])
    assert [t.tenant for t in reprice(turns, DOUBLED_OUTPUT, tenant="t-b").tenants] == ["t-b"]
    empty = reprice([], DOUBLED_OUTPUT)
    assert (empty.tenants, empty.total.turns, empty.total.old_micros) == ((), 0, 0)


def test_usd_formatting_is_exact() -> None:
    assert usd(1_234_567) == "1.234567"
    assert usd(5) == "0.000005"
    assert usd(-1_000_000) == "-1.000000"
    assert usd(180, signed=True) == "+0.000180"
    assert usd(0, signed=True) == "0.000000"


def test_a_bad_price_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text("gpt-4o: {input: 2.5}\n")
    assert main(["reprice", "--prices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpt-4o" in err and str(bad) in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("gpt-4o: [1, \n  - x: {\n")
    assert main(["reprice", "--prices", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["reprice", "--prices", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_catalog_with_a_price_change_reprices_to_zero_difference() -> None:
    """Each turn was charged at the price of its day; the same catalog gives it again."""
    from datetime import timedelta

    from projections.pricing import in_force

    catalog = PriceTable.from_mapping({"models": {"gpt-4o": [
        {"effective_from": "2026-11-01", "input": "2.50", "output": "10.00"},
        {"effective_from": "2026-11-23", "input": "2.50", "output": "40.00"},
    ]}})  # fmt: skip
    turns = []
    for n, day in enumerate((0, 1, 2)):  # 2026-11-22, then two days at the new price
        at = turn(occurred_at=turn().occurred_at + timedelta(days=day)).occurred_at
        cost = cost_usd_micros(in_force(catalog, at), "gpt-4o", 1_000, 1_000)
        turns.append(turn(tenant_id="t-a", idempotency_key=f"k-{n}", model="gpt-4o",
                          input_tokens=1_000, output_tokens=1_000, cost_usd_micros=cost,
                          occurred_at=at))  # fmt: skip
    assert [t.cost_usd_micros for t in turns] == [12_500, 42_500, 42_500]
    result = reprice(applied(turns), catalog)
    assert (result.total.turns, result.total.difference_micros) == (3, 0)
    flat = reprice(applied(turns), DEFAULT_PRICES)  # the old price every day
    assert flat.total.difference_micros == -60_000
