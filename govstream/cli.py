"""The `govstream` console script.

Each sub-command lives in govstream/commands/<name>.py and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed args, returning an exit status). Expected failures raise GovstreamError
and end as one line on stderr; nothing the user typed causes a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
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
    "prices",
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


UNREACHABLE = (
    "cannot reach Kafka at {where}: start the local broker (`govstream broker start`) or "
    "check GOVSTREAM_KAFKA_BOOTSTRAP"
)
_HOST_PORT = re.compile(r"\('([^']+)', (\d+),")


def _unreachable(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError

    return isinstance(exc, KafkaConnectionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "worker":
        # A one-shot command speaks for itself in one line: the Kafka client's
        # reconnect chatter and unclosed-client notices are not for its user.
        for name in ("aiokafka", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        status = args.func(args)
    except GovstreamError as exc:
        print(f"govstream: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if not _unreachable(exc):
            raise  # a bug: loud, with its traceback
        text = str(exc).splitlines()[0]
        hosts = [f"{host}:{port}" for host, port in _HOST_PORT.findall(text)]
        where = ", ".join(hosts) or text.removeprefix("KafkaConnectionError: ")
        print(f"govstream: {UNREACHABLE.format(where=where)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("govstream: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
