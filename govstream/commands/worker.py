"""`govstream worker`: run the ClickHouse sink and the governor until stopped."""

from __future__ import annotations

import argparse

from govstream.settings import load


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run the worker (sink, governor, API)")
    parser.add_argument("--web-port", type=int, help="web port (GOVSTREAM_WEB_PORT)")
    parser.add_argument("--app-id", help="consumer group / app id (GOVSTREAM_APP_ID)")
    parser.add_argument(
        "--agents",
        choices=["all", "sink", "governor"],
        help="run only the sink or only the governor (GOVSTREAM_WORKER_AGENTS)",
    )
    parser.add_argument(
        "--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"]
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from govstream.worker import run_worker  # Faust imports are slow; load on use

    settings = load(web_port=args.web_port, app_id=args.app_id, worker_agents=args.agents)
    return run_worker(settings, loglevel=args.loglevel)
