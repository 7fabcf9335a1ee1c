"""The demo's catch-up line (records left, rate, ETA) and the commands it prints at the end."""

from __future__ import annotations

import io
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from govstream.demo import CatchUp, ProgressLine, _last_second, follow_up, invoked_as
from govstream.settings import Settings


def test_catch_up_measures_rate_and_eta_over_the_window() -> None:
    catch_up = CatchUp(window=10.0)
    catch_up.observe(0.0, 30_000, 0)
    assert catch_up.line() == "30,000 records left (measuring the rate)"
    catch_up.observe(5.0, 20_000, 10_000)
    assert catch_up.line() == "20,000 records left, 2,000 records/s, ETA 10 s"
    # The governor appends derived events the sink reads too: the lag shrinks slower
    # than records are committed; the ETA is the line's own arithmetic, left / rate.
    catch_up.observe(10.0, 15_000, 20_000)  # 20,000 committed in 10 s, lag -15,000
    assert catch_up.line() == "15,000 records left, 2,000 records/s, ETA 8 s"
    # Readings older than the window drop out: a stall shows at once.
    catch_up.observe(16.0, 15_000, 20_000)
    catch_up.observe(21.0, 15_000, 20_000)
    assert [s[0] for s in catch_up.samples] == [10.0, 16.0, 21.0]
    assert catch_up.line() == (
        "15,000 records left, 0 records/s (nothing committed in the last 11 s), ETA unknown"
    )


def test_catch_up_says_when_records_arrive_as_fast_as_they_are_read() -> None:
    catch_up = CatchUp()
    catch_up.observe(0.0, 500, 1_000)
    catch_up.observe(2.0, 700, 2_000)
    assert catch_up.line() == (
        "700 records left, 500 records/s, ETA unknown (records arrive as fast as they are read)"
    )
    catch_up.observe(4.0, 0, 2_700)
    assert catch_up.line() == "0 records left, 425 records/s"


def test_catch_up_eta_in_minutes() -> None:
    catch_up = CatchUp()
    catch_up.observe(0.0, 100_000, 0)
    catch_up.observe(4.0, 99_200, 800)
    assert catch_up.line() == "99,200 records left, 200 records/s, ETA 8 min 16 s"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_new_line_at_most_every_five_seconds() -> None:
    out, clock = io.StringIO(), _Clock()
    line = ProgressLine(out, clock=clock)
    for step in range(25):  # a reading every half second for 12 s
        clock.now = step * 0.5
        line(10_000 - 400 * step, 400 * step)
    line.done()
    assert out.getvalue().splitlines() == [
        "      10,000 records left (measuring the rate)",
        "      6,000 records left, 800 records/s, ETA 8 s",
        "      2,000 records left, 800 records/s, ETA 3 s",
    ]


def test_on_a_terminal_one_line_is_rewritten_then_cleared() -> None:
    out, clock = _Terminal(), _Clock()
    line = ProgressLine(out, clock=clock)
    for step in range(4):
        clock.now = step * 0.25
        line(1_000 - 100 * step, 100 * step)
    line.done()
    assert out.getvalue() == (
        "\r      1,000 records left (measuring the rate)\x1b[K"
        "\r      800 records left, 400 records/s, ETA 2 s\x1b[K"
        "\r\x1b[K"
    )
    assert "\n" not in out.getvalue()


def test_follow_up_names_the_runs_settings_and_restarts_the_broker(tmp_path: Path) -> None:
    home = tmp_path / "my home"
    settings = Settings(
        home=home,
        topic_prefix="govstream-demo-1",
        app_id="govstream-demo-1",
        clickhouse_path=home / "demo" / "clickhouse",
    )
    at = datetime(2026, 11, 30, 10, 58, 22, tzinfo=UTC)
    q = shlex.quote
    env = f"GOVSTREAM_HOME={q(str(home))}"
    run = (
        f"{env} GOVSTREAM_TOPIC_PREFIX=govstream-demo-1 GOVSTREAM_APP_ID=govstream-demo-1 "
        f"GOVSTREAM_CLICKHOUSE_PATH={q(str(home / 'demo' / 'clickhouse'))}"
    )
    commands = follow_up(
        settings, program="govstream", session_id="s-1", slo_at=at, restart_broker=True
    )
    assert commands == [
        f"{env} govstream broker start",
        f"{run} govstream replay session s-1",
        f"{run} govstream slo --at 2026-11-30T10:58:22+00:00",
        f"{env} govstream broker stop",
    ]
    assert "'" in commands[0]  # the space in the path is quoted for the shell
    kept = follow_up(
        settings, program="govstream", session_id=None, slo_at=at, restart_broker=False
    )
    assert kept == [f"{run} govstream slo --at 2026-11-30T10:58:22+00:00"]


def test_the_printed_program_is_the_one_that_ran(tmp_path: Path) -> None:
    assert (
        invoked_as("/somewhere/govstream/cli.py")
        == f"{shlex.quote(sys.executable)} -m govstream.cli"
    )
    script = tmp_path / "bin" / "govstream"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    assert invoked_as(str(script)) == str(script)  # not on PATH: its absolute path


def test_the_slo_instant_is_the_second_after_the_last_event() -> None:
    assert _last_second("2026-11-30T10:58:21.917782+00:00") == datetime(
        2026, 11, 30, 10, 58, 22, tzinfo=UTC
    )
    assert _last_second("2026-11-30T10:58:21Z") == datetime(2026, 11, 30, 10, 58, 21, tzinfo=UTC)
