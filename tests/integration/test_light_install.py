"""The light install: the wheel without extras is the producer SDK and nothing else,
and the README's SDK snippet sends a session with it through a real broker."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from events.models import SessionClosed, SessionStarted
from events.topics import Topics
from govstream.settings import as_environment
from tests.conftest import isolated_settings
from tests.kafka_io import read_events_until
from tests.readme import snippet
from tests.wheel import ROOT, build_wheel, install

pytestmark = pytest.mark.integration

PIPELINE = ("faust", "mode", "chdb", "clickhouse_connect", "yaml", "rich", "orjson", "aiohttp")
SDK = ("aiokafka", "fastavro", "pydantic", "httpx")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed without extras: its bin directory.
    No pip in it (the tests run its python and govstream only): seconds faster."""
    base = tmp_path_factory.mktemp("light")
    return install(build_wheel(base), base / "venv", with_pip=False)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: nothing of this test run's virtualenv leaks in."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, **(extra or {})}


def test_the_light_install_is_the_sdk_without_the_pipeline(light: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        "import events.emitter, events.admission_client, events.codec, govstream.session\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))\n"
    )
    found = _run([str(light / "python"), "-c", probe, *PIPELINE, *SDK], env=_env(), timeout=120)
    assert found.returncode == 0, found.stderr
    present = json.loads(found.stdout)
    assert {m for m in PIPELINE if present[m]} == set()
    assert {m for m in SDK if present[m]} == set(SDK)

    for command in (["worker"], ["slo", "--json"], ["sql", "SELECT 1"]):
        refused = _run([str(light / "govstream"), *command], env=_env(), timeout=120)
        missing = refused.stderr.split("no module named ")[-1].split(")")[0]
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            f"govstream: `govstream {command[0]}` needs the worker extra (no module named "
            f"{missing}): pip install 'govstream[worker]'\n"
        )


def test_the_readme_sdk_snippet_sends_a_session_from_the_light_install(
    light: Path, local_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap)
    env = _env(as_environment(settings))
    # `govstream emit` works in the light install too (and creates the topics).
    emitted = _run(
        [str(light / "govstream"), "emit", "--retime", str(ROOT / "examples" / "session.jsonl")],
        env=env, timeout=120,
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr
    assert emitted.stdout.startswith("sent 10 events in ")

    ran = _run([str(light / "python"), "-c", snippet("sdk")], env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr

    def closed(events: list) -> bool:  # type: ignore[type-arg]
        return any(isinstance(e, SessionClosed) and e.session_id == "s-42" for e in events)

    events = read_events_until(local_bootstrap, Topics(settings.topic_prefix).sessions, closed)
    ours = [e for e in events if e.session_id == "s-42"]
    assert [(type(e).__name__, e.idempotency_key, e.attempt) for e in ours] == [
        ("SessionStarted", "s-42/1/start", 1),
        ("TurnCompleted", "s-42/2/turn", 1),
        ("ToolCallProposed", "s-42/3/propose_tool", 1),
        ("ToolCallCompleted", "s-42/4/tool_completed", 1),
        ("SessionClosed", "s-42/5/close", 1),
    ]
    start = ours[0]
    assert isinstance(start, SessionStarted)
    assert (start.tenant_id, start.workflow_id, start.tier, start.actor_id) == (
        "t-acme", "support", "A", "u-7",
    )  # fmt: skip
    assert [e.causation_id for e in ours[1:]] == [e.event_id for e in ours[:-1]]
    assert ours[0].producer == "govstream-session/0.1"
