"""Web views of the worker: health, and SQL for the embedded engine's owner.

Every route sits behind the guard (streams/http_guard.py), which lists who may call it.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import asdict

import faust
from aiohttp import web

from sql.client import ClickHouse, Migrate, mount_owner_routes
from streams.admission import json_response
from streams.governor import Governor
from streams.otlp_intake import IntakeCounts
from streams.sink import SinkStats


def register_views(
    app: faust.App,
    *,
    clickhouse: ClickHouse,
    executor: Executor,
    stats: SinkStats,
    governor: Governor | None,
    migrate: Migrate,
    otlp: IntakeCounts,
) -> None:
    """GET /v1/health: 200 {"status": "ok", ...}, or 503 {"status": "failed", "reason"}
    when the governor halted a partition (a fold that raised: nothing past the
    record was committed). `?digest=1` adds each partition's state digest."""

    async def health(request: web.Request) -> web.Response:
        digest = request.query.get("digest") == "1"
        governed = governor.health(digest) if governor is not None else None
        failed = governed is not None and governed["status"] != "ok"
        body = {
            "status": "failed" if failed else "ok",
            "reason": governed["reason"] if governed else None,
            "sink": stats.as_dict(),
            "governor": governed,
            "otlp": asdict(otlp),  # POST /v1/traces
            # the partitions of the tenant log this worker owns
            "assigned": sorted(int(p) for p in (governed or {}).get("partitions", {})),
        }
        return json_response(body, status=503 if failed else 200)

    router = app.web.web_app.router  # type: ignore[attr-defined]
    router.add_get("/v1/health", health)
    # Faust's web server is aiohttp: the owner routes (read-only SQL for the
    # CLI while this process holds embedded ClickHouse) mount on it as they are.
    mount_owner_routes(app.web.web_app, clickhouse, executor, migrate)  # type: ignore[attr-defined]
