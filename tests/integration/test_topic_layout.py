"""The topic layout is checked before anything is read or written: a tenant log with
another partition count than configured would map tenants to other partitions than
their state, so every command refuses it in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from govstream.settings import as_environment
from tests.conftest import isolated_settings
from tests.factories import session_started

pytestmark = pytest.mark.integration


def _emit(settings_env: dict[str, str], events: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govstream.cli", "emit", str(events)],
        env={**os.environ, **settings_env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_topic_with_another_partition_count_is_refused(
    local_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path, local_bootstrap, topic_partitions=2)
    events = tmp_path / "one.jsonl"
    line = session_started().model_dump_json()
    events.write_text('{"type": "SessionStarted", ' + line[1:] + "\n")
    first = _emit(as_environment(settings), events)
    assert first.returncode == 0, first.stderr  # creates the topics with 2 partitions
    wider = {**as_environment(settings), "GOVSTREAM_TOPIC_PARTITIONS": "4"}
    again = _emit(wider, events)
    assert again.returncode == 2, again.stderr
    assert re.fullmatch(
        rf"govstream: topic {settings.topic_prefix}\.[a-z]+ has 2 partitions but "
        r"GOVSTREAM_TOPIC_PARTITIONS is 4: set it to 2, or use a new GOVSTREAM_TOPIC_PREFIX\n",
        again.stderr,
    ), again.stderr
