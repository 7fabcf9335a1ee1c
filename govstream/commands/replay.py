"""`govstream replay session ID` (and `replay rebuild`): a session's timeline and state.

`replay session` finds where the session's records are in the log through the
ClickHouse archive (sql/queries/session_positions.sql), reads exactly those
records from Kafka (streams.log_reader.read_positions, no topic scan), decodes
them and hands them to the pure fold in projections/timeline.py, which gives
the timeline (time, event, decision, budget after) and the state at `--at`
(default: after the last event). `--source FILE` replays an evidence export
(`govstream export session`) instead: no Kafka, no ClickHouse.

`replay rebuild` rebuilds every projection from offset zero (streams/rebuild.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events.evidence import MANIFEST_KEY, SCHEMAS_KEY, LogRecord, iter_events, read_export
from events.models import CATALOG, SessionEvent
from govstream.commands.slo import parse_at
from govstream.errors import GovstreamError, UsageError
from govstream.settings import Settings, load
from projections.timeline import SessionReplay, render_state, render_table, replay

QUERIES = Path(__file__).resolve().parents[2] / "sql" / "queries"
Located = tuple[LogRecord, SessionEvent]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay a session's timeline, or rebuild the projections from the log"
    )
    actions = parser.add_subparsers(dest="replay_command", metavar="ACTION")
    actions.required = True

    session = actions.add_parser(
        "session",
        help="a session's timeline and its state at an instant",
        description="Read a session's records from the log (found through the archive), "
        "or from an evidence export, and print its timeline and state.",
    )
    session.add_argument("session_id", metavar="ID", help="the session id")
    session.add_argument(
        "--at", metavar="TIMESTAMP", help="state at this UTC time (ISO 8601); default: the end"
    )
    session.add_argument(
        "--source", type=Path, metavar="FILE", help="an evidence export instead of the log"
    )
    session.add_argument("--json", action="store_true", help="timeline and state as JSON")
    session.add_argument("--app-id", help="the worker's app id (GOVSTREAM_APP_ID)")
    session.set_defaults(func=_session)

    rebuild = actions.add_parser(
        "rebuild", help="rebuild every projection from offset zero and diff it with live state"
    )
    rebuild.add_argument("--out", type=Path, metavar="DIR", help="where to write the rebuild")
    rebuild.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait (default: %(default).0f)"
    )
    rebuild.add_argument("--app-id", help="the worker's app id (GOVSTREAM_APP_ID)")
    rebuild.set_defaults(func=_rebuild)


def _rebuild(args: argparse.Namespace) -> int:
    from govstream.broker import resolve_bootstrap
    from govstream.commands.lag import wait_for_zero_lag
    from streams.rebuild import RebuildReport, rebuild

    settings = load(app_id=args.app_id)
    bootstrap = resolve_bootstrap(settings)
    timeout = float(args.timeout)
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out) if args.out else settings.home / "rebuild" / run

    async def main() -> RebuildReport:
        await wait_for_zero_lag(settings, bootstrap, timeout, "processors")
        return await rebuild(settings, bootstrap, out_dir=out_dir)

    report = asyncio.run(main())
    keys = ", ".join(f"{name} {count}" for name, count in report.keys.items())
    print(
        f"rebuilt from offset zero: {report.records:,} records "
        f"({report.folded:,} folded) in {report.fold_seconds:.2f} s "
        f"({report.rate:,.0f} records/s) into {report.out_dir}"
    )
    print(f"compared keys: {keys}")
    if report.divergences:
        print(f"DIVERGED: {len(report.divergences)} key(s); first: {report.divergences[0]}")
        return 1
    print("live state equals rebuilt state, byte for byte")
    return 0


# --- reading a session --------------------------------------------------------------


def session_positions(settings: Settings, session_id: str) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every archived record of the session, in time order."""
    from sql.client import open_clickhouse

    with open_clickhouse(settings, role="client") as clickhouse:
        result = clickhouse.query(
            (QUERIES / "session_positions.sql").read_text(), {"session": session_id}
        )
    return [(str(t), int(p), int(o)) for t, p, o in result.rows]


def read_session_records(settings: Settings, session_id: str) -> list[LogRecord]:
    """The session's records from Kafka at the positions the archive names.

    Raises GovstreamError when the archive knows no record of the session.
    """
    from govstream.broker import resolve_bootstrap
    from streams.log_reader import read_positions

    positions = session_positions(settings, session_id)
    if not positions:
        raise GovstreamError(f"no records for session {session_id} in the archive")
    bootstrap = resolve_bootstrap(settings)
    return asyncio.run(read_positions(bootstrap, positions))


def decode_records(settings: Settings, records: list[LogRecord]) -> list[Located]:
    """Take the records through the ingest rules the worker applies (streams/ingest.py);
    one the worker would not apply, or that is not a session event, is an error."""
    from events.codec import Codec
    from events.registry import EmbeddedRegistry
    from streams.ingest import InputRules, Rejected, ingest

    codec = Codec(EmbeddedRegistry())
    rules = InputRules.from_settings(settings)
    out: list[Located] = []
    for record in records:
        item = ingest(codec, record, rules)
        if isinstance(item, Rejected):
            letter = item.dead_letter
            raise GovstreamError(f"{record.position}: {letter.reason_code}: {letter.reason}")
        if not isinstance(item.event, SessionEvent):
            kind = type(item.event).__name__
            raise GovstreamError(f"{record.position}: {kind} is not a session event")
        out.append((record, item.event))
    return out


def records_from_export(path: Path, session_id: str) -> list[Located]:
    """The session's events from an evidence export (embedded schemas, no registry)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        metadata, _ = read_export(path)
        manifest = json.loads(metadata[MANIFEST_KEY])
        if SCHEMAS_KEY not in metadata:
            raise ValueError("no embedded schemas")
        located: list[Located] = []
        for entry, record in iter_events(path):
            event = CATALOG[entry["event_type"]].model_validate(record)
            position = LogRecord(
                entry["topic"],
                entry["partition"],
                entry["offset"],
                entry["timestamp_ms"],
                entry["value"],
            )
            located.append((position, event))  # type: ignore[arg-type]
    except Exception as exc:  # an unreadable file is one line, not a traceback
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise GovstreamError(f"{path}: not a readable evidence export ({detail})") from None
    if manifest.get("session_id") != session_id:
        raise UsageError(f"{path} holds session {manifest.get('session_id')!r}, not {session_id!r}")
    if not all(isinstance(event, SessionEvent) for _, event in located):
        raise GovstreamError(f"{path}: holds records that are not session events")
    return located


def load_session(args: argparse.Namespace) -> list[Located]:
    if args.source is not None:
        located = records_from_export(args.source, args.session_id)
        if not located:
            raise GovstreamError(f"no records for session {args.session_id} in {args.source}")
        return located
    settings = load(app_id=args.app_id)
    return decode_records(settings, read_session_records(settings, args.session_id))


def render(result: SessionReplay, at: datetime | None) -> str:
    return f"{render_table(result.rows, at=at)}\n\n{render_state(result.state)}"


def _session(args: argparse.Namespace) -> int:
    at = parse_at(args.at) if args.at is not None else None
    located = load_session(args)
    result = replay(located, at)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=_json_default))
    else:
        print(render(result, at))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
