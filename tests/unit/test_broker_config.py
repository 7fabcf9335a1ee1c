"""The local broker's pure parts (rendered files, ids, addresses) and its safety checks.

Nothing here starts Java or Maven: a fake ``mvn`` script stands in for Maven Central.
"""

from __future__ import annotations

import argparse
import base64
import os
import stat
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from govstream import broker
from govstream.commands import broker as broker_command
from govstream.errors import GovstreamError
from govstream.settings import Settings


def _settings(tmp_path: Path, **extra: object) -> Settings:
    # Explicit kafka_bootstrap=None: an exported GOVSTREAM_KAFKA_BOOTSTRAP must not leak in.
    values: dict[str, object] = {
        "home": tmp_path / "home",
        "cache_dir": tmp_path / "cache",
        "kafka_bootstrap": None,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- server.properties


def _props(**kwargs: object) -> dict[str, str]:
    defaults: dict[str, object] = {
        "port": 39092,
        "controller_port": 39093,
        "data_dir": Path("/var/lib/govstream/kafka/data"),
    }
    defaults.update(kwargs)
    return broker.parse_properties(broker.render_server_properties(**defaults))  # type: ignore[arg-type]


def test_properties_single_node_kraft_on_loopback() -> None:
    props = _props()
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:39093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:39092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert props["log.dirs"] == "/var/lib/govstream/kafka/data"


def test_properties_let_transactions_work_on_one_node() -> None:
    props = _props()
    # exactly_once needs the transaction log to be creatable with a single replica
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert "transaction.max.timeout.ms" not in props  # Kafka's default is kept
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_properties_never_auto_create_topics() -> None:
    props = _props()
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"


def test_message_max_bytes_only_raised() -> None:
    assert "message.max.bytes" not in _props()
    assert "message.max.bytes" not in _props(message_max_bytes=1000)
    assert _props(message_max_bytes=5_000_000)["message.max.bytes"] == "5000000"


def test_property_values_are_escaped_for_java() -> None:
    assert broker._prop(r"C:\data") == r"C:\\data"
    assert broker._prop("/tmp/dätä") == "/tmp/d\\u00e4t\\u00e4"  # Properties reads latin-1
    assert broker._prop("/tmp/🙂") == "/tmp/\\ud83d\\ude42"
    assert broker._prop(" lead") == "\\ lead"
    text = broker.render_server_properties(port=1, controller_port=2, data_dir=Path("/tmp/ü data"))
    text.encode("ascii")  # nothing Java could misread


# --------------------------------------------------------------------------- log4j2 / pom / ids


def test_log4j2_writes_only_to_the_given_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"
    props = broker.parse_properties(broker.render_log4j2_properties(log))
    assert props["appender.file.fileName"] == str(log)
    assert props["appender.file.filePattern"] == f"{log}.%i"
    assert props["rootLogger.appenderRef.file.ref"] == "FILE"
    assert not any("Console" in value for value in props.values())


def test_pom_pulls_kafka_and_the_slf4j_binding() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(broker.render_pom("4.1.1"))
    deps = {
        (d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns)): (
            d.findtext("m:version", namespaces=ns)
        )
        for d in root.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps == {
        ("org.apache.kafka", "kafka_2.13"): "4.1.1",
        ("org.apache.logging.log4j", "log4j-slf4j-impl"): "2.24.3",
    }
    assert root.findtext("m:packaging", namespaces=ns) == "pom"


def test_cluster_id_is_a_kafka_uuid() -> None:
    for _ in range(200):
        cid = broker.new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_parse_bootstrap() -> None:
    assert broker.parse_bootstrap("127.0.0.1:9092") == [("127.0.0.1", 9092)]
    assert broker.parse_bootstrap("a:1, b:2") == [("a", 1), ("b", 2)]
    assert broker.parse_bootstrap("[::1]:9092") == [("::1", 9092)]
    with pytest.raises(GovstreamError):
        broker.parse_bootstrap("localhost")


@pytest.mark.parametrize("version", ["3.9.0", "../4.1.1", "4.1.1</version>"])
def test_bad_kafka_versions_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(GovstreamError):
        broker.ensure_kafka_libs(_settings(tmp_path, kafka_version=version))


@pytest.mark.parametrize("heap", ["768m", "1g", "1024"])
def test_heap_ok(heap: str) -> None:
    assert broker._check_heap(heap) == heap


@pytest.mark.parametrize("heap", ["", "-Xmx1g", "1 g", "768mb"])
def test_heap_bad(heap: str) -> None:
    with pytest.raises(GovstreamError):
        broker._check_heap(heap)


# --------------------------------------------------------------------------- java / maven / cache


def test_missing_java_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GovstreamError, match=r"^java not found: install a Java 17\+ runtime"):
        broker.require_java()


