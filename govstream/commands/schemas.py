"""`govstream schemas generate|check`: keep .avsc files in step with the models."""

from __future__ import annotations

import argparse

from govstream.errors import GovstreamError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schemas", help="generate or check the Avro schemas")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("generate", help="write new schema versions for changed models").set_defaults(
        func=_generate
    )
    sub.add_parser("check", help="fail if a model differs from its schema").set_defaults(
        func=_check
    )
    sub.add_parser(
        "docs", help="write docs/events.md and docs/lifecycle.md from the models and the machine"
    ).set_defaults(func=_docs)


def _generate(args: argparse.Namespace) -> int:
    from events.schemagen import generate

    try:
        written = generate()
    except ValueError as exc:
        raise GovstreamError(str(exc)) from None
    for line in written:
        print(f"wrote {line}")
    if not written:
        print("schemas up to date")
    return 0


def _check(args: argparse.Namespace) -> int:
    from events.schemagen import drift

    stale = drift()
    if stale:
        raise GovstreamError(
            f"schemas out of date for {', '.join(stale)}: run `govstream schemas generate`"
        )
    print("schemas up to date")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from govstream.contract import write_docs

    for path in write_docs():
        print(f"wrote {path}")
    return 0
