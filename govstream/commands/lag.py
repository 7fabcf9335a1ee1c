"""`govstream lag`: consumer-group lag of the worker, optionally waiting for zero.

Two groups consume the log: the sink (`<app id>.sink`; zero lag means every
record is in ClickHouse) and the governor (`<app id>.governor`; zero lag on
the tenant log and the tenants topic means every event has been
deduplicated, run through the lifecycle, decided, charged and remembered).
The governor relays a tenant profile into the tenant log in the transaction
that commits its tenants offset, so lag is read until it is zero twice in a
row. `--group` picks which to report or wait for; the sink by default.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from govstream.errors import GovstreamError
from govstream.settings import Settings, load

GROUPS = ("sink", "governor", "all")


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
    settings: Settings,
    bootstrap: str,
    timeout: float,
    which: str = "sink",
    on_lag: Callable[[int, int], None] | None = None,
) -> float:
    """Poll until the chosen groups have consumed everything (zero on two readings
    in a row: a relay committed between the topics' readings shows on the next);
    return seconds waited. `on_lag(lag, committed)` sees every reading: the lag and
    the sum of the committed offsets (the demo's progress line)."""
    started = time.monotonic()
    zeros = 0
    while True:
        lag, rows = await total_lag(settings, bootstrap, which)
        if on_lag is not None:
            on_lag(lag, sum(max(row.committed, 0) for _, row in rows))
        zeros = zeros + 1 if lag == 0 else 0
        if zeros >= 2:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise GovstreamError(f"lag still {lag} after {timeout:.0f}s")
        await asyncio.sleep(0.25 if lag == 0 else 0.5)


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
