"""The `govstream` console script.

Each sub-command lives in govstream/commands/<name>.py and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed args, returning an exit status). Expected failures raise GovstreamError
and end as one line on stderr; nothing the user typed causes a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from govstream.errors import GovstreamError

COMMAND_MODULES = (
    "broker",
    "migrate",
    "sql",
    "emit",
    "worker",
    "simulate",
    "lag",
    "demo",
    "schemas",
    "slo",
    "dashboard",
    "policy",
    "reprice",
    "replay",
    "export",
    "verify",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"govstream: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="govstream", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"govstream.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except GovstreamError as exc:
        print(f"govstream: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("govstream: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
