"""Web views of the worker: health and sink stats, and SQL for the engine owner.

Every route sits behind the guard (streams/http_guard.py), which lists who may call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import faust
from faust.web import Request, Response, View

from sql.client import ClickHouse, Migrate, mount_owner_routes
from streams.sink import SinkStats
from streams.stats import AgentStats


def register_views(
    app: faust.App,
    *,
    clickhouse: ClickHouse,
    executor: Executor,
    stats: SinkStats,
    agents: Mapping[str, AgentStats] | None = None,
    migrate: Migrate,
) -> None:
    agent_stats = dict(agents or {})

    @app.page("/v1/health")
    class Health(View):
        async def get(self, request: Request, **kwargs: Any) -> Response:
            assigned = sorted([tp.topic, tp.partition] for tp in app.assignor.assigned_actives())
            return self.json(
                {
                    "status": "ok",
                    "sink": stats.as_dict(),
                    "agents": {name: s.as_dict() for name, s in agent_stats.items()},
                    # the Faust partitions this worker owns (its agents' and tables')
                    "assigned": assigned,
                }
            )

    # Faust's web server is aiohttp: the owner routes (SQL for other processes
    # while this one holds embedded ClickHouse) mount on it as they are.
    mount_owner_routes(app.web.web_app, clickhouse, executor, migrate)  # type: ignore[attr-defined]
