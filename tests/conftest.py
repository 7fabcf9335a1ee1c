"""Test backends: the same integration cases run against every backend present.

Kafka: the project's own local broker (always; started once per test session
and stopped at its end), an external broker when GOVSTREAM_KAFKA_BOOTSTRAP is
set, and a testcontainers broker when a Docker engine answers.
ClickHouse: embedded chDB (always, owned by the worker process under test) and
a testcontainers ClickHouse server when a Docker engine answers.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # no client library, no socket, no engine: all mean "no Docker"
        return False


@dataclass(frozen=True)
class Backend:
    kafka: str  # "local" | "external" | "container"
    clickhouse: str  # "embedded" | "container"

    def __str__(self) -> str:
        return f"kafka={self.kafka},clickhouse={self.clickhouse}"


def _backends() -> list[Backend]:
    kafka = "external" if os.environ.get("GOVSTREAM_KAFKA_BOOTSTRAP") else "local"
    found = [Backend(kafka, "embedded")]
    if docker_answers():
        found.append(Backend("container", "container"))
    return found


BACKENDS = _backends()


class _Brokers:
    """Starts each kind of broker at most once per test session."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bootstraps: dict[str, str] = {}
        self._stops: list = []  # type: ignore[type-arg]

    def bootstrap(self, kind: str) -> str:
        if kind not in self.bootstraps:
            self.bootstraps[kind] = self._start(kind)
        return self.bootstraps[kind]

    def _start(self, kind: str) -> str:
        if kind == "external":
            return os.environ["GOVSTREAM_KAFKA_BOOTSTRAP"]
        if kind == "container":
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft()
            container.start()
            self._stops.append(container.stop)
            return container.get_bootstrap_server()
        from govstream.broker import ensure_broker, stop_broker

        settings = Settings(home=self.base / "broker", kafka_bootstrap=None)
        handle = ensure_broker(settings)
        self._stops.append(lambda: stop_broker(settings))
        return handle.bootstrap

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            stop()


class _ClickHouseServers:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self._stops: list = []  # type: ignore[type-arg]

    def url(self, kind: str) -> str | None:
        if kind == "embedded":
            return None
        if kind not in self.urls:
            from testcontainers.clickhouse import ClickHouseContainer

            container = ClickHouseContainer()
            container.start()
            self._stops.append(container.stop)
            host = container.get_container_host_ip()
            port = container.get_exposed_port(8123)
            self.urls[kind] = f"http://{container.username}:{container.password}@{host}:{port}"
        return self.urls[kind]

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Brokers]:
    registry = _Brokers(tmp_path_factory.mktemp("kafka"))
    yield registry
    registry.stop_all()


@pytest.fixture(scope="session")
def clickhouse_servers() -> Iterator[_ClickHouseServers]:
    servers = _ClickHouseServers()
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def local_bootstrap(brokers: _Brokers) -> str:
    """The bootstrap of the first backend's broker (for tests that need just Kafka)."""
    return brokers.bootstrap(BACKENDS[0].kafka)


def isolated_settings(
    base: Path, bootstrap: str, clickhouse_url: str | None = None, **overrides: object
) -> Settings:
    """Settings with their own topics, consumer group, web port and ClickHouse."""
    run = uuid.uuid4().hex[:8]
    fields: dict[str, object] = {
        "home": base,
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"test-{run}",
        "app_id": f"test-worker-{run}",
        "web_port": free_port(),
        "clickhouse_url": clickhouse_url,
        "clickhouse_database": f"test_{run}",
        "topic_partitions": 3,
        # The fixtures replay fixed historic dates (2026-11-20...): no age bound,
        # so the suite passes on any later day. Bounds have tests of their own.
        "max_event_age_days": 36_500,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@contextmanager
def running_worker(
    backend: Backend,
    brokers: _Brokers,
    clickhouse_servers: _ClickHouseServers,
    base: Path,
    *,
    operator_key: str | None = None,
    loglevel: str = "warn",
    **overrides: object,
) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A worker on `backend` with isolated settings (`overrides` on top), ready; with an
    operator key, also owning its partitions (its admission API answers)."""
    from tests.kafka_io import wait_for_partitions

    settings = isolated_settings(
        base,
        brokers.bootstrap(backend.kafka),
        clickhouse_servers.url(backend.clickhouse),
        **overrides,
    )
    process = WorkerProcess(settings, log_path=base / "worker.log", loglevel=loglevel)
    try:
        process.wait_ready()
        if operator_key is not None:
            wait_for_partitions(process.url, operator_key)
        yield settings, process
    finally:
        process.stop()


def poll(
    what: str, probe: Callable[[], Any], ready: Callable[[Any], bool], *, seconds: float
) -> Any:
    """`probe()` until `ready` says yes; progress-based: `seconds` only bounds a stuck
    pipeline, for a slow machine."""
    deadline = time.monotonic() + seconds
    value = probe()
    while not ready(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {seconds}s")
        time.sleep(0.25)
        value = probe()
    return value


def bearer(key: str) -> dict[str, str]:
    """The header an API key goes in."""
    return {"Authorization": f"Bearer {key}"}


def worker_fixture(
    name: str, *, operator_key: str, yield_url: bool = True, **overrides: object
) -> Any:
    """A module-scoped `worker` fixture per backend: a running_worker with the operator
    key and `overrides`, yielding (settings, its URL), or (settings, the process)."""

    @pytest.fixture(scope="module", params=BACKENDS, ids=str, name="worker")
    def worker(
        request: pytest.FixtureRequest,
        brokers: _Brokers,
        clickhouse_servers: _ClickHouseServers,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[tuple[Settings, Any]]:
        base = tmp_path_factory.mktemp(name)
        with running_worker(
            request.param, brokers, clickhouse_servers, base,
            operator_key=operator_key, loglevel="info", **overrides,
        ) as (settings, process):  # fmt: skip
            yield settings, process.url if yield_url else process

    return worker
