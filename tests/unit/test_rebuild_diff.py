"""The rebuild's pure parts: where two states differ, merging partition folds, offset runs."""

from __future__ import annotations

from projections.memory import canonical_json
from streams.log_reader import GAP, _runs
from streams.rebuild import FoldResult, RebuildReport, _compare, first_difference


def test_first_difference_names_the_path_and_both_values() -> None:
    live = {"turns": [{"tokens": 3}, {"tokens": 5}], "task": {"objective": "a"}}
    rebuilt = {"turns": [{"tokens": 3}, {"tokens": 6}], "task": {"objective": "a"}}
    assert first_difference(live, rebuilt) == "$.turns[1].tokens: live 5 != rebuilt 6"
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "$.b only in rebuilt"
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == "$.a has 2 items live, 1 rebuilt"


def test_compare_reports_missing_extra_and_changed_keys_in_key_order() -> None:
    rebuilt = {"s-1": {"n": 1}, "s-2": {"n": 2}, "s-4": {"n": 4}}
    live = {"s-1": canonical_json({"n": 1}), "s-2": canonical_json({"n": 3}), "s-3": b"{}"}
    report = RebuildReport()
    _compare("session-memory", live, rebuilt, report)
    assert report.keys == {"session-memory": 4}
    assert [str(d) for d in report.divergences] == [
        "session-memory/s-2: $.n: live 3 != rebuilt 2",
        "session-memory/s-3: only in live state",
        "session-memory/s-4: only in rebuilt state",
    ]


def test_non_canonical_live_bytes_are_a_divergence() -> None:
    report = RebuildReport()
    _compare("tenant-memory", {"t": b'{"b":1, "a":2}'}, {"t": {"a": 2, "b": 1}}, report)
    assert len(report.divergences) == 1
    assert "different bytes" in report.divergences[0].detail


def test_partition_folds_merge_without_losing_anything() -> None:
    a = FoldResult({"s-1": {"x": 1}}, {"t-1": {}}, {"c1"}, {"c1"}, 10, 4)
    b = FoldResult({"s-2": {"x": 2}}, {"t-2": {}}, {"c2"}, set(), 7, 3)
    merged = a.merge(b)
    assert merged.sessions == {"s-1": {"x": 1}, "s-2": {"x": 2}}
    assert set(merged.tenants) == {"t-1", "t-2"}
    assert (merged.requested, merged.written) == ({"c1", "c2"}, {"c1"})
    assert (merged.records, merged.folded) == (17, 7)


def test_nearby_offsets_share_one_seek() -> None:
    assert _runs([3, 4, 10, 10 + GAP, 10 + 2 * GAP + 1]) == [
        (3, 10 + GAP),
        (10 + 2 * GAP + 1, 10 + 2 * GAP + 1),
    ]
    assert _runs([]) == []
