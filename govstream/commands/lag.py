"""`govstream lag`: consumer-group lag of the worker, optionally waiting for zero.

The lag that matters is the sink's: zero means every record is in ClickHouse.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from govstream.errors import GovstreamError
from govstream.settings import Settings, load


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lag", help="consumer lag of the worker group")
    parser.add_argument("--wait-zero", action="store_true", help="wait until lag is zero")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument("--app-id", help="consumer group (GOVSTREAM_APP_ID)")
    parser.set_defaults(func=_run)


async def total_lag(settings: Settings, bootstrap: str) -> tuple[int, list]:  # type: ignore[type-arg]
    from events.topics import Topics
    from streams.admin import group_lag

    topics = Topics(settings.topic_prefix)
    rows = await group_lag(bootstrap, settings.sink_group, [topics.sessions, topics.tenants])
    return sum(r.lag for r in rows), rows


async def wait_for_zero_lag(settings: Settings, bootstrap: str, timeout: float) -> float:
    """Poll until the worker group has consumed everything; return seconds waited."""
    started = time.monotonic()
    while True:
        lag, _ = await total_lag(settings, bootstrap)
        if lag == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise GovstreamError(f"lag still {lag} after {timeout:.0f}s")
        await asyncio.sleep(0.5)


def _run(args: argparse.Namespace) -> int:
    from govstream.broker import resolve_bootstrap

    if args.timeout <= 0:
        raise GovstreamError("--timeout must be positive")
    settings = load(app_id=args.app_id)
    bootstrap = resolve_bootstrap(settings)
    if args.wait_zero:
        waited = asyncio.run(wait_for_zero_lag(settings, bootstrap, args.timeout))
        print(f"lag 0 (waited {waited:.1f}s)")
        return 0
    lag, rows = asyncio.run(total_lag(settings, bootstrap))
    for row in rows:
        committed = "-" if row.committed < 0 else row.committed
        print(f"{row.topic}[{row.partition}] committed={committed} end={row.end} lag={row.lag}")
    print(f"total lag {lag}")
    return 0
