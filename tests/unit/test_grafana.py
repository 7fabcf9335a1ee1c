"""The Grafana dashboard for compose users stays in step with sql/dashboards/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from govstream.grafana import MACROS, dashboard_json, grafana_sql
from sql.dashboards import load_panels

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "grafana" / "dashboards" / "govstream.json"


def test_the_committed_dashboard_is_the_generated_one() -> None:
    generated = dashboard_json(load_panels().values())
    assert COMMITTED.read_text() == generated, (
        "regenerate: govstream dashboard --grafana grafana/dashboards/govstream.json"
    )


def test_one_table_panel_per_query_with_no_server_side_placeholders() -> None:
    panels = load_panels()
    board = json.loads(COMMITTED.read_text())
    assert [p["title"] for p in board["panels"]] == [p.title for p in panels.values()]
    for item in board["panels"]:
        sql = item["targets"][0]["rawSql"]
        assert not re.search(r"(?<!\$)\{\w+:[^{}]+\}", sql), item["title"]
        assert "$__fromTime" in sql and "$__toTime" in sql
    assert board["templating"]["list"][0]["name"] == "tenant"


def test_parameters_become_macros() -> None:
    sql = "-- panel: x\nSELECT 1 WHERE t >= {from:DateTime64(6)} AND tenant = {tenant:String}"
    assert (
        grafana_sql(sql) == f"SELECT 1 WHERE t >= {MACROS['from']} AND tenant = {MACROS['tenant']}"
    )


def test_compose_runs_grafana_with_the_provisioning() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    mounts = {m.split(":")[1] for m in grafana["volumes"]}
    assert mounts == {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"}
    source = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    )["datasources"][0]
    assert source["uid"] == json.loads(COMMITTED.read_text())["panels"][0]["datasource"]["uid"]
