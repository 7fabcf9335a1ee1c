"""`govstream policy`: work with policy documents against the log.

`govstream policy backtest --policy NEW.yaml [--tenant T] [--since T] [--json]`
folds the tenant log in Kafka (never ClickHouse) again with the governor's
fold under a new policy document and lists every decision that would change
against the one recorded in the derived topic, with the old and new decision
and reason code (projections/backtest.py); this module only reads and decodes
the log and prints. Exit 0 whether or not anything changes; a bad policy file is one
line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from events.models import PolicyDecided
from govstream.errors import UsageError
from govstream.settings import Settings, governor_config, load
from projections.backtest import BacktestResult, Logged, backtest
from projections.policy import ContractError, load_policy


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("policy", help="policy documents against the log")
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    commands.required = True
    backtest_parser = commands.add_parser(
        "backtest", help="re-run historical tool proposals against a new policy"
    )
    backtest_parser.add_argument(
        "--policy", type=Path, required=True, help="the new policy document (.yaml/.json)"
    )
    backtest_parser.add_argument("--tenant", help="only this tenant's proposals")
    backtest_parser.add_argument(
        "--since", help="only proposals logged at or after this UTC time (ISO 8601)"
    )
    backtest_parser.add_argument("--json", action="store_true", help="the result as JSON")
    backtest_parser.set_defaults(func=_run_backtest)


def since_ms(text: str | None) -> int | None:
    """--since (ISO 8601, UTC if no offset) as a Kafka timestamp in ms."""
    from govstream.commands.slo import parse_at

    if text is None:
        return None
    try:
        return int(parse_at(text).timestamp() * 1000)
    except UsageError:
        raise UsageError(f"--since {text!r}: expected an ISO 8601 time") from None


async def read_log(
    settings: Settings, bootstrap: str, topics: Sequence[str], *, since: int | None = None
) -> dict[tuple[str, int], list[Logged]]:
    """Every record of `topics` the worker would apply, per (topic, partition), in log
    order. What the ingest rules refuse (undecodable, forged, out of bounds) is
    skipped: the sink dead-letters it, and the governor never applied it."""
    from events.codec import Codec
    from events.registry import EmbeddedRegistry
    from streams.ingest import Ingested, InputRules, ingest
    from streams.log_reader import read_topics

    codec = Codec(EmbeddedRegistry())
    rules = InputRules.from_settings(settings)
    out: dict[tuple[str, int], list[Logged]] = {}
    async for batch in read_topics(bootstrap, list(topics), since_ms=since):
        for record in batch:
            item = ingest(codec, record, rules)
            if isinstance(item, Ingested):
                logged = Logged(item.event, record.timestamp_ms, record.offset)
                out.setdefault((record.topic, record.partition), []).append(logged)
    return out


def recorded_decisions(logged: Sequence[Logged]) -> dict[tuple[str, str], PolicyDecided]:
    """The first PolicyDecided per (tenant, operation key) in the derived topic."""
    first: dict[tuple[str, str], PolicyDecided] = {}
    for record in logged:
        event = record.event
        if isinstance(event, PolicyDecided):
            first.setdefault((event.tenant_id, event.operation_key), event)
    return first


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] = set()) -> str:  # noqa: B006
    """Plain aligned text; columns in `right` are right-aligned."""
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def render_backtest(result: BacktestResult) -> str:
    lines = []
    if result.changes:
        headers = (
            "time",
            "tenant",
            "session",
            "operation_key",
            "tool.action",
            "old decision",
            "old reason",
            "new decision",
            "new reason",
        )
        rows = [
            (
                c.occurred_at.isoformat(),
                c.tenant_id,
                c.session_id,
                c.operation_key,
                f"{c.tool}.{c.action}",
                c.old_decision,
                c.old_reason_code,
                c.new_decision,
                c.new_reason_code,
            )
            for c in result.changes
        ]
        lines.append(table(headers, rows))
    summary = (
        f"policy {result.policy_version}: {result.re_evaluated} proposals re-evaluated, "
        f"{len(result.changes)} changed"
    )
    if result.undecided:
        summary += f" ({result.undecided} without a recorded decision, not compared)"
    lines.append(summary)
    return "\n".join(lines)


def _run_backtest(args: argparse.Namespace) -> int:
    from events.topics import Topics
    from govstream.broker import resolve_bootstrap

    try:
        policy = load_policy(args.policy)
    except ContractError as exc:  # one line naming the file and field
        raise UsageError(str(exc)) from None
    since = since_ms(args.since)
    settings = load()
    topics = Topics(settings.topic_prefix)
    bootstrap = resolve_bootstrap(settings)
    # The whole history is read even with --since: contexts start at offset zero.
    log = asyncio.run(read_log(settings, bootstrap, (topics.sessions, topics.derived)))
    partitions = [
        records for (topic, _), records in sorted(log.items()) if topic == topics.sessions
    ]
    derived = [
        r for (topic, _), records in sorted(log.items()) if topic == topics.derived for r in records
    ]
    config = replace(governor_config(settings), policy=policy)
    result = backtest(
        partitions, recorded_decisions(derived), config, tenant=args.tenant, since_ms=since
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else render_backtest(result))
    return 0
