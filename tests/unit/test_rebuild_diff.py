"""The rebuild's pure parts: where two states differ, merging partition folds, offset runs."""

from __future__ import annotations

from projections.governor.state import canonical
from streams.log_reader import GAP, _runs
from streams.rebuild import FoldResult, RebuildReport, _compare_state, first_difference


def test_first_difference_names_the_path_and_both_values() -> None:
    live = {"turns": [{"tokens": 3}, {"tokens": 5}], "task": {"objective": "a"}}
    rebuilt = {"turns": [{"tokens": 3}, {"tokens": 6}], "task": {"objective": "a"}}
    assert first_difference(live, rebuilt) == "$.turns[1].tokens: live 5 != rebuilt 6"
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "$.b only in rebuilt"
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == "$.a has 2 items live, 1 rebuilt"


def test_compare_reports_missing_extra_and_changed_keys_in_key_order() -> None:
    rebuilt = {
        k: canonical(v) for k, v in {"s-1": {"n": 1}, "s-2": {"n": 2}, "s-4": {"n": 4}}.items()
    }
    live = {"s-1": canonical({"n": 1}), "s-2": canonical({"n": 3}), "s-3": b"{}"}
    report = RebuildReport()
    _compare_state(live, rebuilt, report)
    assert report.keys == {"governor-state": 4}
    assert [str(d) for d in report.divergences] == [
        "governor-state/s-2: $.n: live 3 != rebuilt 2",
        "governor-state/s-3: only in live state",
        "governor-state/s-4: only in rebuilt state",
    ]


def test_non_canonical_live_bytes_are_a_divergence() -> None:
    report = RebuildReport()
    _compare_state({"t": b'{"b":1, "a":2}'}, {"t": canonical({"a": 2, "b": 1})}, report)
    assert len(report.divergences) == 1
    assert "different bytes" in report.divergences[0].detail


def test_partition_folds_merge_without_losing_anything() -> None:
    a = FoldResult({"s/t-1/s-1": b"1"}, {0: [b"d1"]}, 10, 4)
    b = FoldResult({"s/t-2/s-2": b"2"}, {1: [b"d2", b"d3"]}, 7, 3)
    merged = a.merge(b)
    assert merged.state == {"s/t-1/s-1": b"1", "s/t-2/s-2": b"2"}
    assert merged.derived == {0: [b"d1"], 1: [b"d2", b"d3"]}
    assert (merged.records, merged.folded) == (17, 7)


def test_nearby_offsets_share_one_seek() -> None:
    assert _runs([3, 4, 10, 10 + GAP, 10 + 2 * GAP + 1]) == [
        (3, 10 + GAP),
        (10 + 2 * GAP + 1, 10 + 2 * GAP + 1),
    ]
    assert _runs([]) == []
