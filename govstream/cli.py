"""The `govstream` console script.

Each sub-command lives in govstream/commands/<name>.py and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed args, returning an exit status). Expected failures raise GovstreamError
and end as one line on stderr; nothing the user typed causes a traceback.

The light install (no extras) is the producer SDK: a command that needs the
pipeline's packages (Faust, ClickHouse, YAML policies) says so in one line and
names the extra that brings them.
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


WORKER_EXTRA = "pip install 'govstream[worker]'"
_OURS = frozenset({"govstream", "events", "streams", "projections", "sql", "policies"})


def needs_extra(command: str, exc: ModuleNotFoundError) -> GovstreamError | None:
    """The one-line answer when a command needs a package of the worker extra;
    None when the missing module is one of ours (a broken install: a bug)."""
    missing = (exc.name or "").split(".")[0]
    if not missing or missing in _OURS:
        return None
    return GovstreamError(
        f"`govstream {command}` needs the worker extra (no module named {missing!r}): "
        f"{WORKER_EXTRA}"
    )


def _unavailable(subparsers: argparse._SubParsersAction, name: str, error: GovstreamError) -> None:
    """A command whose module cannot load without the extra: listed, and says why."""
    # No option prefix: every argument, --help included, reaches the refusal.
    parser = subparsers.add_parser(
        name, help="(needs the worker extra)", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("rest", nargs="*")

    def refuse(_: argparse.Namespace) -> int:
        raise error

    parser.set_defaults(func=refuse)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="govstream", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"govstream.commands.{name}")
        except ModuleNotFoundError as exc:
            error = needs_extra(name, exc)
            if error is None:
                raise
            _unavailable(subparsers, name, error)
            continue
        module.register(subparsers)
    return parser


UNREACHABLE = (
    "cannot reach Kafka at {where}: start the local broker (`govstream broker start`) or "
    "check GOVSTREAM_KAFKA_BOOTSTRAP"
)
REFUSED = "Kafka at {where} refused the connection: {reason} (GOVSTREAM_KAFKA_* settings)"
_HOST_PORT = re.compile(r"\('([^']+)', (\d+),")


class _ConnectFailures(logging.Handler):
    """Keeps why the Kafka client could not connect (it logs the reason, then raises a
    bare "Unable to bootstrap"): a TLS or SASL refusal is named, not hidden."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Unable connect to"):
            self.last = text.split(": ", 1)[-1]


FAILURES = _ConnectFailures()


def _unreachable(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaConnectionError

    return isinstance(exc, KafkaConnectionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").addHandler(FAILURES)
    if args.command != "worker":
        # A one-shot command speaks for itself in one line: the Kafka client's
        # reconnect chatter and unclosed-client notices are not for its user.
        logging.getLogger("aiokafka").propagate = False
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        status = args.func(args)
    except GovstreamError as exc:
        print(f"govstream: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        error = needs_extra(args.command, exc)
        if error is None:
            raise
        print(f"govstream: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as exc:
        if not _unreachable(exc):
            raise  # a bug: loud, with its traceback
        text = str(exc).splitlines()[0]
        hosts = [f"{host}:{port}" for host, port in _HOST_PORT.findall(text)]
        where = ", ".join(hosts) or text.removeprefix("KafkaConnectionError: ")
        reason = FAILURES.last or ""
        if "Connect call failed" in reason or not reason:
            message = UNREACHABLE.format(where=where)
        else:  # it answered, and refused us: TLS or SASL
            message = REFUSED.format(where=where, reason=reason)
        print(f"govstream: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("govstream: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
