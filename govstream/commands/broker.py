"""`govstream broker start | stop | status`: the local single-node Kafka broker."""

from __future__ import annotations

import argparse
from typing import Any

from govstream import broker
from govstream.settings import load

# Exit status of `status` when no broker is running (0 = running).
NOT_RUNNING = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "broker",
        help="start/stop/inspect the local Kafka broker",
        description="Manage a local single-node Apache Kafka broker (KRaft) on 127.0.0.1.",
    )
    actions = parser.add_subparsers(dest="broker_command", metavar="ACTION")
    actions.required = True

    start = actions.add_parser("start", help="start the broker (or reuse the running one)")
    start.add_argument(
        "--timeout",
        type=float,
        default=broker.DEFAULT_START_TIMEOUT,
        help="seconds to wait for the broker to answer (default: %(default).0f)",
    )
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker started by `broker start`")
    stop.add_argument("--purge", action="store_true", help="also delete its data (all topics)")
    stop.set_defaults(func=_stop)

    status = actions.add_parser(
        "status", help=f"show the broker; exit {NOT_RUNNING} if none is running"
    )
    status.add_argument(
        "--bootstrap",
        action="store_true",
        help="print only the address clients connect to "
        "(export GOVSTREAM_KAFKA_BOOTSTRAP=$(govstream broker status --bootstrap))",
    )
    status.set_defaults(func=_status)


def _start(args: argparse.Namespace) -> int:
    settings = load()
    if settings.kafka_bootstrap:
        print(f"external broker configured at {settings.kafka_bootstrap}; not starting one")
        return 0
    handle = broker.ensure_broker(settings, timeout=args.timeout)
    if handle.started:
        print(
            f"broker ready at {handle.bootstrap} (pid {handle.pid}) "
            f"in {handle.startup_seconds:.1f}s"
        )
    else:
        print(f"broker already running at {handle.bootstrap} (pid {handle.pid})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    settings = load()
    stopped = broker.stop_broker(settings, purge=args.purge)
    print("broker stopped" if stopped else "no broker running")
    if args.purge:
        print(f"data deleted: {settings.broker_dir / 'data'}")
    if settings.kafka_bootstrap:
        print(f"(the external broker at {settings.kafka_bootstrap} is not managed here)")
    return 0


def _answers(bootstrap: str) -> bool:
    """Whether an external broker answers, with the configured security (TLS, SASL)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from streams.admin import reachable

    try:
        asyncio.run(reachable(bootstrap))
    except KafkaError:
        return False
    return True


def _status(args: argparse.Namespace) -> int:
    settings = load()
    if args.bootstrap:
        print(broker.resolve_bootstrap(settings))  # one line, or a one-line error
        return 0
    if settings.kafka_bootstrap:
        ok = _answers(settings.kafka_bootstrap)
        state = "answering" if ok else "NOT answering"
        print(f"external broker configured at {settings.kafka_bootstrap} ({state})")
        return 0 if ok else NOT_RUNNING
    info = broker.broker_status(settings)
    if info is None:
        print("no broker running")
        return NOT_RUNNING
    if not info.ready:
        print(
            f"broker process {info.pid} is running but not answering at {info.bootstrap}"
            f" (log: {info.log_path})"
        )
        return NOT_RUNNING
    print(f"broker running at {info.bootstrap} (pid {info.pid})")
    print(f"  kafka:     {info.kafka_version or '?'}")
    print(f"  bootstrap: {info.bootstrap}")
    print(f"  pid:       {info.pid}")
    print(f"  log:       {info.log_path}")
    print(f"  uptime:    {_duration(info.uptime)}")
    return 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
