"""Web views of the worker: health, sink stats, and SQL for the engine owner."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import faust
from faust.web import Request, Response, View

from sql.client import ClickHouse, handle_owner_request
from streams.sink import SinkStats


def register_views(
    app: faust.App, *, clickhouse: ClickHouse, executor: Executor, stats: SinkStats
) -> None:
    @app.page("/v1/health")
    class Health(View):
        async def get(self, request: Request, **kwargs: Any) -> Response:
            return self.json({"status": "ok", "sink": stats.as_dict()})

    @app.page("/v1/clickhouse/{action}")
    class ClickHouseOwner(View):
        """Serves SQL to other processes while this one owns embedded ClickHouse."""

        async def post(self, request: Request, action: str, **kwargs: Any) -> Response:
            body = await request.read()  # type: ignore[attr-defined]  # aiohttp request
            status, payload = await handle_owner_request(
                clickhouse, executor, f"/v1/clickhouse/{action}", body
            )
            return self.json(payload, status=status)
