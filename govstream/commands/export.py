"""`govstream export session ID --out FILE.avro`: a session's records as evidence.

The archive names where the session's records are: its tenant's records on
the tenant log up to the session's last one (what `replay session` folds)
and the session's derived records; exactly those are read from Kafka and written with
events.evidence.write_export: an Avro container file with the writer schemas
embedded and a hash chain over the exact log bytes, its manifest in the
container metadata. `govstream verify FILE` checks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from govstream.errors import GovstreamError, UsageError
from govstream.settings import load, manifest_keys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a session as hash-chained Avro evidence")
    actions = parser.add_subparsers(dest="export_command", metavar="WHAT")
    actions.required = True
    session = actions.add_parser(
        "session",
        help="a session's log records as an Avro container file with a hash chain",
    )
    session.add_argument("session_id", metavar="ID", help="the session id")
    session.add_argument(
        "--out", type=Path, required=True, metavar="FILE.avro", help="the file to write"
    )
    session.add_argument("--app-id", help="the worker's app id (GOVSTREAM_APP_ID)")
    session.set_defaults(func=_session)


def _session(args: argparse.Namespace) -> int:
    from events.codec import Codec
    from events.evidence import ExportError, write_export
    from events.registry import EmbeddedRegistry
    from govstream.commands.replay import read_session_records

    out: Path = args.out
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    settings = load(app_id=args.app_id)
    _, records = read_session_records(settings, args.session_id, derived=True)
    try:
        manifest = write_export(
            out, args.session_id, records, Codec(EmbeddedRegistry()), keys=manifest_keys(settings)
        )
    except ExportError as exc:
        out.unlink(missing_ok=True)
        raise GovstreamError(f"cannot export session {args.session_id}: {exc}") from None
    except OSError as exc:
        raise GovstreamError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(
        f"wrote {manifest['record_count']} records of session {args.session_id} to {out}; "
        f"last hash {manifest['last_hash']}"
    )
    return 0
