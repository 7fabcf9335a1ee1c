"""Admission latency: many concurrent clients against one worker's admission API.

Each client sends its requests one after another (a runtime asking before each
turn); the clients run concurrently. Latency is measured per request on the
client, from sending to the parsed answer. Client and worker share the
machine's cores, as they would not in production: the figures are an upper
bound on what a remote client sees minus the network.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class LatencyFigures:
    requests: int
    clients: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    decisions: dict[str, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def nearest_rank(sorted_ms: list[float], q: float) -> float:
    """The q-quantile of sorted values by nearest rank (what the benchmarks report)."""
    index = min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))
    return sorted_ms[index]


async def measure(
    url: str, key: str, bodies: list[list[dict[str, Any]]], path: str = "/v1/admission/turn"
) -> LatencyFigures:
    """`bodies[i]` is client i's request sequence."""
    latencies: list[float] = []
    decisions: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=len(bodies))

    async def client(session: aiohttp.ClientSession, sequence: list[dict[str, Any]]) -> None:
        for body in sequence:
            started = time.perf_counter()
            async with session.post(f"{url}{path}", json=body) as response:
                answer = await response.json()
            latencies.append((time.perf_counter() - started) * 1000)
            outcome = answer.get("decision") or f"http {response.status}"
            decisions[outcome] = decisions.get(outcome, 0) + 1

    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # One request per client first: opens the connections outside the measurement.
        await asyncio.gather(*(client(session, seq[:1]) for seq in bodies))
        latencies.clear()
        decisions.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client(session, seq[1:]) for seq in bodies))
        seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return LatencyFigures(
        requests=len(ordered),
        clients=len(bodies),
        seconds=seconds,
        p50_ms=statistics.median(ordered),
        p99_ms=nearest_rank(ordered, 0.99),
        max_ms=ordered[-1],
        decisions=decisions,
    )
