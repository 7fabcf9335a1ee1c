"""Two processor workers in one group: every admission is answered by the key's owner.

Each worker owns some partitions; a request that reaches the other worker is
forwarded to the owner. So 200 concurrent admissions spread over both workers
against one budget still admit exactly what fits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from events.models import TenantBudgets
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings
from streams.admission import partition_for
from tests.conftest import bearer, isolated_settings
from tests.factories import session_started, tenant_profile
from tests.kafka_io import send_events as _send

pytestmark = pytest.mark.integration
KEY = "routing-operator-key"
WAIT_SECONDS = 90


@pytest.fixture(scope="module")
def workers(
    local_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[WorkerProcess]]]:
    base = tmp_path_factory.mktemp("routing")
    settings = isolated_settings(
        base, local_bootstrap, api_keys=f"{KEY}:*", worker_agents="governor"
    )
    # Same group (app id), each its own web port and (unused) chDB directory.
    second = settings.model_copy(
        update={"web_port": free_port(), "clickhouse_path": base / "clickhouse-2"}
    )
    started = [
        WorkerProcess(settings, log_path=base / "worker-1.log"),
        WorkerProcess(second, log_path=base / "worker-2.log"),
    ]
    try:
        for worker in started:
            worker.wait_ready()
        _wait_until_assigned(started)
        yield settings, started
    finally:
        for worker in started:
            worker.stop()


def _wait_until_assigned(workers: list[WorkerProcess]) -> None:
    """Until both workers answer for every partition (owned or forwarded)."""
    partitions = 3  # isolated_settings
    tenants = {}
    n = 0
    while len(tenants) < partitions:  # one tenant name per partition
        tenants.setdefault(partition_for(f"t-probe-{n}", partitions), f"t-probe-{n}")
        n += 1
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        codes = {
            httpx.get(f"{w.url}/v1/budgets/{t}", headers=bearer(KEY), timeout=10).status_code
            for w in workers
            for t in tenants.values()
        }
        if codes == {200}:
            return
        time.sleep(0.5)
    detail = [
        (w.url, t, r.status_code, r.text[:200])
        for w in workers
        for t in tenants.values()
        if (r := httpx.get(f"{w.url}/v1/budgets/{t}", headers=bearer(KEY), timeout=10))
    ]
    raise AssertionError(f"workers never owned every partition: {codes} {detail}")


def _owned(worker: WorkerProcess) -> set[int]:
    """The partitions of the tenant log the worker's governor owns."""
    return set(worker.health()["assigned"])


def test_each_worker_owns_part_of_the_tenants_and_forwards_the_rest(
    workers: tuple[Settings, list[WorkerProcess]],
) -> None:
    _, started = workers
    first, second = (_owned(w) for w in started)
    assert first and second and not first & second
    assert first | second == {0, 1, 2}
    # A tenant the second worker owns, asked of the first: forwarded, same answer.
    tenant = next(f"t-own-{n}" for n in range(1000) if partition_for(f"t-own-{n}", 3) in second)
    replies = [
        httpx.get(f"{w.url}/v1/budgets/{tenant}", headers=bearer(KEY), timeout=10) for w in started
    ]
    assert [r.status_code for r in replies] == [200, 200]
    assert replies[0].json() == replies[1].json()


def test_concurrent_admissions_over_two_workers_never_overspend(
    workers: tuple[Settings, list[WorkerProcess]],
) -> None:
    settings, started = workers
    tenant, session = "t-routed", f"s-routed-{uuid.uuid4().hex[:6]}"
    profile = tenant_profile(
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        budgets=TenantBudgets(tokens_per_session=5_000),
    )
    _send(settings, [profile])
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        plans = {
            httpx.get(f"{w.url}/v1/budgets/{tenant}", headers=bearer(KEY), timeout=10).json()[
                "plan"
            ]
            for w in started
        }
        if plans == {"team"}:
            break
        time.sleep(0.3)
    _send(settings, [session_started(tenant_id=tenant, session_id=session, tier="C",
                                     occurred_at=datetime.now(UTC))])  # fmt: skip
    body = {"tenant": tenant, "session": session, "model": "gpt-4o", "estimated_tokens": 100}

    async def admit_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30, headers=bearer(KEY)) as client:
            replies = await asyncio.gather(
                *(client.post(f"{started[i % 2].url}/v1/admission/turn", json=body)
                  for i in range(200))
            )  # fmt: skip
        return [r.json() for r in replies]

    answers = asyncio.run(admit_all())
    decisions = Counter(a.get("decision", a.get("error")) for a in answers)
    assert decisions == {"allow": 50, "deny": 150}, decisions

    # The owner holds the 50 reservations; both workers show its balance.
    def views() -> list[dict[str, Any]]:
        return [
            httpx.get(
                f"{w.url}/v1/budgets/{tenant}?session={session}", headers=bearer(KEY), timeout=10
            )
            .json()["balances"]
            .get("session_tokens", {})
            for w in started
        ]

    deadline = time.monotonic() + WAIT_SECONDS
    while views()[0].get("reserved") != 5_000 and time.monotonic() < deadline:
        time.sleep(0.3)
    first, second = views()
    assert first == second == {"limit": 5_000, "used": 0, "reserved": 5_000, "period": ""}
