"""The runtime's admission client against a real worker: typed answers, decisions
verified against the very call, conflicts, and the fail-open / fail-closed switch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from events.admission_client import (
    UNAVAILABLE,
    UNAVAILABLE_FAIL_OPEN,
    AdmissionClient,
    AdmissionError,
    AsyncAdmissionClient,
)
from events.signing import DecisionRejected
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings
from tests.conftest import isolated_settings
from tests.factories import session_started, tenant_profile
from tests.kafka_io import send_events, wait_for_partitions

pytestmark = pytest.mark.integration
KEY = "client-key"
CALL: dict[str, Any] = {
    "tool": "http_request", "action": "fetch", "destination_host": "api.example.com",
    "method": "GET", "payload_bytes": 10, "risk_level": "low",
}  # fmt: skip


@pytest.fixture(scope="module")
def worker(
    local_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, str]]:
    base = tmp_path_factory.mktemp("client")
    settings = isolated_settings(base, local_bootstrap, api_keys=f"{KEY}:t-cli,ops-key:*")
    process = WorkerProcess(settings, log_path=base / "worker.log")
    try:
        process.wait_ready()
        wait_for_partitions(process.url, "ops-key")
        now = datetime.now(UTC)
        send_events(settings, [tenant_profile(tenant_id="t-cli", occurred_at=now),
                               session_started(tenant_id="t-cli", session_id="s-cli",
                                               occurred_at=now)])  # fmt: skip
        yield settings, process.url
    finally:
        process.stop()


def _keys(settings: Settings) -> dict[str, str]:
    return {settings.policy_key_id: settings.policy_signing_key}


def test_turns_and_tools_get_typed_verified_answers(worker: tuple[Settings, str]) -> None:
    settings, url = worker
    with AdmissionClient(url, KEY, timeout=10, decision_keys=_keys(settings)) as client:
        turn = client.turn("t-cli", "s-cli", model="gpt-4o", estimated_tokens=800)
        assert (turn.decision, turn.reason_code, turn.model) == ("allow", "ADMITTED", "gpt-4o")
        assert turn.may_run and turn.reservation_id and not turn.unavailable
        op = f"s-cli/op-{uuid.uuid4().hex[:6]}"
        tool = client.tool("t-cli", "s-cli", operation_key=op, **CALL)
        assert (tool.decision, tool.reason_code) == ("allow", "ALLOWED") and tool.may_run
        assert tool.policy_decision is not None and tool.policy_decision.operation_key == op
        # The same key for another call: refused (409), never the stored allow.
        other = client.tool("t-cli", "s-cli", operation_key=op, **{**CALL, "tool": "shell"})
        assert (other.decision, other.reason_code) == ("deny", "OPERATION_KEY_CONFLICT")
        with pytest.raises(AdmissionError) as bad:  # not this key's tenant: the caller's bug
            client.turn("t-other", "s-cli", model="gpt-4o", estimated_tokens=1)
        assert bad.value.status in (403, 404)
    # Verified with the wrong key: the client raises rather than hand back an allow.
    wrong = AdmissionClient(url, KEY, timeout=10, decision_keys={settings.policy_key_id: "x" * 32})
    with wrong, pytest.raises(DecisionRejected, match="bad_signature"):
        wrong.tool("t-cli", "s-cli", operation_key=f"s-cli/op-{uuid.uuid4().hex[:6]}", **CALL)


def test_the_async_client_answers_the_same(worker: tuple[Settings, str]) -> None:
    settings, url = worker

    async def ask() -> tuple[str, str]:
        async with AsyncAdmissionClient(url, KEY, timeout=10,
                                        decision_keys=_keys(settings)) as client:  # fmt: skip
            op = f"s-cli/op-{uuid.uuid4().hex[:6]}"
            answer = await client.tool("t-cli", "s-cli", operation_key=op, **CALL)
            return answer.decision, answer.reason_code

    assert asyncio.run(ask()) == ("allow", "ALLOWED")


@pytest.mark.parametrize(
    ("switch", "expected"),
    [("fail_closed", ("deny", UNAVAILABLE)), ("fail_open", ("allow", UNAVAILABLE_FAIL_OPEN))],
)
def test_an_unreachable_api_answers_by_the_switch(switch: Any, expected: tuple[str, str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with AdmissionClient(nowhere, KEY, timeout=2, on_unavailable=switch) as client:
        turn = client.turn("t-cli", "s-cli", model="gpt-4o", estimated_tokens=1)
        tool = client.tool("t-cli", "s-cli", operation_key="s-cli/op-x", **CALL)
    assert (turn.decision, turn.reason_code) == expected and turn.unavailable
    assert (tool.decision, tool.reason_code) == expected and tool.unavailable
