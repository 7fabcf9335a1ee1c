"""compose.yaml: no Docker engine runs here, so check what can be checked."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from govstream.cli import build_parser
from govstream.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
GOVSTREAM_SERVICES = [n for n, s in SERVICES.items() if "govstream" in str(s.get("command", ""))]


def test_stack_has_the_services_the_design_names() -> None:
    assert {"kafka", "clickhouse", "migrate", "worker", "sink"} <= set(SERVICES)


@pytest.mark.parametrize("name", GOVSTREAM_SERVICES)
def test_every_command_parses_with_the_cli(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[0] == "govstream"
    args = build_parser().parse_args(command[1:])  # exits (fails) on an unknown command
    assert callable(args.func)


def test_split_workers_run_apps_of_their_own_and_share_the_groups() -> None:
    apps, groups = set(), set()
    for name in ("worker", "sink"):
        args = build_parser().parse_args(SERVICES[name]["command"][1:])
        settings = Settings(worker_agents=args.agents)
        apps.add(settings.consumer_group)
        groups.add((settings.governor_group, settings.sink_group))
    assert len(apps) == 2  # two Faust applications
    assert len(groups) == 1  # one governor group, one sink group, whoever runs them


def test_ports_match_the_settings() -> None:
    env = SERVICES["migrate"]["environment"]
    bootstrap_port = int(env["GOVSTREAM_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    assert f"{bootstrap_port}:{bootstrap_port}" in SERVICES["kafka"]["ports"]
    assert (
        f"PLAINTEXT://kafka:{bootstrap_port}"
        in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    clickhouse_port = urlparse(env["GOVSTREAM_CLICKHOUSE_URL"]).port
    assert f"{clickhouse_port}:{clickhouse_port}" in SERVICES["clickhouse"]["ports"]
    default_web_port = Settings().web_port
    worker_args = build_parser().parse_args(SERVICES["worker"]["command"][1:])
    assert worker_args.web_port == default_web_port
    assert f"{default_web_port}:{default_web_port}" in SERVICES["worker"]["ports"]
    sink_args = build_parser().parse_args(SERVICES["sink"]["command"][1:])
    assert f"{sink_args.web_port}:{sink_args.web_port}" in SERVICES["sink"]["ports"]


def test_single_node_kafka_is_configured_for_transactions() -> None:
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
