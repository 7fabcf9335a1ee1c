"""`govstream lag`: consumer-group lag of the worker, optionally waiting for zero.

Two groups consume the log: the sink (`<app id>.sink`; zero lag means every
record is in ClickHouse) and the enforcement processors (the Faust app id;
zero lag on the sessions, session-signals and budget-input topics means every
event has been deduplicated, run through the lifecycle, decided and charged;
a forward still in flight can add lag again, so wait for zero twice when it
matters). `--group` picks which to report or wait for; the sink by default.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from govstream.errors import GovstreamError
from govstream.settings import Settings, load

GROUPS = ("sink", "processors", "all")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lag", help="consumer lag of the worker's groups")
    parser.add_argument("--wait-zero", action="store_true", help="wait until lag is zero")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument("--app-id", help="the worker's app id (GOVSTREAM_APP_ID)")
    parser.add_argument("--group", choices=GROUPS, default="sink", help="which consumer group")
    parser.set_defaults(func=_run)


async def total_lag(settings: Settings, bootstrap: str, which: str = "sink") -> tuple[int, list]:  # type: ignore[type-arg]
    from streams.admin import group_lag, worker_groups

    rows = []
    for group, topic_names in worker_groups(settings, which):
        rows.extend((group, row) for row in await group_lag(bootstrap, group, topic_names))
    return sum(row.lag for _, row in rows), rows


async def wait_for_zero_lag(
    settings: Settings, bootstrap: str, timeout: float, which: str = "sink"
) -> float:
    """Poll until the chosen groups have consumed everything; return seconds waited."""
    started = time.monotonic()
    while True:
        lag, _ = await total_lag(settings, bootstrap, which)
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
        waited = asyncio.run(wait_for_zero_lag(settings, bootstrap, args.timeout, args.group))
        print(f"lag 0 (waited {waited:.1f}s)")
        return 0
    lag, rows = asyncio.run(total_lag(settings, bootstrap, args.group))
    for group, row in rows:
        committed = "-" if row.committed < 0 else row.committed
        print(
            f"{group} {row.topic}[{row.partition}] "
            f"committed={committed} end={row.end} lag={row.lag}"
        )
    print(f"total lag {lag}")
    return 0
