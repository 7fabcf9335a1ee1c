"""`govstream emit FILE|-`: send JSON Lines events, all or nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from govstream.errors import UsageError
from govstream.settings import load, record_signer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "emit", help='send JSON Lines events ({"type": "TurnCompleted", ...}) to Kafka'
    )
    parser.add_argument("file", help="a .jsonl file, or - for standard input")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="shift every occurred_at by one offset so the latest is now, spacing kept "
        "(a sample or an old file, which the worker would refuse as too old)",
    )
    parser.set_defaults(func=_run)


def _read_lines(name: str) -> list[str]:
    if name == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(name, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text") from None


def _run(args: argparse.Namespace) -> int:
    from events.jsonl import parse_lines

    events, errors = parse_lines(_read_lines(args.file))
    if errors:
        # Validate everything first: one bad line means nothing is sent.
        for error in errors[:50]:
            print(f"govstream: {error}", file=sys.stderr)
        if len(errors) > 50:
            print(f"govstream: ... and {len(errors) - 50} more invalid lines", file=sys.stderr)
        print(f"govstream: {len(errors)} invalid line(s); nothing was sent", file=sys.stderr)
        return 2
    if not events:
        print("no events to send", file=sys.stderr)
        return 0
    if args.retime:
        events = _retimed(events, datetime.now(UTC))
    settings = load()
    started = time.perf_counter()
    sent = asyncio.run(_send(settings, events))
    elapsed = time.perf_counter() - started
    print(f"sent {sent} events in {elapsed:.2f}s ({sent / elapsed:,.0f} events/s)")
    return 0


def _retimed(events: list[BaseModel], now: datetime) -> list[BaseModel]:
    shift = now - max(e.occurred_at for e in events)  # type: ignore[attr-defined]
    return [e.model_copy(update={"occurred_at": e.occurred_at + shift}) for e in events]  # type: ignore[attr-defined]


async def _send(settings, events) -> int:  # type: ignore[no-untyped-def]
    from events.emitter import Emitter
    from events.topics import Topics
    from govstream.broker import resolve_bootstrap
    from streams.admin import ensure_topics

    bootstrap = resolve_bootstrap(settings)
    topics = Topics(settings.topic_prefix)
    await ensure_topics(bootstrap, topics, settings.topic_partitions)
    async with Emitter(
        bootstrap,
        topics=topics,
        schema_registry_url=settings.schema_registry_url,
        signer=record_signer(settings),
    ) as emitter:
        return await emitter.emit_many(events)
