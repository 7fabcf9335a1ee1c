"""The CLI frame: bad input ends as one line and a non-zero status, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import session_started


def _govstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govstream.cli", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    result = _govstream("lag", env={"GOVSTREAM_WEB_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("govstream: bad setting GOVSTREAM_WEB_PORT='abc':")


@pytest.mark.parametrize(
    "args,status,message",
    [
        (("nonsense",), 2, "invalid choice: 'nonsense'"),
        (("emit", "/no/such/file.jsonl"), 2, "cannot read /no/such/file.jsonl"),
        (("simulate", "--duplicate-rate", "1.5", "--out", "/dev/null"), 2, "duplicate"),
        (("lag", "--timeout", "-1"), 1, "--timeout must be positive"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], status: int, message: str) -> None:
    result = _govstream(*args)
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {"GOVSTREAM_POLICY_SIGNING_KEY": "fifteen-bytes!!"},
            "bad setting GOVSTREAM_POLICY_SIGNING_KEY='<redacted>': Value error, the signing "
            "key must be at least 16 bytes",
        ),
        (
            {"GOVSTREAM_POLICY_PATH": "/no/such/policy.yaml"},
            "bad setting GOVSTREAM_POLICY_PATH: /no/such/policy.yaml: cannot read",
        ),
        ({"GOVSTREAM_POLICY_PATH": "/etc/hostname"}, "bad setting GOVSTREAM_POLICY_PATH: "),
        (
            {"GOVSTREAM_DEFAULT_TENANT_BUDGETS": '{"tokens_per_sesion": 5}'},
            "bad setting GOVSTREAM_DEFAULT_TENANT_BUDGETS=",
        ),
        ({"GOVSTREAM_UNKNOWN_TENANT": "maybe"}, "bad setting GOVSTREAM_UNKNOWN_TENANT='maybe'"),
        (
            {"GOVSTREAM_RETENTION_DAYS": '{"turnz": 30}'},
            "bad setting GOVSTREAM_RETENTION_DAYS: retention for unknown table(s) turnz",
        ),
    ],
)
def test_the_worker_checks_its_settings_before_anything_else(
    env: dict[str, str], message: str
) -> None:
    """No broker is running here: the worker must fail on the setting, not on Kafka."""
    result = _govstream("worker", env={"GOVSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Kafka" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [("lag",), ("worker",), ("emit", "EVENTS"), ("policy", "backtest", "--policy", "POLICY")],
    ids=["lag", "worker", "emit", "backtest"],
)
def test_an_unreachable_broker_is_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    """Issue 12: `emit`, `worker` and the CLI printed a 30-line aiokafka traceback."""
    events = tmp_path / "one.jsonl"
    events.write_text(json.dumps({"type": "SessionStarted", **session_started().model_dump(
        mode="json")}) + "\n")  # fmt: skip
    policy = Path(__file__).parents[2] / "policies" / "example.yaml"
    argv = [str(events) if a == "EVENTS" else str(policy) if a == "POLICY" else a for a in args]
    result = _govstream(*argv, env={"GOVSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                                    "GOVSTREAM_HOME": str(tmp_path / "home")})  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "govstream: cannot reach Kafka at 127.0.0.1:1: start the local broker "
        "(`govstream broker start`) or check GOVSTREAM_KAFKA_BOOTSTRAP\n"
    )
