"""`govstream verify FILE.avro`: check an evidence export's hash chain and manifest.

Exit 0 with the "OK: ..." line when every record, the order, the count, the
embedded schemas and the manifest agree and the manifest is signed with this
deployment's key (GOVSTREAM_POLICY_SIGNING_KEY); exit 1 with the one-line
report of the first problem, naming its seq and Kafka position
(events.evidence).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from govstream.errors import UsageError

FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="verify an evidence export (hash chain, manifest)"
    )
    parser.add_argument("file", type=Path, metavar="FILE.avro", help="a `govstream export` file")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from events.evidence import verify_export
    from govstream.settings import load, manifest_keys

    path: Path = args.file
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    report = verify_export(path, manifest_keys(load()))
    print(report.message)
    return 0 if report.ok else FAILED
