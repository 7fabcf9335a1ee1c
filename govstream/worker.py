"""`govstream worker`: the composition root of one stream-processing worker.

Start-up, in order: resolve the broker, open ClickHouse as the owner of the
embedded engine (or a server client), apply migrations, build the services
(the ClickHouse sink, the governor) and the web routes behind the guard,
create the topics, then run Faust (its worker, web server and services; no
agents, no tables). With embedded ClickHouse this process is the engine's
only owner: it serves read-only SQL to the CLI over its web port and
registers itself in the owner file until it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from concurrent.futures import ThreadPoolExecutor

import faust

from events.codec import Codec
from events.registry import registry_from_settings
from events.topics import Topics
from govstream.broker import resolve_bootstrap
from govstream.console import mount_console
from govstream.errors import UsageError
from govstream.settings import Settings, governor_config
from projections.slo import load_slo
from sql.client import ClickHouse, open_clickhouse, register_owner
from sql.migrate import apply_migrations
from sql.retention import apply_retention, check_retention
from streams.admin import ensure_topics, reachable, worker_groups
from streams.admission import AdmissionApi
from streams.app import create_app
from streams.backlog import BacklogRecorder
from streams.governor import Drill, Governor
from streams.http_guard import Guard, new_local_secret, registered_worker
from streams.ingest import InputRules
from streams.otlp_intake import OtlpIntake, pricer
from streams.sink import ClickHouseSink, SinkStats
from streams.views import register_views

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, loglevel: str = "warn") -> int:
    # Everything the worker needs is checked before it connects or reads a record:
    # a bad policy document is one line and exit 2, not a halted partition later.
    config = governor_config(settings)
    rules = InputRules.from_settings(settings)
    try:
        check_retention(settings.retention_days)
    except UsageError as exc:
        raise UsageError(f"bad setting GOVSTREAM_RETENTION_DAYS: {exc}") from None
    bootstrap = resolve_bootstrap(settings)
    # Before Faust starts: an unreachable broker is one line (govstream.cli), not a
    # traceback from inside the worker, and not the client's reconnect chatter.
    client_log = logging.getLogger("aiokafka")
    client_log.propagate = False
    try:
        asyncio.run(reachable(bootstrap))
    finally:
        client_log.propagate = True
    topics = Topics(settings.topic_prefix)
    # One thread: chDB is driven from exactly one thread, off the event loop.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
    clickhouse = open_clickhouse(settings, role="owner")
    applied = apply_migrations(clickhouse, cluster=settings.clickhouse_cluster)
    for name in applied:
        print(f"applied migration {name}", flush=True)
    apply_retention(clickhouse, settings.retention_days, settings.clickhouse_cluster)

    local_secret = new_local_secret()
    guard = Guard(settings.api_key_tenants, local_secret)
    app = create_app(settings, bootstrap, middlewares=[guard.middleware])
    owner_url = f"http://{settings.web_host}:{settings.web_port}"
    codec = Codec(
        registry_from_settings(settings.schema_registry_url),
        max_record_bytes=settings.max_record_bytes,
    )
    services: list[faust.Service] = []
    stats = SinkStats()
    governor: Governor | None = None
    if settings.worker_agents in ("all", "sink"):
        sink = ClickHouseSink(
            bootstrap=bootstrap,
            group_id=settings.sink_group,
            topics=topics,
            codec=codec,
            clickhouse=clickhouse,
            executor=executor,
            batch_size=settings.sink_batch_size,
            flush_seconds=settings.sink_flush_seconds,
            processes=settings.sink_processes,
            schema_registry_url=settings.schema_registry_url,
            rules=rules,
            redaction_patterns=settings.redaction_patterns,
        )
        services.append(sink)
        stats = sink.stats
    # The governor: every decision (lifecycle, policy, budgets, memory) and the
    # admission API that asks it.
    if settings.worker_agents in ("all", "governor"):
        governor = Governor(
            bootstrap=bootstrap,
            group_id=settings.governor_group,
            url=owner_url,
            topics=topics,
            codec=codec,
            rules=rules,
            config=config,
            checkpoint_records=settings.governor_checkpoint_records,
            checkpoint_ms=settings.governor_checkpoint_ms,
            fetch_records=settings.governor_fetch_records,
            drill=Drill(
                fail_on=settings.governor_drill_fail_on,
                checkpoint_pause_ms=settings.governor_drill_checkpoint_pause_ms,
                fetch_pause_ms=settings.governor_drill_fetch_pause_ms,
            ),
        )
        services.append(governor)
        api = AdmissionApi(
            governor,
            partitions=settings.topic_partitions,
            http=lambda: app.http_client,
            self_url=owner_url,
            timeout=settings.admission_timeout_seconds,
            context_token_budget=settings.context_token_budget,
        )
        api.mount(app.web.web_app.router)  # type: ignore[attr-defined]
    # OTLP/HTTP GenAI spans -> events on the tenant's log (docs/otlp.md).
    intake = OtlpIntake(
        bootstrap=bootstrap,
        client_id=f"{settings.consumer_group}-otlp",
        topics=topics,
        codec=codec,
        price=pricer(config.prices, config.fallback_price),
        max_body_bytes=settings.otlp_max_body_bytes,
        remembered_sessions=settings.otlp_remembered_sessions,
        idle_close_seconds=settings.otlp_idle_close_seconds,
    )
    intake.mount(app.web.web_app.router)  # type: ignore[attr-defined]
    services.append(intake)
    if settings.backlog_interval_seconds > 0:
        services.append(
            BacklogRecorder(
                bootstrap=bootstrap,
                groups=worker_groups(settings, settings.worker_agents),
                clickhouse=clickhouse,
                executor=executor,
                interval=settings.backlog_interval_seconds,
            )
        )

    def migrate(ch: ClickHouse) -> tuple[list[str], list[str]]:
        """`govstream migrate` through this owner: its own migration files, no SQL in."""
        cluster = settings.clickhouse_cluster
        return apply_migrations(ch, cluster=cluster), apply_retention(
            ch, settings.retention_days, cluster
        )

    register_views(
        app,
        clickhouse=clickhouse,
        executor=executor,
        stats=stats,
        governor=governor,
        migrate=migrate,
        otlp=intake.counts,
    )
    # The console: KPIs, charts and tables for people, tenant keys scoped to their tenant.
    slo_document = load_slo(settings.resolved_slo_path)
    mount_console(
        app.web.web_app.router,  # type: ignore[attr-defined]
        guard=guard,
        clickhouse=clickhouse,
        executor=executor,
        slo=slo_document,
    )
    changelogs = (topics.governor_changelog(settings.governor_group),)
    created = asyncio.run(ensure_topics(bootstrap, topics, settings.topic_partitions, changelogs))
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)

    owner = (
        register_owner(settings, owner_url, local_secret) if settings.clickhouse_embedded else None
    )
    worker = faust.Worker(app, *services, loglevel=loglevel, redirect_stdouts=False, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so it can spin on
    # every record: each logger.debug() in aiokafka and Faust then builds a
    # LogRecord. Profiled at 11% of the processors' time once. No spinner.
    worker.spinner = None
    # The sink allocates ~10^5 short-lived objects per batch and none of them
    # form cycles; the default thresholds would run the cyclic GC every 700
    # allocations over the long-lived start-up heap. Freeze that heap, collect
    # less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    group = settings.consumer_group
    print(f"worker {group} consuming from {bootstrap}; web at {owner_url}", flush=True)
    try:
        registration = registered_worker(settings, owner_url, local_secret)
        with registration, owner or contextlib.nullcontext():
            worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
        if governor is not None and governor.failure is not None:
            print(f"govstream worker: the governor stopped: {governor.failure}", flush=True)
            return code or 3
        return code
    finally:
        executor.shutdown(wait=True)
        clickhouse.close()
    return 0
