"""The local broker for real: Java, Kafka 4.x, a transactional round trip, stop.

Uses its own GOVSTREAM home (and so its own broker and ports), never the session
broker of tests/conftest.py nor any broker started by hand. The jar cache is the
user's (settings.cache_dir), so only the very first run downloads from Maven.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from govstream import broker
from govstream.commands import broker as broker_command
from govstream.errors import GovstreamError
from govstream.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    # Java and Maven are prerequisites of the project (README): no skip, a failure.
    settings = Settings(home=tmp_path / "home", kafka_bootstrap=None)
    yield settings
    broker.stop_broker(settings, purge=True)  # never leave a broker behind, even on failure


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _produce_in_transaction(bootstrap: str, topic: str, value: bytes) -> None:
    # Transactional, as the worker's exactly_once is: proves the one-node txn log settings.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str) -> bytes:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert message.value is not None
    return message.value


def _status_exit(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> int:
    import argparse

    monkeypatch.setenv("GOVSTREAM_HOME", str(settings.home))
    monkeypatch.setenv("GOVSTREAM_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.delenv("GOVSTREAM_KAFKA_BOOTSTRAP", raising=False)
    parser = argparse.ArgumentParser()
    broker_command.register(parser.add_subparsers())
    args = parser.parse_args(["broker", "status"])
    return int(args.func(args))


def test_start_reuse_roundtrip_stop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = broker.ensure_broker(settings)
    assert handle.started and handle.pid is not None
    assert handle.bootstrap.startswith("127.0.0.1:")
    pid = handle.pid

    info = broker.broker_status(settings)
    assert info is not None and info.ready
    assert (info.pid, info.bootstrap) == (pid, handle.bootstrap)
    assert info.log_path.is_file() and info.log_path.stat().st_size > 0
    assert _status_exit(monkeypatch, settings) == 0
    assert f"broker running at {handle.bootstrap} (pid {pid})" in capsys.readouterr().out

    again = broker.ensure_broker(settings)
    assert (again.pid, again.started, again.bootstrap) == (pid, False, handle.bootstrap)
    assert broker.resolve_bootstrap(settings) == handle.bootstrap

    topic = f"test-broker-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(handle.bootstrap, topic))
    asyncio.run(_produce_in_transaction(handle.bootstrap, topic, b"hello"))
    assert asyncio.run(_consume_one(handle.bootstrap, topic)) == b"hello"

    began = time.monotonic()
    assert broker.stop_broker(settings) is True
    assert time.monotonic() - began < broker.STOP_TIMEOUT  # clean SIGTERM shutdown
    assert _gone(pid)
    assert broker.broker_status(settings) is None
    assert _status_exit(monkeypatch, settings) == broker_command.NOT_RUNNING
    assert broker.stop_broker(settings) is False
    with pytest.raises(GovstreamError):
        broker.resolve_bootstrap(settings)


def test_restart_on_new_ports_keeps_data(settings: Settings) -> None:
    first = broker.ensure_broker(settings)
    topic = f"test-keep-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(first.bootstrap, topic))
    asyncio.run(_produce_in_transaction(first.bootstrap, topic, b"kept"))
    assert broker.stop_broker(settings) is True

    # Hold the old port so the restart has to move; the formatted data dir must follow.
    host, port = broker.parse_bootstrap(first.bootstrap)[0]
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
        blocker.bind((host, port))
        blocker.listen()
        second = broker.ensure_broker(settings)
        assert second.started and second.bootstrap != first.bootstrap
        assert asyncio.run(_consume_one(second.bootstrap, topic)) == b"kept"

    assert broker.stop_broker(settings, purge=True) is True
    assert not (settings.broker_dir / "data").exists()
