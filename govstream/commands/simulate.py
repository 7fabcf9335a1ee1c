"""`govstream simulate`: send a seeded, realistic agent fleet to Kafka (or a file).

The generator (govstream/simulate.py) is pure; this module only parses flags,
sends the records in order, shows progress and writes the ground truth the
pipeline's results are checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from govstream.errors import GovstreamError, UsageError
from govstream.simulate import (
    MALFORMED_CODES,
    MAX_RETRIES,
    FleetConfig,
    Simulation,
    default_start,
    simulate,
)

if TYPE_CHECKING:
    from events.emitter import Emitter
    from govstream.settings import Settings

# Unacknowledged records in flight before we wait for the broker.
SEND_WINDOW = 2500
# Record kinds that carry a valid event -> the name they are counted under.
_EVENT_COUNTS = {
    "event": "events",
    "duplicate": "duplicates",
    "redelivery": "redeliveries",
    "retry": "retries",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="generate a seeded, realistic agent fleet and send it to Kafka",
        description=(
            "Generate tenants and agent sessions (turns, tool calls, approvals, lifecycle) "
            "deterministically from --seed, send them to Kafka (or --out a JSON Lines "
            "file) and write the ground truth to --truth."
        ),
    )
    parser.add_argument("--tenants", type=int, default=20, help="number of tenants (20)")
    parser.add_argument("--sessions", type=int, default=2000, help="number of sessions (2000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument(
        "--start", help="ISO time the fleet starts at, UTC if no offset (today 00:00 UTC - 1 day)"
    )
    parser.add_argument(
        "--span-hours", type=float, default=24.0, help="sessions spread over this many hours (24)"
    )
    parser.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        help="probability an event is sent twice (0..1, default 0)",
    )
    parser.add_argument(
        "--malformed-rate",
        type=float,
        default=0.0,
        help="probability a malformed record follows an event (0..1, default 0)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help=(
            "retry storm: send every event N times, the original then alternately an exact "
            "redelivery and a retry (same idempotency key, new event id, next attempt); "
            "the ground truth does not change (default 1: each event once)"
        ),
    )
    parser.add_argument("--environment", default="production", help="envelope environment")
    parser.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="write JSON Lines to FILE instead of sending to Kafka (malformed records are skipped)",
    )
    parser.add_argument(
        "--truth", metavar="FILE.json", help="ground truth file (default: <home>/truth.json)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    parser.set_defaults(func=_run)


def parse_start(text: str | None) -> datetime:
    """ISO 8601 date or date-time; naive means UTC."""
    if text is None:
        return default_start()
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--start: expected an ISO 8601 time such as 2026-01-01T00:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    if args.tenants < 1:
        raise UsageError(f"--tenants must be at least 1, got {args.tenants}")
    if args.sessions < 1:
        raise UsageError(f"--sessions must be at least 1, got {args.sessions}")
    if not (math.isfinite(args.span_hours) and args.span_hours > 0):
        raise UsageError(f"--span-hours must be a positive number, got {args.span_hours}")
    for flag, rate in (
        ("--duplicate-rate", args.duplicate_rate),
        ("--malformed-rate", args.malformed_rate),
    ):
        if not 0.0 <= rate <= 1.0:  # NaN fails this too
            raise UsageError(f"{flag} must be between 0 and 1, got {rate}")
    if not 1 <= args.retries <= MAX_RETRIES:
        raise UsageError(f"--retries must be between 1 and {MAX_RETRIES}, got {args.retries}")
    start = parse_start(args.start)
    try:
        return FleetConfig(
            seed=args.seed,
            tenants=args.tenants,
            sessions=args.sessions,
            start=start,
            span=timedelta(hours=args.span_hours),
            duplicate_rate=args.duplicate_rate,
            malformed_rate=args.malformed_rate,
            environment=args.environment,
            retries=args.retries,
        )
    except (ValueError, OverflowError) as exc:
        raise UsageError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from govstream.settings import load

    config = config_from_args(args)
    settings = load()
    asyncio.run(
        run_simulation(
            settings,
            config,
            out=Path(args.out) if args.out else None,
            truth_path=Path(args.truth) if args.truth else None,
            progress=not args.no_progress,
        )
    )
    return 0


# --- progress -----------------------------------------------------------------


class _Progress:
    """A rich bar on a terminal, else a line every ~10%; nothing when disabled."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None
        self._next_pct = 10

    def __enter__(self) -> _Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        pct = done * 100 // self.total
        if pct >= self._next_pct:
            print(f"{self.label}: {pct}% ({done:,}/{self.total:,} records)", file=sys.stderr)
            self._next_pct = (pct // 10 + 1) * 10

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- sending ------------------------------------------------------------------


async def send_simulation(
    emitter: Emitter,
    sim: Simulation,
    on_progress: Callable[[int], None] | None = None,
    *,
    window: int = SEND_WINDOW,
) -> dict[str, int]:
    """Send every record in order, pipelined; return counts: records, then per kind
    (events, duplicates, redeliveries, retries, malformed).

    Valid events are encoded and routed by the emitter (topics.route), raw
    malformed records go to the sessions topic keyed by their tenant. Records
    are handed to the producer strictly in list order, so per-key (per-tenant)
    order on the partition equals the simulation's order.
    """
    sessions_topic = emitter.topics.sessions
    # A duplicate or redelivery directly follows what it repeats and reuses its bytes.
    last_event: object = None
    prepared: tuple[str, bytes, bytes, list[tuple[str, bytes]] | None] = ("", b"", b"", None)
    pending: list[Any] = []
    counts = {"records": 0, **dict.fromkeys(_EVENT_COUNTS.values(), 0), "malformed": 0}
    for record in sim.records:
        if record.event is not None:
            if record.event is not last_event:
                prepared = emitter.prepare(record.event)
                last_event = record.event
            topic, key, value, headers = prepared
            counts[_EVENT_COUNTS[record.kind]] += 1
        else:
            assert record.raw is not None
            topic, key, value, headers = sessions_topic, record.key.encode(), record.raw, None
            counts["malformed"] += 1
        pending.append(await emitter.enqueue(topic, value, key, headers=headers))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            counts["records"] += len(pending)
            pending.clear()
            if on_progress:
                on_progress(counts["records"])
    if pending:
        await asyncio.gather(*pending)
        counts["records"] += len(pending)
        if on_progress:
            on_progress(counts["records"])
    emitter.sent += sum(counts[name] for name in _EVENT_COUNTS.values())
    return counts


async def _send_to_kafka(
    settings: Settings, sim: Simulation, registry: Any, progress: _Progress
) -> dict[str, int]:
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from events.emitter import Emitter
    from events.topics import Topics
    from govstream.broker import resolve_bootstrap  # lazy: the broker module is heavy
    from govstream.settings import record_signer
    from streams.admin import ensure_topics

    bootstrap = resolve_bootstrap(settings)
    topics = Topics(settings.topic_prefix)
    try:
        await ensure_topics(bootstrap, topics, settings.topic_partitions)
        async with Emitter(
            bootstrap, topics=topics, registry=registry, signer=record_signer(settings)
        ) as emitter:
            return await send_simulation(emitter, sim, progress.update)
    except KafkaConnectionError:
        raise  # one line, like every command's (govstream.cli)
    except KafkaError as exc:
        raise GovstreamError(f"kafka at {bootstrap}: {exc}") from None


def _write_jsonl(path: Path, sim: Simulation, progress: _Progress) -> dict[str, int]:
    from events.jsonl import to_json_line

    counts = {"records": 0, **dict.fromkeys(_EVENT_COUNTS.values(), 0), "malformed": 0}
    counts["skipped"] = 0
    last_event: object = None
    line = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for n, record in enumerate(sim.records, start=1):
                if record.event is None:
                    counts["skipped"] += 1  # raw bytes have no JSON form
                else:
                    if record.event is not last_event:  # a duplicate/redelivery reuses its line
                        line = to_json_line(record.event)
                        last_event = record.event
                    handle.write(line + "\n")
                    counts["records"] += 1
                    counts[_EVENT_COUNTS[record.kind]] += 1
                if n % 1000 == 0:
                    progress.update(n)
            progress.update(len(sim.records))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    return counts


def _write_truth(path: Path, truth: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # readers never see half a file
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


async def run_simulation(
    settings: Settings,
    config: FleetConfig,
    *,
    out: Path | str | None = None,
    truth_path: Path | str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate, send (Kafka, or JSON Lines with `out`), write the truth; return it.

    Prints the final summary line on stdout. With `out`, malformed records are
    skipped (JSON Lines cannot carry raw bytes) and the returned truth says so:
    malformed_sent is zero and malformed_skipped holds what was left out. A
    retry storm (config.retries > 1) sends more records but leaves the truth
    as it is: the summary line counts the redeliveries and retries.
    """
    registry = None
    codec = None
    if out is None and settings.schema_registry_url:
        # Same registry for the generator and the emitter: invalid_event records
        # then carry the schema id the worker will resolve.
        from events.codec import Codec
        from events.registry import registry_from_settings

        registry = registry_from_settings(settings.schema_registry_url)
        codec = Codec(registry)
    started = time.perf_counter()
    sim = await asyncio.to_thread(simulate, config, codec=codec)
    generated = time.perf_counter() - started
    truth = dict(sim.truth)
    if progress:
        print(
            f"simulated {config.tenants} tenants, {config.sessions} sessions "
            f"(seed {config.seed}): {len(sim.records):,} records in {generated:.1f}s",
            file=sys.stderr,
        )

    started = time.perf_counter()
    label = "writing" if out is not None else "sending"
    with _Progress(len(sim.records), label, progress) as bar:
        if out is not None:
            counts = _write_jsonl(Path(out), sim, bar)
        else:
            if registry is None:
                from events.registry import registry_from_settings

                registry = registry_from_settings(settings.schema_registry_url)
            counts = await _send_to_kafka(settings, sim, registry, bar)
    elapsed = time.perf_counter() - started

    if out is not None:
        truth["sink"] = {"kind": "jsonl", "path": str(out)}
        skipped = counts["skipped"]
        if skipped:
            print(
                f"govstream: warning: skipped {skipped} malformed records "
                "(JSON Lines cannot carry raw bytes)",
                file=sys.stderr,
            )
            truth["malformed_skipped"] = truth["malformed_sent"]
            truth["malformed_sent"] = dict.fromkeys(MALFORMED_CODES, 0)
            truth["records_sent"] -= skipped
    else:
        truth["sink"] = {"kind": "kafka", "topic_prefix": settings.topic_prefix}

    path = Path(truth_path) if truth_path is not None else settings.home / "truth.json"
    _write_truth(path, truth)
    rate = counts["records"] / elapsed if elapsed > 0 else float("inf")
    verb = "sent" if out is None else f"wrote {out}:"
    print(f"ground truth: {path}")
    storm = (
        f"{counts['redeliveries']} redeliveries, {counts['retries']} retries, "
        if config.retries > 1
        else ""
    )
    print(
        f"{verb} {counts['records']} records ({counts['events']} events, "
        f"{counts['duplicates']} duplicates, {storm}{counts['malformed']} malformed) "
        f"in {elapsed:.1f}s ({rate:,.0f} rec/s)"
    )
    return truth
