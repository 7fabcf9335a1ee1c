"""Admission load generator, in a process of its own: `python -m bench.loadgen ...`.

Prints one line of JSON with the figures. Two shapes:

- open loop (`--rate R --seconds S`): request i is due at t0 + i/R, whatever
  happened to the requests before it (a fixed arrival schedule, as real
  traffic arrives). Latency is measured from the request's *scheduled* send
  time to its parsed answer, so a stall of the server (or of this process)
  shows in every request that should have been sent meanwhile: coordinated
  omission is counted, not hidden. `late_ms` says how far behind its own
  schedule this process was when it actually sent (the generator's share).
- closed loop (`--clients C --seconds S`): C clients, each sending its next
  request when the previous one is answered. Latency is from send to answer.

Every request is a turn admission (`POST /v1/admission/turn`) for one of the
given tenants, spread over `--sessions` sessions and 50 workflows, with the
bodies serialized before the run starts. Connections are opened and kept
alive by a warm-up that is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

PATH = "/v1/admission/turn"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (0.0 when empty)."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


def bodies(tenants: list[str], sessions: int, count: int, tag: str) -> list[bytes]:
    """`count` request bodies, round-robin over tenants and sessions."""
    out = []
    for i in range(count):
        session = i % sessions
        out.append(
            orjson.dumps(
                {
                    "tenant": tenants[session % len(tenants)],
                    "session": f"bench-{tag}-{session}",
                    "workflow": f"bench-wf-{session % 50}",
                    "model": "gpt-4o",
                    "estimated_tokens": 800,
                }
            )
        )
    return out


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # ms, answered with 200
        self.late: list[float] = []  # ms behind schedule at the actual send (open loop)
        self.statuses: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_answer = 0.0

    async def send(
        self, session: aiohttp.ClientSession, url: str, body: bytes, since: float
    ) -> None:
        try:
            async with session.post(url, data=body) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        now = time.perf_counter()
        self.last_answer = max(self.last_answer, now)
        self.statuses[str(status)] += 1
        if status != 200:
            return
        self.latencies.append((now - since) * 1000)
        try:
            self.decisions[str(orjson.loads(raw).get("decision"))] += 1
        except orjson.JSONDecodeError:
            self.errors["bad json"] += 1

    def figures(self, started: float, requests: int) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        late = sorted(self.late)
        ok = len(ordered)
        span = max(self.last_answer - started, 1e-9)
        return {
            "requests": requests,
            "ok": ok,
            "non_2xx": sum(n for s, n in self.statuses.items() if not s.startswith("2")),
            "errors": sum(self.errors.values()),
            "statuses": dict(self.statuses),
            "error_kinds": dict(self.errors),
            "decisions": dict(self.decisions),
            "seconds": span,
            "achieved_rate": ok / span,
            "p50_ms": quantile(ordered, 0.50),
            "p90_ms": quantile(ordered, 0.90),
            "p99_ms": quantile(ordered, 0.99),
            "p999_ms": quantile(ordered, 0.999),
            "max_ms": ordered[-1] if ordered else 0.0,
            "mean_ms": sum(ordered) / ok if ok else 0.0,
            "late_p99_ms": quantile(late, 0.99),
            "late_max_ms": late[-1] if late else 0.0,
        }


async def warm_up(session: aiohttp.ClientSession, url: str, payloads: list[bytes], n: int) -> None:
    """`n` connections opened (and kept alive) with requests that are not measured."""
    recorder = Recorder()
    await asyncio.gather(
        *(recorder.send(session, url, payloads[i % len(payloads)], 0.0) for i in range(n))
    )


async def open_loop(
    session: aiohttp.ClientSession, url: str, payloads: list[bytes], rate: float, seconds: float
) -> dict[str, Any]:
    count = int(rate * seconds)
    interval = 1.0 / rate
    recorder = Recorder()
    tasks = []
    started = time.perf_counter() + 0.01

    async def one(body: bytes, due: float) -> None:
        recorder.late.append((time.perf_counter() - due) * 1000)
        await recorder.send(session, url, body, due)

    for i in range(count):
        due = started + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(payloads[i % len(payloads)], due)))
    await asyncio.gather(*tasks)
    return {"mode": "open", "target_rate": rate, **recorder.figures(started, count)}


async def closed_loop(
    session: aiohttp.ClientSession, url: str, payloads: list[bytes], clients: int, seconds: float
) -> dict[str, Any]:
    recorder = Recorder()
    started = time.perf_counter()
    stop = started + seconds
    sent = 0

    async def client(offset: int) -> None:
        nonlocal sent
        i = offset
        while time.perf_counter() < stop:
            sent += 1
            await recorder.send(session, url, payloads[i % len(payloads)], time.perf_counter())
            i += clients

    await asyncio.gather(*(client(c) for c in range(clients)))
    return {"mode": "closed", "clients": clients, **recorder.figures(started, sent)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tenants = args.tenants.split(",")
    count = int(args.rate * args.seconds) if args.mode == "open" else 100_000
    payloads = bodies(tenants, args.sessions, min(count, 100_000) or 1, args.tag)
    url = f"{args.url.rstrip('/')}{PATH}"
    connector = aiohttp.TCPConnector(limit=args.connections, force_close=False)
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        await warm_up(session, url, payloads, args.warmup)
        watched = {name: int(pid) for name, pid in (w.split("=") for w in args.watch if w)}
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        mine = time.process_time()
        if args.mode == "open":
            result = await open_loop(session, url, payloads, args.rate, args.seconds)
        else:
            result = await closed_loop(session, url, payloads, args.clients, args.seconds)
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        cpu["loadgen"] = time.process_time() - mine
        return {**result, "cpu_seconds": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the worker, http://host:port")
    parser.add_argument("--key", required=True, help="an operator API key")
    parser.add_argument("--tenants", required=True, help="comma-separated tenant ids")
    parser.add_argument("--mode", choices=("open", "closed"), default="open")
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: requests/s")
    parser.add_argument("--clients", type=int, default=200, help="closed loop: clients")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=2000, help="sessions to spread over")
    parser.add_argument("--tag", default="load", help="session id prefix")
    parser.add_argument("--warmup", type=int, default=64, help="unmeasured requests/connections")
    parser.add_argument("--connections", type=int, default=512, help="connection pool size")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--watch", action="append", default=[], help="NAME=PID: its CPU seconds over the run"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
