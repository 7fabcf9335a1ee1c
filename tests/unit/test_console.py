"""The console's pure parts: filters, the SLO section's rows, the pages' states."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from govstream.console import evaluate_slo, parse_filters, slo_view
from govstream.console_html import (
    SLO_ROWS_SHOWN,
    Viewer,
    render_slo,
    summarize,
)
from govstream.errors import UsageError
from projections.slo import ScopeCounts, SloScope, WindowCounts, load_slo

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DOC = load_slo()


def _scope(tenant: str, workflow: str, bad: int, total: int) -> ScopeCounts:
    windows = {w: WindowCounts(total=total, bad=bad) for w in DOC.window_names()}
    quiet = {w: WindowCounts(total=total, bad=0) for w in DOC.window_names()}
    return ScopeCounts(SloScope(tenant, workflow), "A", {"success": windows, "latency": quiet})


def _report(bad_scopes: int = 25) -> object:
    scopes = [
        _scope("t-1", "wf-fire", 300, 300),  # every turn bad, enough of them: firing
        _scope("t-1", "wf-quiet", 12, 12),  # every turn bad, too few: suppressed
        *(_scope("t-2", f"wf-{i:02d}", 1, 1000) for i in range(bad_scopes)),  # bad, slow burn
        _scope("t-3", "wf-ok", 0, 50),
    ]
    return evaluate_slo(DOC, (scopes, []), NOW)


def test_filters_force_a_tenant_keys_tenant_and_refuse_a_bad_range() -> None:
    operator = parse_filters({"tenant": "t-2", "range": "7d"}, Viewer(None), NOW)
    assert (operator.tenant, operator.end - operator.start) == ("t-2", timedelta(days=7))
    tenant = parse_filters({"tenant": "t-2", "range": "all"}, Viewer("t-1"), NOW)
    assert tenant.tenant == "t-1" and tenant.start.year == 2000
    assert parse_filters({}, Viewer(None), NOW).range == "24h"
    with pytest.raises(UsageError, match="range '9y': expected one of 1h, 24h, 7d, 30d, all"):
        parse_filters({"range": "9y"}, Viewer(None), NOW)


def test_the_slo_section_shows_every_alarming_row_then_the_first_bad_ones() -> None:
    report = _report()
    view = slo_view(report, "")  # type: ignore[arg-type]
    assert list(view.sli_states[:2]) == ["firing", "suppressed"]
    assert list(view.sli_states[2:]) == ["bad"] * SLO_ROWS_SHOWN
    # 2 + 25 bad + 1 ok success rows, and every scope's quiet latency row: hidden.
    assert view.hidden == 2 * 28 - len(view.sli_states)
    assert view.sli[0][-1] == "why (deciding rule)"
    assert "min_events" in view.sli[1][1][-1]  # the suppressed row says why
    assert len(view.alerts) >= 1 and all("t-1" in a for a in view.alerts)

    one = slo_view(report, "t-2")  # type: ignore[arg-type]
    assert set(one.sli_states) == {"bad"} and len(one.sli_states) == SLO_ROWS_SHOWN
    assert one.alerts == []  # another tenant's alert is not this tenant's
    assert {row[1].split("/")[0] for row in one.sli[1]} == {"t-2"}
    every = slo_view(report, "t-2", show_all=True)  # type: ignore[arg-type]
    assert len(every.sli_states) == 50 and every.hidden == 0


def test_the_slo_section_says_when_it_is_computing_or_failed() -> None:
    assert 'data-slo="pending"' in render_slo(slo_view(None, ""), "range=24h")
    html = render_slo(slo_view(_report(), ""), "tenant=&range=24h")  # type: ignore[arg-type]
    assert html.count('data-slo-state="firing"') >= 1
    assert 'href="/console?tenant=&amp;range=24h&amp;slo=all"' in html


def test_the_timeline_says_what_each_record_said() -> None:
    turn = {"model": "gpt-4o", "input_tokens": 3161, "output_tokens": 124,
            "cost_usd_micros": 9100, "latency_ms": 2420, "outcome": "ok"}  # fmt: skip
    assert summarize("TurnCompleted", turn) == "gpt-4o 3,161+124 tokens, $0.0091, 2,420 ms, ok"
    decision = {"decision": "deny", "reason_code": "TOOL_NOT_PERMITTED", "tool": "shell",
                "action": "exec"}  # fmt: skip
    assert summarize("PolicyDecided", decision) == "deny TOOL_NOT_PERMITTED shell.exec"
    budget = {"scope": "session", "used": 105_423, "limit": 200_000}
    assert summarize("BudgetWarning", budget) == "session 105,423/200,000"
    assert summarize("SessionSuspended", {"reason": "operator pause"}) == "operator pause"


def test_recomputed_serves_the_kept_value_while_one_refresh_runs() -> None:
    """A key never read has no value until its first read ends; a stale value is
    served at once while one background read runs (a second page does not start
    another); a value is stale after max_age, or ten times its read's duration when
    longer; a failure keeps the last value and says why; the least recently asked key
    goes first."""
    from govstream.console import Recomputed

    now = [0.0]  # the clock, moved by the reads and by the test

    async def scenario() -> None:
        reads: list[str] = []
        release = asyncio.Event()
        fail = False

        async def read(key: str) -> str:
            reads.append(key)
            now[0] += 10.0  # every read takes 10 s
            await release.wait()
            if fail:
                raise RuntimeError("ClickHouse went away")
            return f"{key}#{len(reads)}"

        kept = Recomputed(read, max_age=60.0, size=2, name="test view", clock=lambda: now[0])
        first = kept.peek("24h")
        assert first.value is None and first.task is not None
        await asyncio.sleep(0)
        assert kept.peek("24h").value is None and reads == ["24h"]  # no second read
        release.set()
        await first.task
        assert (first.value, first.seconds) == ("24h#1", 10.0)
        release.clear()
        now[0] += 99.0  # 99 s old: not stale, a 10 s read is read again after 100 s
        assert kept.peek("24h").value == "24h#1" and reads == ["24h"]
        now[0] += 2.0
        stale = kept.peek("24h")  # stale: served, one read starts
        again = kept.peek("24h")
        await asyncio.sleep(0)
        assert (stale.value, again.value, reads) == ("24h#1", "24h#1", ["24h", "24h"])
        release.set()
        await stale.task  # type: ignore[misc]
        assert kept.peek("24h").value == "24h#2"
        fail = True
        now[0] += 101.0
        await kept.peek("24h").task  # type: ignore[misc]
        failed = kept.peek("24h")
        assert (failed.value, failed.error) == ("24h#2", "RuntimeError: ClickHouse went away")
        fail = False
        for key in ("7d", "30d"):  # a third key: "24h", asked least recently, goes
            await kept.peek(key).task  # type: ignore[misc]
        assert list(kept._kept) == ["7d", "30d"]

    asyncio.run(scenario())


def test_recomputed_get_waits_for_the_first_read_only() -> None:
    """`get` (one tenant's view: a read of milliseconds) waits for a key's first read,
    then serves the kept value while later reads run in the background."""
    from govstream.console import Recomputed

    now = [0.0]
    reads: list[str] = []

    async def read(key: str) -> str:
        reads.append(key)
        await asyncio.sleep(0)
        return f"{key}#{len(reads)}"

    async def scenario() -> None:
        kept = Recomputed(read, max_age=60.0, clock=lambda: now[0])
        assert (await kept.get("t-1")).value == "t-1#1"
        now[0] += 61.0
        stale = await kept.get("t-1")  # served at once; a read starts
        assert stale.value == "t-1#1" and stale.task is not None and not stale.task.done()
        await stale.task
        assert (await kept.get("t-1")).value == "t-1#2" and reads == ["t-1", "t-1"]

    asyncio.run(scenario())
