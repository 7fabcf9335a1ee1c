"""`govstream demo` on a small fleet: it reports catch-up progress, and the commands it
prints at the end work exactly as printed after it has stopped its broker and worker.

The user's report: the demo printed `govstream replay session ...`, which then
failed (the demo used its own topic prefix and ClickHouse directory, and its
broker was gone). Here every printed command runs through a shell, from
another directory, with no GOVSTREAM_* variable of ours in the environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from govstream.broker import broker_status, stop_broker
from govstream.settings import Settings

pytestmark = pytest.mark.integration
# A cold broker start, a worker, the fleet, a rebuild: about 30 s here; generous for CI.
DEMO_SECONDS = 300
COMMAND_SECONDS = 120


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GOVSTREAM_")}


def test_the_printed_follow_up_commands_work_after_the_demo(tmp_path: Path) -> None:
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**_clean_environment(), "GOVSTREAM_HOME": str(home)}
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "govstream.cli", "demo", "--tenants", "2", "--sessions", "40"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=DEMO_SECONDS,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        out = demo.stdout.splitlines()
        # Not a TTY: progress comes as whole lines, the first one at once.
        waiting = out.index("[4/7] waiting for the worker to catch up (lag 0) ...")
        assert re.fullmatch(r"      [\d,]+ records left \(measuring the rate\)", out[waiting + 1])
        assert "stopped the local broker this demo started" in out
        # The console's address and this run's operator key, printed while it runs.
        assert any(
            re.fullmatch(
                r"      console: http://127\.0\.0\.1:\d+/console \(sign in with the key "
                r"demo-[\w-]+; open while the demo runs\)",
                line,
            )
            for line in out
        )
        assert broker_status(Settings(home=home), probe=False) is None

        start = next(i for i, line in enumerate(out) if line.startswith("Explore this run"))
        commands = [line.removeprefix("    ") for line in out[start + 1 :] if line]
        assert [c.split(" -m govstream.cli ")[1].split()[:2] for c in commands] == [
            ["broker", "start"],
            ["replay", "session"],
            ["slo", "--at"],
            ["broker", "stop"],
        ]
        session = commands[1].rsplit(" ", 1)[1]
        results = []
        for command in commands:
            ran = subprocess.run(
                ["bash", "-c", command], env=_clean_environment(), cwd=elsewhere,
                capture_output=True, text=True, timeout=COMMAND_SECONDS,
            )  # fmt: skip
            assert ran.returncode == 0, f"{command}\n{ran.stdout[-2000:]}{ran.stderr[-2000:]}"
            results.append(ran.stdout)
        started, replayed, slo, stopped = results
        assert started.startswith("starting Apache Kafka") or "broker ready at" in started
        assert f"state of session {session} at after the last event" in replayed
        assert slo.startswith("SLO 2026-11-01 at ")
        assert stopped.strip() == "broker stopped"
    finally:
        stop_broker(Settings(home=home))  # whatever failed above, no broker is left behind
