"""The Faust App, and nothing else: agents and views register on it elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust

from events import kafka_security
from govstream.settings import Settings


def create_app(settings: Settings, bootstrap: str, middlewares: Sequence[Any] = ()) -> faust.App:
    """The worker's Faust App. `middlewares` guard its web server (streams/http_guard.py)."""
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{bootstrap}",
        broker_credentials=kafka_security.current().faust_credentials(),
        # No Faust tables: the governor keeps its own state and changelog.
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,  # Faust declares only its internal topics (leader, changelogs)
        autodiscover=False,
        datadir=str(settings.home / "faust"),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own views answer without credentials (tables' content, the
        # cluster layout): none is served. The guard refuses any route it does
        # not list besides.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_application_options={"middlewares": list(middlewares)},
        # Faust's own consumer carries no records (the sink and the governor have their
        # own): a dead member of its group holds a restart's join (and a stop) until
        # its session ends, 60 s by Faust's default.
        broker_session_timeout=10.0,
        # Larger fetches and buffers: the sink works in batches anyway.
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=16384,
        broker_max_poll_records=5000,
        broker_commit_every=20_000,
        broker_commit_interval=1.0,
        producer_linger=0.005,
        consumer_auto_offset_reset="earliest",
    )
    # With the statistics off Faust mounts its placeholder index at "/" instead;
    # serve no framework view at all.
    app.web.blueprints._enabled.clear()
    return app
