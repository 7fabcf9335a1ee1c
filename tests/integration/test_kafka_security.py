"""Kafka security on a real broker: a SASL_SSL listener (a CA and a broker certificate
made here with openssl, SCRAM users made by the broker's own storage tool), the
pipeline end to end over it, and a wrong password and an untrusted CA as one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.kafka_security import KafkaSecurity, configure
from govstream.broker import (
    ensure_kafka_libs,
    new_cluster_id,
    render_server_properties,
    require_java,
    wait_for_metadata,
)
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.processes import WorkerProcess, free_port
from govstream.settings import Settings, as_environment, kafka_security
from govstream.simulate import FleetConfig
from sql.client import open_clickhouse
from tests.conftest import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
USER, PASSWORD, STORE_PASSWORD = "alice", "alice-secret-1", "changeit"
OPERATOR_KEY = "sasl-operator-key"
WAIT = 300.0  # seconds, for a slow machine: waits end as soon as progress shows


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             cwd=directory)  # fmt: skip
    return directory / f"{name}.pem"


def _broker_keystore(directory: Path) -> Path:
    """A broker certificate for 127.0.0.1 signed by the test CA, as a PKCS12 keystore."""
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
             "broker.csr", "-subj", "/CN=localhost", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf",
             cwd=directory)  # fmt: skip
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile",
             "ca.pem", "-out", "broker.p12", "-name", "broker", "-passout",
             f"pass:{STORE_PASSWORD}", cwd=directory)  # fmt: skip
    return directory / "broker.p12"


class SaslBroker:
    """A one-node KRaft broker: PLAINTEXT for itself, SASL_SSL for the clients."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca = _ca(base, "ca")
        keystore = _broker_keystore(base)
        plain, self.port, controller = free_port(), free_port(), free_port()
        self.plain_bootstrap, self.bootstrap = f"127.0.0.1:{plain}", f"127.0.0.1:{self.port}"
        props = render_server_properties(
            port=plain, controller_port=controller, data_dir=base / "data"
        ).splitlines()
        replaced = {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},"
            f"SASL_SSL://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_SSL:SASL_SSL",
        }
        props = [
            f"{key}={replaced[key]}" if (key := line.split("=", 1)[0]) in replaced else line
            for line in props
        ]
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props += [
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
            "listener.name.sasl_ssl.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{PASSWORD}";',
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={keystore}",
            f"ssl.keystore.password={STORE_PASSWORD}",
            f"ssl.key.password={STORE_PASSWORD}",
        ]
        self.properties = base / "server.properties"
        self.properties.write_text("\n".join(props) + "\n")
        self.java, self.lib = require_java(), ensure_kafka_libs(Settings(home=base))
        users = [f"SCRAM-SHA-{n}=[name={USER},password={PASSWORD}]" for n in (256, 512)]
        subprocess.run(
            [self.java, "-cp", f"{self.lib}/*", "kafka.tools.StorageTool", "format",
             "-t", new_cluster_id(), "-c", str(self.properties),
             *(arg for user in users for arg in ("--add-scram", user))],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.log = (base / "broker.out").open("wb")
        self.proc = subprocess.Popen(
            [self.java, "-Xmx512m", "-cp", f"{self.lib}/*", "kafka.Kafka", str(self.properties)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_metadata(self.plain_bootstrap, WAIT, alive=lambda: self.proc.poll() is None)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    started = SaslBroker(tmp_path_factory.mktemp("sasl-broker"))
    try:
        yield started
    finally:
        started.stop()


def _secure(base: Path, broker: SaslBroker, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_username": USER, "kafka_password": PASSWORD, "kafka_ca_file": broker.ca,
        "api_keys": f"{OPERATOR_KEY}:*", **overrides,
    }  # fmt: skip
    return isolated_settings(base, broker.bootstrap, **fields)


def _govstream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **as_environment(settings)}
    return subprocess.run(
        [sys.executable, "-m", "govstream.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_pipeline_runs_over_sasl_ssl(broker: SaslBroker, tmp_path: Path) -> None:
    settings = _secure(tmp_path, broker)
    configure(kafka_security(settings))  # this process's clients (send, lag) too
    worker = WorkerProcess(settings, log_path=tmp_path / "worker.log")
    try:
        worker.wait_ready()
        fleet = FleetConfig(
            seed=5, tenants=3, sessions=40, start=datetime(2026, 11, 25, tzinfo=UTC)
        )
        truth: dict[str, Any] = asyncio.run(run_simulation(settings, fleet, progress=False))
        asyncio.run(wait_for_zero_lag(settings, broker.bootstrap, timeout=WAIT))
        for tenant, expected in truth["per_tenant"].items():
            reply = httpx.get(f"{worker.url}/v1/budgets/{tenant}", timeout=10,
                              headers={"Authorization": f"Bearer {OPERATOR_KEY}"})  # fmt: skip
            used = reply.json()["balances"]["tenant_cost_month"]["used"]
            assert used == expected["cost_usd_micros"], tenant
        with open_clickhouse(settings) as ch:  # through the worker, the engine's owner
            turns = ch.query("SELECT count() FROM turns FINAL").scalar()
        assert turns == sum(t["turns"] for t in truth["per_tenant"].values()) > 0
    finally:
        worker.stop()
        configure(KafkaSecurity())
    # The plaintext listener of the same broker is not where clients go: nothing on
    # the SASL_SSL port answers a plaintext client.
    plain = _govstream(_secure(tmp_path / "p", broker, kafka_security_protocol="PLAINTEXT",
                               kafka_sasl_mechanism=None), "lag")  # fmt: skip
    assert plain.returncode == 1 and plain.stderr.count("\n") == 1, plain.stderr


def test_a_wrong_password_is_one_line(broker: SaslBroker, tmp_path: Path) -> None:
    result = _govstream(_secure(tmp_path, broker, kafka_password="wrong"), "lag")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"Kafka at {broker.bootstrap} refused the connection" in result.stderr
    assert "uthentication failed" in result.stderr, result.stderr
    print(result.stderr, end="")


def test_an_untrusted_ca_is_one_line(broker: SaslBroker, tmp_path: Path) -> None:
    other = _ca(tmp_path, "other-ca")
    result = _govstream(_secure(tmp_path, broker, kafka_ca_file=other), "lag")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr
    print(result.stderr, end="")


def test_broker_status_answers_with_the_configured_security(
    broker: SaslBroker, tmp_path: Path
) -> None:
    result = _govstream(_secure(tmp_path, broker), "broker", "status")
    assert (result.returncode, result.stdout) == (
        0, f"external broker configured at {broker.bootstrap} (answering)\n"
    ), result.stderr  # fmt: skip
