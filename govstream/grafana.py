"""The Grafana dashboard JSON for compose users, generated from sql/dashboards/. Pure.

One panel per dashboard query, in file order, as tables fed by the ClickHouse
datasource (grafana-clickhouse-datasource). The queries keep their text; only
the bound parameters become the plugin's macros and a dashboard variable:
{from:DateTime64(6)} -> $__fromTime, {to:DateTime64(6)} -> $__toTime,
{tenant:String} -> '${tenant:sqlstring}' (a text-box variable; the
sqlstring format escapes quotes, so a tenant stays a value), the same for
{workflow:String} and {model:String}, {top:UInt32} -> 10.

`grafana/dashboards/govstream.json` is the generated file compose mounts
(`govstream dashboard --grafana grafana/dashboards/govstream.json` writes it);
a test fails when it differs from what this module generates. Not run
against a Grafana here: no Docker engine on the development machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "govstream-clickhouse"}
MACROS = {
    "from": "$__fromTime",
    "to": "$__toTime",
    "tenant": "'${tenant:sqlstring}'",
    "workflow": "'${workflow:sqlstring}'",
    "model": "'${model:sqlstring}'",
    "top": "10",
}
# Text-box variables ('' = all), one per filter the panels take.
VARIABLES = ("tenant", "workflow", "model")
_PLACEHOLDER = re.compile(r"\{(\w+):[^{}]+\}")


def grafana_sql(sql: str) -> str:
    """The query with every server-side parameter replaced by its Grafana form."""

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in MACROS:
            raise ValueError(f"no Grafana form for parameter {name!r}")
        return MACROS[name]

    # Drop the `-- ` header and comments: Grafana shows the SQL in its editor.
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return _PLACEHOLDER.sub(swap, body).strip()


def dashboard(panels: Iterable[Any]) -> dict[str, Any]:
    """Grafana dashboard JSON (schema 39) with one table panel per query."""
    items = []
    for index, panel in enumerate(panels):
        items.append(
            {
                "id": index + 1,
                "type": "table",
                "title": panel.title,
                "description": f"Unit: {panel.unit}. Query: sql/dashboards/{panel.name}.sql",
                "datasource": DATASOURCE,
                "gridPos": {"h": 9, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 9},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DATASOURCE,
                        "editorType": "sql",
                        "format": 1,
                        "rawSql": grafana_sql(panel.sql),
                    }
                ],
            }
        )
    return {
        "uid": "govstream",
        "title": "govstream",
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": name,
                    "label": f"{name} ('' = all)",
                    "type": "textbox",
                    "query": "",
                    "current": {"text": "", "value": ""},
                }
                for name in VARIABLES
            ]
        },
        "panels": items,
    }


def dashboard_json(panels: Iterable[Any]) -> str:
    return json.dumps(dashboard(panels), indent=2, ensure_ascii=False) + "\n"
