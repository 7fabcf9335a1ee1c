"""How fast can a Faust agent consume at all? A no-op agent over the same topic.

Run by bench/run.py in a child process (Faust owns its event loop and exits
the process when done); prints one line: `FAUST_PROBE <records> <seconds>`.
Why it exists: it is the measurement behind running the ClickHouse sink as a
batch consumer service rather than as a Faust agent (streams/sink.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import faust


def main() -> None:
    bootstrap, prefix, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = faust.App(
        f"{prefix}-faust-probe-{os.getpid()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        processing_guarantee="exactly_once",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-probe-"),
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=16384,
        broker_max_poll_records=5000,
        broker_commit_every=20_000,
        broker_commit_interval=1.0,
    )
    source = app.topic(
        f"{prefix}.sessions", f"{prefix}.tenants", key_serializer="raw", value_serializer="raw"
    )
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source, concurrency=1)
    async def noop(stream: faust.StreamT) -> None:
        async for events in stream.take_events(5000, within=0.5):
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(events)
            if seen["n"] >= expected:
                elapsed = time.perf_counter() - seen["t0"]
                # Faust redirects sys.stdout into its logger: write to the fd.
                os.write(1, f"FAUST_PROBE {seen['n']} {elapsed:.3f}\n".encode())
                os._exit(0)  # the measurement is all we wanted

    # As in govstream/worker.py: no spinner, whose handler puts the root logger at DEBUG.
    faust.Worker._setup_spinner_handler = lambda self, logger, level: None  # type: ignore[method-assign]
    sys.argv = [sys.argv[0], "worker", "-l", "error", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
