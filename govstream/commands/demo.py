"""`govstream demo`: broker, worker, simulated fleet, SQL summary; then clean up."""

from __future__ import annotations

import argparse

from govstream.errors import UsageError
from govstream.settings import load


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the pipeline end to end on a simulated fleet")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from govstream.demo import run_demo

    if args.tenants < 1 or args.sessions < 1:
        raise UsageError("--tenants and --sessions must be at least 1")
    return run_demo(
        load(),
        tenants=args.tenants,
        sessions=args.sessions,
        seed=args.seed,
        progress=not args.no_progress,
    )