def test_missing_mvn_only_matters_with_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GovstreamError, match=r"^mvn not found: install Apache Maven"):
        broker.ensure_kafka_libs(settings)

    lib = broker.kafka_lib_dir(settings)
    assert lib == (tmp_path / "cache" / "kafka" / "4.1.1" / "lib").resolve()
    lib.mkdir(parents=True)
    (lib / broker.LIB_MARKER).write_text("{}")
    assert broker.ensure_kafka_libs(settings) == lib  # cached: no mvn needed


def _fake_mvn(bin_dir: Path, *, fail: bool = False) -> Path:
    """An ``mvn`` that 'downloads' two jars into -DoutputDirectory and counts its calls."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = bin_dir / "calls"
    script = bin_dir / "mvn"
    body = (
        'echo "[ERROR] Could not resolve dependencies for project" >&2; exit 1'
        if fail
        else textwrap.dedent(
            """\
            for arg in "$@"; do
              case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
            done
            grep -q '<artifactId>kafka_2.13</artifactId>' "$4" || exit 3
            mkdir -p "$out"
            touch "$out/kafka_2.13-4.1.1.jar" "$out/kafka-clients-4.1.1.jar"
            """
        )
    )
    script.write_text(f'#!/bin/sh\necho x >> "{calls}"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return calls


def test_resolution_is_cached_and_leaves_no_temp_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_mvn(tmp_path / "bin")
    # First on PATH, so it shadows a real mvn; the system dirs give the script its tools.
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    settings = _settings(tmp_path)

    lib = broker.ensure_kafka_libs(settings)
    assert sorted(p.name for p in lib.glob("*.jar")) == [
        "kafka-clients-4.1.1.jar",
        "kafka_2.13-4.1.1.jar",
    ]
    assert (lib / broker.LIB_MARKER).is_file()
    assert os.listdir(lib.parent) == ["lib"]  # the temp resolve dir is gone
    err = capsys.readouterr().err
    assert "resolving Apache Kafka 4.1.1 from Maven Central ..." in err
    assert f"cached in {lib}" in err

    assert broker.ensure_kafka_libs(settings) == lib
    assert calls.read_text().count("x") == 1  # second call downloaded nothing


def test_failed_resolution_reports_maven_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_mvn(tmp_path / "bin", fail=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    settings = _settings(tmp_path)
    with pytest.raises(GovstreamError, match="Could not resolve dependencies"):
        broker.ensure_kafka_libs(settings)
    assert os.listdir(broker.kafka_lib_dir(settings).parent) == []


# --------------------------------------------------------------------------- state and safety


def test_no_broker_without_state(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert broker.broker_status(settings) is None
    assert broker.stop_broker(settings) is False
    with pytest.raises(GovstreamError, match="run `govstream broker start`"):
        broker.resolve_bootstrap(settings)


def test_external_broker_is_used_as_is(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_bootstrap="kafka.example:9092")
    assert broker.resolve_bootstrap(settings) == "kafka.example:9092"
    handle = broker.ensure_broker(settings)
    assert (handle.bootstrap, handle.pid, handle.started, handle.external) == (
        "kafka.example:9092",
        None,
        False,
        True,
    )
    assert not settings.broker_dir.exists()  # nothing was prepared, nothing started


def test_stop_never_kills_a_pid_that_is_not_our_broker(tmp_path: Path) -> None:
    """A recycled pid in broker.json must survive `stop`; the stale state goes."""
    settings = _settings(tmp_path)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        settings.broker_dir.mkdir(parents=True)
        info = broker.BrokerInfo(
            pid=victim.pid,
            port=1,
            controller_port=2,
            bootstrap="127.0.0.1:1",
            log_path=settings.broker_dir / "logs" / "server.log",
            started_at=0.0,
        )
        (settings.broker_dir / broker.STATE_FILE).write_text(info.to_json())
        assert broker.broker_status(settings) is None
        assert broker.stop_broker(settings) is False
        assert victim.poll() is None
        assert not (settings.broker_dir / broker.STATE_FILE).exists()
    finally:
        victim.kill()
        victim.wait()


def test_state_round_trips(tmp_path: Path) -> None:
    info = broker.BrokerInfo(
        pid=42,
        port=39092,
        controller_port=39093,
        bootstrap="127.0.0.1:39092",
        log_path=tmp_path / "server.log",
        started_at=1700000000.5,
        kafka_version="4.1.1",
    )
    assert broker.BrokerInfo.from_json(info.to_json()) == info


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="govstream")
    broker_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOVSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOVSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GOVSTREAM_KAFKA_BOOTSTRAP", raising=False)
    return tmp_path


def test_cli_status_and_stop_without_broker(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["broker", "status"]) == broker_command.NOT_RUNNING == 3
    assert _cli(["broker", "stop"]) == 0
    assert capsys.readouterr().out == "no broker running\nno broker running\n"


def test_cli_start_with_external_broker_starts_nothing(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOVSTREAM_KAFKA_BOOTSTRAP", "kafka.example:9092")
    assert _cli(["broker", "start"]) == 0
    assert "external broker configured at kafka.example:9092" in capsys.readouterr().out
    assert not (cli_env / "home").exists()
