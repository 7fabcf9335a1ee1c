"""`govstream replay session ID` (and `replay rebuild`): a session's timeline and state.

`replay session` finds the session's tenant and its place in the tenant log
through the ClickHouse archive (sql/queries/session_tenant.sql), reads the
tenant's records up to the session's last one from Kafka at exactly their
positions (tenant_log_positions.sql, streams.log_reader.read_positions, no
topic scan), takes them through the ingest rules and folds them with the
governor's own fold (projections/timeline.py): the timeline (time, event,
decision, budget after) and the state at `--at` (default: after the last
event). `--source FILE` replays an evidence export (`govstream export
session`, which holds the same records) instead: no Kafka, no ClickHouse. The
export is verified first, as `govstream verify` does (hash chain, manifest and
its signature): a file that fails is refused (exit 1, naming the first bad
record) unless `--no-verify` is given.

`replay rebuild` folds the whole tenant log again and compares every state key
and every derived event with live (streams/rebuild.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events.evidence import MANIFEST_KEY, SCHEMAS_KEY, LogRecord, iter_events, read_export
from events.models import CATALOG, Event, SessionEvent
from events.topics import Topics, is_derived_topic
from govstream.commands.slo import parse_at
from govstream.errors import GovstreamError, UsageError
from govstream.settings import Settings, governor_config, load, manifest_keys
from projections.timeline import SessionReplay, render_state, render_table, replay
from sql.dashboards import load_query

Located = tuple[LogRecord, Event]


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
    session.add_argument("--tenant", help="the session's tenant (when two tenants use the id)")
    session.add_argument(
        "--at", metavar="TIMESTAMP", help="state at this UTC time (ISO 8601); default: the end"
    )
    session.add_argument(
        "--source", type=Path, metavar="FILE", help="an evidence export instead of the log"
    )
    session.add_argument(
        "--no-verify",
        action="store_true",
        help="with --source: replay the file even if its chain or signature does not verify",
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
        await wait_for_zero_lag(settings, bootstrap, timeout, "governor")
        return await rebuild(settings, governor_config(settings), bootstrap, out_dir=out_dir)

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


# --- reading a session ---------------------------------------------------------------


def _query(settings: Settings, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    from sql.client import open_clickhouse

    with open_clickhouse(settings, role="client") as clickhouse:
        return clickhouse.query(load_query(name), params).rows


def session_place(settings: Settings, session_id: str, tenant: str | None) -> tuple[str, int, int]:
    """(tenant, partition, offset of its last record) of a session in the tenant log."""
    topic = Topics(settings.topic_prefix).sessions
    rows = _query(settings, "session_tenant", {"session": session_id, "topic": topic})
    if tenant is not None:
        rows = [r for r in rows if r[0] == tenant]
    if not rows:
        raise GovstreamError(f"no records for session {session_id} in the archive")
    if len({r[0] for r in rows}) > 1:
        tenants = ", ".join(sorted({str(r[0]) for r in rows}))
        raise UsageError(f"session {session_id} exists for tenants {tenants}: name one (--tenant)")
    tenant_id, partition, last = rows[0]
    return str(tenant_id), int(partition), int(last)


def read_session_records(
    settings: Settings, session_id: str, tenant: str | None = None, *, derived: bool = False
) -> tuple[str, list[LogRecord]]:
    """(tenant, the tenant's records on the tenant log up to the session's last one),
    read from Kafka at the positions the archive names; with `derived`, the
    session's derived records follow (what an export keeps as evidence).

    Raises GovstreamError when the archive knows no record of the session.
    """
    from govstream.broker import resolve_bootstrap
    from streams.log_reader import read_positions

    topics = Topics(settings.topic_prefix)
    tenant_id, partition, last = session_place(settings, session_id, tenant)
    params = {"tenant": tenant_id, "topic": topics.sessions, "partition": partition, "last": last}
    positions = [
        (str(t), int(p), int(o)) for t, p, o in _query(settings, "tenant_log_positions", params)
    ]
    if derived:
        params = {"session": session_id, "tenant": tenant_id, "topic": topics.derived}
        found = _query(settings, "session_positions", params)
        positions += [(str(t), int(p), int(o)) for t, p, o in found]
    bootstrap = resolve_bootstrap(settings)
    return tenant_id, asyncio.run(read_positions(bootstrap, positions))


def decode_records(settings: Settings, records: list[LogRecord]) -> list[Located]:
    """Take the records through the ingest rules the worker applies (streams/ingest.py);
    a record the worker would not apply is an error."""
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
        out.append((record, item.event))
    return out


def records_from_export(path: Path, session_id: str) -> tuple[str, list[Located]]:
    """(tenant, the tenant-log records) of an evidence export (embedded schemas, no
    registry); its derived records are evidence, not input to the fold."""
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
            if not is_derived_topic(position.topic):
                located.append((position, event))  # type: ignore[arg-type]
    except Exception as exc:  # an unreadable file is one line, not a traceback
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise GovstreamError(f"{path}: not a readable evidence export ({detail})") from None
    if manifest.get("session_id") != session_id:
        raise UsageError(f"{path} holds session {manifest.get('session_id')!r}, not {session_id!r}")
    tenants = {e.tenant_id for _, e in located if isinstance(e, SessionEvent)}
    if not located or not tenants:
        raise GovstreamError(f"no records for session {session_id} in {path}")
    return sorted(tenants)[0], located


def verify_source(path: Path, settings: Settings, *, check: bool) -> None:
    """Refuse an export whose chain, manifest or signature does not verify."""
    from events.evidence import verify_export

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if not check:
        print(f"warning: {path} replayed without verification (--no-verify)", file=sys.stderr)
        return
    report = verify_export(path, manifest_keys(settings))
    if not report.ok:
        raise GovstreamError(
            f"{path}: {report.message}; not replayed (--no-verify replays it anyway)"
        )


def load_session(args: argparse.Namespace) -> SessionReplay:
    at = parse_at(args.at) if args.at is not None else None
    settings = load(app_id=args.app_id)
    if args.source is not None:
        verify_source(args.source, settings, check=not args.no_verify)
        tenant, located = records_from_export(args.source, args.session_id)
    else:
        tenant, records = read_session_records(settings, args.session_id, args.tenant)
        located = decode_records(settings, records)
    return replay(located, tenant, args.session_id, governor_config(settings), at)


def render(result: SessionReplay, at: datetime | None) -> str:
    return f"{render_table(result.rows, at=at)}\n\n{render_state(result.state)}"


def _session(args: argparse.Namespace) -> int:
    at = parse_at(args.at) if args.at is not None else None
    result = load_session(args)
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
