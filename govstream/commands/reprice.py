"""`govstream reprice`: historical cost under a corrected price table, from the log.

`govstream reprice --prices NEW.yaml [--since T] [--tenant T] [--json]` reads
the tenant log in Kafka (never ClickHouse), folds it with the governor's fold
to know which turns were applied (a retry or redelivery is not), and prints per tenant
the recorded cost (what the stream charged), the cost under the new table and
the difference, with a total row (projections/reprice.py does the arithmetic
in integer micro-dollars). A model the new table does not price is an error
naming it (exit 2): a partial reprice would understate the new cost.

`--since` starts each partition at the first record logged at or after that
time (Kafka's time index). A retry logged after it whose first attempt was
logged before it then counts as the first attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from events.models import TurnCompleted
from govstream.commands.policy import read_log, since_ms, table
from govstream.errors import UsageError
from govstream.settings import governor_config, load
from projections.governor.fold import fold_log
from projections.pricing import PriceTable
from projections.reprice import RepriceResult, UnpricedModels, reprice, usd


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reprice", help="recompute historical cost per tenant with a new price table"
    )
    parser.add_argument(
        "--prices", type=Path, required=True, help="the corrected price table (.yaml/.json)"
    )
    parser.add_argument("--since", help="only turns logged at or after this UTC time (ISO 8601)")
    parser.add_argument("--tenant", help="only this tenant")
    parser.add_argument("--json", action="store_true", help="the result as JSON (micro-dollars)")
    parser.set_defaults(func=_run)


def load_prices(path: Path) -> PriceTable:
    """The price file, or a one-line UsageError naming it."""
    try:
        return PriceTable.load(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # ValueError from the table, yaml/json syntax errors
        raise UsageError(" ".join(f"{path}: {exc}".split())) from None


def render(result: RepriceResult) -> str:
    headers = ("tenant", "turns", "old cost USD", "new cost USD", "difference USD")
    rows = [
        (
            t.tenant,
            str(t.turns),
            usd(t.old_micros),
            usd(t.new_micros),
            usd(t.difference_micros, signed=True),
        )
        for t in (*result.tenants, result.total)
    ]
    lines = [table(headers, rows, right={1, 2, 3, 4})]
    if result.duplicates:
        lines.append(f"{result.duplicates} retried or redelivered turns not counted again")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from events.topics import Topics
    from govstream.broker import resolve_bootstrap

    prices = load_prices(args.prices)
    since = since_ms(args.since)
    settings = load()
    topic = Topics(settings.topic_prefix).sessions
    bootstrap = resolve_bootstrap(settings)
    log = asyncio.run(read_log(settings, bootstrap, (topic,), since=since))
    config = governor_config(settings)
    turns = [
        (event, folded.applied)
        for _, records in sorted(log.items())
        for _, event, folded in fold_log(((r, r.event) for r in records), config)
        if isinstance(event, TurnCompleted)
    ]
    try:
        result = reprice(turns, prices, tenant=args.tenant)
    except UnpricedModels as exc:
        raise UsageError(f"{args.prices}: {exc}") from None
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0
