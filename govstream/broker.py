"""A local single-node Apache Kafka 4.x broker (KRaft, broker+controller), without Docker.

Kafka's jars come from Maven Central (resolved once with ``mvn`` into
``settings.cache_dir/kafka/<version>/lib``) and run on the local Java 17+. State
lives in ``settings.broker_dir``: ``server.properties``, ``log4j2.properties``,
``cluster.id``, ``data/`` (the log dir), ``logs/`` and ``broker.json``, which
records the process we started so later commands can find, check and stop it.

Public API: :func:`ensure_broker`, :func:`stop_broker`, :func:`broker_status`,
:func:`resolve_bootstrap`, :func:`wait_for_metadata`. The file renderers
(:func:`render_server_properties`, :func:`render_log4j2_properties`,
:func:`render_pom`) are pure so they can be unit-tested without Java.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from govstream.errors import GovstreamError
from govstream.settings import Settings

__all__ = [
    "BrokerHandle",
    "BrokerInfo",
    "broker_status",
    "ensure_broker",
    "ensure_kafka_libs",
    "render_log4j2_properties",
    "render_pom",
    "render_server_properties",
    "resolve_bootstrap",
    "stop_broker",
    "wait_for_metadata",
]

HOST = "127.0.0.1"
NODE_ID = 1
# Candidates for Settings fields (kafka_start_timeout, kafka_stop_timeout); constants meanwhile.
DEFAULT_START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# How long one metadata probe may take; a live local broker answers in milliseconds.
PROBE_TIMEOUT = 3.0
# The slf4j 1.x -> log4j2 binding. Kafka 4.1.1 itself depends on log4j-core 2.24.3; the
# binding only needs log4j-api, so the same version keeps the three jars consistent.
LOG4J_VERSION = "2.24.3"
SCALA_VERSION = "2.13"
# Kafka's own default for message.max.bytes; we only raise it, never lower it.
KAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_048_588
LIB_MARKER = ".complete"
STATE_FILE = "broker.json"

JAVA_MISSING = (
    "java not found: install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
)
MVN_MISSING = "mvn not found: install Apache Maven (apt-get install maven)"
NO_BROKER = "no Kafka broker: run `govstream broker start` or set GOVSTREAM_KAFKA_BOOTSTRAP"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BrokerHandle:
    """What :func:`ensure_broker` hands back."""

    bootstrap: str
    pid: int | None  # None for an external broker
    started: bool  # True only when this call launched the process
    external: bool = False
    startup_seconds: float = 0.0
    log_path: Path | None = None


@dataclass(frozen=True)
class BrokerInfo:
    """A broker we started and whose process is alive (the content of broker.json)."""

    pid: int
    port: int
    controller_port: int
    bootstrap: str
    log_path: Path
    started_at: float  # epoch seconds
    kafka_version: str = ""
    ready: bool | None = None  # answered a metadata request; None when not probed

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started_at)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("ready")  # a probe result, not state
        data["log_path"] = str(self.log_path)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerInfo:
        data = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            port=int(data["port"]),
            controller_port=int(data["controller_port"]),
            bootstrap=str(data["bootstrap"]),
            log_path=Path(data["log_path"]),
            started_at=float(data["started_at"]),
            kafka_version=str(data.get("kafka_version", "")),
        )


@dataclass(frozen=True)
class _Paths:
    """Everything under broker_dir, derived in one place."""

    root: Path

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def cluster_id(self) -> Path:
        return self.root / "cluster.id"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout(self) -> Path:
        return self.logs / "broker.out"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


# --------------------------------------------------------------------------- pure renderers


def _prop(value: str | int | Path) -> str:
    r"""Escape a value for java.util.Properties (read as ISO-8859-1, ``\`` escapes)."""
    out: list[str] = []
    for ch in str(value):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or code > 0x7E:
            # \uXXXX, as UTF-16 code units so astral characters survive too
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        else:
            out.append(ch)
    text = "".join(out)
    # Leading blanks would be eaten by the parser.
    return "\\" + text if text[:1] in (" ", "\t") else text


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    host: str = HOST,
    node_id: int = NODE_ID,
    message_max_bytes: int | None = None,
) -> str:
    """server.properties for one combined broker+controller node on ``host``."""
    props: dict[str, str | int | Path] = {
        # KRaft, one node that is both broker and its own controller quorum
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": data_dir,
        # One node: internal topics cannot have more than one replica, and
        # transactions (exactly_once) need the txn log min ISR to be reachable.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # A single local consumer group member should not wait 3 s to rebalance.
        "group.initial.rebalance.delay.ms": 0,
        # The project creates its topics explicitly; typos must fail, not make topics.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
    }
    if message_max_bytes is not None and message_max_bytes > KAFKA_DEFAULT_MESSAGE_MAX_BYTES:
        props["message.max.bytes"] = message_max_bytes
    lines = ["# Generated by govstream (govstream/broker.py); rewritten on every start."]
    lines += [f"{key}={_prop(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """The simple key=value subset of java.util.Properties that we write ourselves."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


def render_log4j2_properties(log_file: Path, *, max_size: str = "10MB", keep: int = 3) -> str:
    """A log4j2 config sending everything to one rolling file (nothing to the console)."""
    return "\n".join(
        [
            "# Generated by govstream (govstream/broker.py); rewritten on every start.",
            "status = warn",
            "name = govstream-kafka",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {_prop(log_file)}",
            f"appender.file.filePattern = {_prop(log_file)}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            f"appender.file.policies.size.size = {max_size}",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            f"appender.file.strategy.max = {keep}",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            # Per-request and state-change chatter drowns the useful lines.
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "logger.statechange.name = state.change.logger",
            "logger.statechange.level = WARN",
            "",
        ]
    )


def render_pom(kafka_version: str, *, log4j_version: str = LOG4J_VERSION) -> str:
    """A throwaway pom whose runtime dependencies are exactly the broker's classpath."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by govstream to fetch the Kafka broker jars; not a real project. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 \
http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.govstream.local</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <!-- slf4j 1.x binding so broker logs go through log4j2 to our file -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""


def new_cluster_id() -> str:
    """A Kafka cluster id, as ``StorageTool random-uuid`` makes it (saves a JVM start).

    Kafka's Uuid is 16 random bytes in URL-safe base64 without padding; it never
    starts with '-' (the tool would read it as an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` -> [(host, port)]; ``[v6]:port`` accepted."""
    hosts: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise GovstreamError(f"bad Kafka bootstrap address {item!r}: expected host:port")
        hosts.append((host.strip("[]") or HOST, int(port)))
    if not hosts:
        raise GovstreamError(f"bad Kafka bootstrap address {bootstrap!r}: expected host:port")
    return hosts


def _check_version(version: str) -> None:
    # The version ends up in a path and in XML, so keep it to what Maven versions look like.
    if not re.fullmatch(r"[0-9][0-9A-Za-z.\-]*", version):
        raise GovstreamError(f"bad kafka_version {version!r}")
    if int(re.match(r"\d+", version).group()) < 4:  # type: ignore[union-attr]
        raise GovstreamError(f"kafka_version {version} is not supported: use Apache Kafka 4.x")


def _check_heap(heap: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", heap):
        raise GovstreamError(f"bad kafka_heap {heap!r}: use a JVM size such as 768m or 1g")
    return heap


# --------------------------------------------------------------------------- tools on PATH


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require_java() -> str:
    """Path of a Java 17+ ``java``; GovstreamError naming what to install otherwise."""
    java = shutil.which("java")
    if java is None:
        raise GovstreamError(JAVA_MISSING)
    try:
        probe = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GovstreamError(f"cannot run {java}: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0_x" style
            major = int(match.group(2))
        if major < 17:
            raise GovstreamError(
                f"{java} is Java {major}; Kafka 4 needs Java 17+: install a Java 17+ runtime "
                "(e.g. apt-get install openjdk-17-jre-headless)"
            )
    return java


def require_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise GovstreamError(MVN_MISSING)
    return mvn


# --------------------------------------------------------------------------- jar cache


def kafka_lib_dir(settings: Settings) -> Path:
    return (
        Path(settings.cache_dir).expanduser().resolve() / "kafka" / settings.kafka_version / "lib"
    )


def ensure_kafka_libs(settings: Settings) -> Path:
    """The cached jar folder for settings.kafka_version, resolving it with Maven if needed.

    Concurrency-safe: each resolver works in its own temp dir next to the cache and
    renames it into place; the marker file is written before the rename, so a lib dir
    either is complete or does not exist.
    """
    _check_version(settings.kafka_version)
    lib = kafka_lib_dir(settings)
    if (lib / LIB_MARKER).is_file():
        return lib
    mvn = require_mvn()  # only needed when the cache is empty
    lib.parent.mkdir(parents=True, exist_ok=True)
    version = settings.kafka_version
    _progress(f"resolving Apache Kafka {version} from Maven Central ...")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=lib.parent))
    try:
        (work / "pom.xml").write_text(render_pom(version), encoding="utf-8")
        out = work / "lib"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ]
        try:
            run = subprocess.run(
                cmd, cwd=work, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise GovstreamError(f"maven took too long resolving Apache Kafka {version}") from exc
        jars = sorted(p.name for p in out.glob("*.jar")) if out.is_dir() else []
        if run.returncode != 0 or not any(j.startswith(f"kafka_{SCALA_VERSION}-") for j in jars):
            tail = _tail_text(run.stdout + run.stderr, 8) or "(no output)"
            raise GovstreamError(f"maven could not resolve Apache Kafka {version}:\n{tail}")
        (out / LIB_MARKER).write_text(json.dumps({"version": version, "jars": jars}) + "\n")
        try:
            os.rename(out, lib)
        except OSError:
            # Somebody else won the race (or left a lib dir without marker behind).
            if not (lib / LIB_MARKER).is_file():
                stale = lib.parent / f".stale-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(lib, stale)
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(out, lib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _progress(f"cached in {lib} ({len(jars)} jars, {time.monotonic() - began:.1f}s)")
    return lib


# --------------------------------------------------------------------------- processes

# Popen objects of brokers this interpreter launched, so we can reap them (no zombies
# that look alive to kill(pid, 0)) and so they are not garbage-collected with a warning.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; exited-but-unreaped children (zombies) count as gone."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is an exited child of ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Reaped just now, or a system without procfs (then kill(pid, 0) is all we have).
        return not Path("/proc/self").exists()
    except OSError:
        return True
    # Field 3, after the parenthesised command name: Z = zombie, X = dead.
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _cmdline(pid: int) -> list[str] | None:
    """argv of a process, or None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        # No /proc (macOS): ps joins argv with spaces, good enough for our checks.
        try:
            out = subprocess.run(
                ["ps", "-ww", "-o", "command=", "-p", str(pid)],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.split() if out else None
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def _is_our_broker(pid: int, paths: _Paths) -> bool:
    """True only for a live java kafka.Kafka running *this* broker_dir's server.properties."""
    if pid <= 0:
        return False
    argv = _cmdline(pid)  # empty for zombies
    if not argv:
        return False
    return (
        Path(argv[0]).name == "java"
        and "kafka.Kafka" in argv
        and argv[-1] == str(paths.properties)
        and _pid_alive(pid)
    )


def _find_our_brokers(paths: _Paths) -> list[int]:
    """Pids of brokers for this broker_dir, found by scanning /proc (for lost state files)."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return []
    found: list[int] = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and _is_our_broker(int(entry.name), paths):
            found.append(int(entry.name))
    return sorted(found)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 10.0):
        raise GovstreamError(f"broker pid {pid} did not exit after SIGKILL")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Kafka's acceptor, ignore TIME_WAIT leftovers of the previous run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pick_ports(paths: _Paths, host: str = HOST) -> tuple[int, int]:
    """The previous run's ports when still free (clients keep working), else two new ones."""
    if paths.properties.is_file():
        old = parse_properties(paths.properties.read_text(encoding="latin-1"))
        match = re.fullmatch(
            r"PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)", old.get("listeners", "")
        )
        if match:
            port, cport = int(match.group(1)), int(match.group(2))
            if port != cport and _port_free(port, host) and _port_free(cport, host):
                return port, cport
    # Hold both sockets open at once so the kernel cannot hand out the same port twice.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b,
    ):
        a.bind((host, 0))
        b.bind((host, 0))
        return a.getsockname()[1], b.getsockname()[1]


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int, since: int = 0) -> str:
    """Last ``lines`` lines of ``path`` written after byte offset ``since``."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = since if since <= size else 0  # smaller now: rotated, read it all
            fh.seek(max(start, size - 256 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    # Java stack frames bury the cause; keep the first error and its exception line.
    kept = [ln for ln in text.splitlines() if not ln.startswith(("\tat ", "\t... "))]
    first_error = next((i for i, ln in enumerate(kept) if " ERROR " in ln or " FATAL " in ln), None)
    tail_start = max(0, len(kept) - lines)
    if first_error is not None and first_error + 2 < tail_start:
        kept = [*kept[first_error : first_error + 2], "...", *kept[tail_start:]]
    else:
        kept = kept[tail_start:]
    # Kafka's state-transition lines run to kilobytes; the start says enough.
    return "\n".join(ln if len(ln) <= 300 else ln[:297] + "..." for ln in kept).strip()


def _log_tail(paths: _Paths, log_offset: int = 0, lines: int = 12) -> str:
    parts: list[str] = []
    # JVM errors (bad heap, missing class) land in stdout, Kafka's own in the log.
    for path, since in ((paths.stdout, 0), (paths.server_log, log_offset)):
        tail = _tail_file(path, lines, since)
        if tail:
            parts.append(f"--- {path} ---\n{tail}")
    return "\n".join(parts) or f"(no output in {paths.logs})"


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Serialise start/stop for one broker_dir across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- metadata probe

T = TypeVar("T")


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # Called from async code (e.g. the worker): don't nest loops, use a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _metadata_once(hosts: list[tuple[str, int]], timeout: float) -> bool:
    """One Metadata request per host until one names at least one live broker.

    A raw aiokafka connection rather than AIOKafkaClient.bootstrap(): the latter logs an
    ERROR for every refused connection, which would spam stderr while the broker boots.
    """
    from aiokafka.cluster import ClusterMetadata
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.metadata import MetadataRequest

    for host, port in hosts:
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=max(100, int(timeout * 1000))),
                timeout,
            )
        except (OSError, KafkaError, TimeoutError):
            continue
        try:
            response = await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
        except (OSError, KafkaError, TimeoutError):
            continue
        finally:
            conn.close()
        cluster = ClusterMetadata()
        cluster.update_metadata(response)
        if cluster.brokers():
            return True
    return False


def probe_metadata(bootstrap: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``bootstrap`` answers one metadata request within ``timeout`` seconds."""
    hosts = parse_bootstrap(bootstrap)
    return _run_sync(lambda: _metadata_once(hosts, timeout))


class _BrokerExited(Exception):
    pass


def wait_for_metadata(
    bootstrap: str,
    timeout: float = DEFAULT_START_TIMEOUT,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``bootstrap`` answers a metadata request; GovstreamError at the deadline.

    ``alive`` lets a caller that just launched the broker stop waiting as soon as the
    process dies instead of sitting out the whole timeout.
    """
    parse_bootstrap(bootstrap)  # fail fast on a malformed address
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise _BrokerExited
        remaining = deadline - time.monotonic()
        attempt = max(0.2, min(PROBE_TIMEOUT, remaining))
        if probe_metadata(bootstrap, attempt):
            return
        if time.monotonic() >= deadline:
            raise GovstreamError(
                f"Kafka at {bootstrap} did not answer a metadata request within {timeout:.0f}s"
            )
        time.sleep(0.2)


# --------------------------------------------------------------------------- state file


def _read_state(paths: _Paths) -> BrokerInfo | None:
    try:
        return BrokerInfo.from_json(paths.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or foreign: treat as no state (start/stop overwrite it)


def _write_state(paths: _Paths, info: BrokerInfo) -> None:
    tmp = paths.state.with_name(f".{STATE_FILE}.{os.getpid()}")
    tmp.write_text(info.to_json(), encoding="utf-8")
    os.replace(tmp, paths.state)  # atomic: readers never see half a file


def _remove_state(paths: _Paths) -> None:
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()


# --------------------------------------------------------------------------- public API


def broker_status(settings: Settings, *, probe: bool = True) -> BrokerInfo | None:
    """The local broker we started, if its process is alive; None otherwise.

    With ``probe`` the result's ``ready`` says whether it answers metadata.
    Read-only: stale state is left for start/stop (which hold the lock) to clean up.
    """
    paths = _Paths(settings.broker_dir)
    info = _read_state(paths)
    if info is None or not _is_our_broker(info.pid, paths):
        return None
    if probe:
        ready = probe_metadata(info.bootstrap)
        info = dataclasses.replace(info, ready=ready)
    return info


def resolve_bootstrap(settings: Settings) -> str:
    """Where Kafka clients should connect: the external broker, else the local one."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    info = broker_status(settings, probe=False)
    if info is None:
        raise GovstreamError(NO_BROKER)
    return info.bootstrap


def ensure_broker(settings: Settings, *, timeout: float = DEFAULT_START_TIMEOUT) -> BrokerHandle:
    """Start the local broker, or reuse the one already running; wait until it answers."""
    if settings.kafka_bootstrap:
        return BrokerHandle(
            bootstrap=settings.kafka_bootstrap, pid=None, started=False, external=True
        )
    paths = _Paths(settings.broker_dir)
    with _locked(paths):
        reused = _reuse(paths, settings)
        if reused is not None:
            return reused
        return _start(paths, settings, timeout)


def stop_broker(settings: Settings, *, purge: bool = False, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the broker we started (only that pid); True if one was running.

    ``purge`` also deletes its data (topics, offsets, cluster id).
    """
    paths = _Paths(settings.broker_dir)
    if not paths.root.exists():
        return False
    with _locked(paths):
        info = _read_state(paths)
        if info is not None and _is_our_broker(info.pid, paths):
            pids = [info.pid]
        else:
            # No (valid) state file: a broker whose starter was killed mid-start.
            pids = _find_our_brokers(paths)
        for pid in pids:
            _terminate(pid, timeout)
            _CHILDREN.pop(pid, None)
        _remove_state(paths)
        if purge:
            shutil.rmtree(paths.data, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                paths.cluster_id.unlink()
        return bool(pids)


# --------------------------------------------------------------------------- start internals


def _reuse(paths: _Paths, settings: Settings) -> BrokerHandle | None:
    info = _read_state(paths)
    if info is not None and _is_our_broker(info.pid, paths):
        pid, bootstrap = info.pid, info.bootstrap
    else:
        _remove_state(paths)
        orphans = _find_our_brokers(paths)
        if not orphans:
            return None
        # Running but unrecorded (its starter died): adopt it rather than fight its lock.
        pid = orphans[0]
        listeners = parse_properties(paths.properties.read_text(encoding="latin-1"))
        match = re.search(r"PLAINTEXT://([^:,]+):(\d+)", listeners.get("listeners", ""))
        cmatch = re.search(r"CONTROLLER://[^:,]+:(\d+)", listeners.get("listeners", ""))
        if not match or not cmatch:
            raise GovstreamError(
                f"broker pid {pid} runs {paths.properties} but it has no usable listeners; "
                "run `govstream broker stop`"
            )
        bootstrap = f"{match.group(1)}:{match.group(2)}"
        info = BrokerInfo(
            pid=pid,
            port=int(match.group(2)),
            controller_port=int(cmatch.group(1)),
            bootstrap=bootstrap,
            log_path=paths.server_log,
            started_at=time.time(),
            kafka_version=settings.kafka_version,
        )
    try:
        # A live broker answers at once; give a just-launched one a little time.
        wait_for_metadata(bootstrap, 15.0, alive=lambda: _pid_alive(pid))
    except (GovstreamError, _BrokerExited) as exc:
        raise GovstreamError(
            f"broker pid {pid} at {bootstrap} is not answering ({paths.server_log}); "
            "run `govstream broker stop` and start again"
        ) from exc
    if not paths.state.exists():
        _write_state(paths, info)
    return BrokerHandle(bootstrap=bootstrap, pid=pid, started=False, log_path=paths.server_log)


def _format_storage(java: str, lib: Path, paths: _Paths) -> None:
    """Format the KRaft log dir once; later starts (any ports) reuse it."""
    if (paths.data / "meta.properties").is_file():
        return
    # No meta.properties means Kafka never ran on it (an interrupted format): start clean.
    shutil.rmtree(paths.data, ignore_errors=True)
    cluster_id = ""
    if paths.cluster_id.is_file():
        cluster_id = paths.cluster_id.read_text(encoding="utf-8").strip()
    if not cluster_id:
        cluster_id = new_cluster_id()
        paths.cluster_id.write_text(cluster_id + "\n", encoding="utf-8")
    _progress(f"formatting Kafka storage in {paths.data} (cluster id {cluster_id})")
    cmd = [
        java,
        f"-Dlog4j2.configurationFile={paths.log4j.as_uri()}",
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(paths.properties),
    ]
    try:
        run = subprocess.run(
            cmd, cwd=paths.root, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GovstreamError("formatting Kafka storage took more than 120s") from exc
    if run.returncode != 0:
        tail = _tail_text(run.stdout + run.stderr, 10) or "(no output)"
        raise GovstreamError(f"formatting Kafka storage failed:\n{tail}")


def _start(paths: _Paths, settings: Settings, timeout: float) -> BrokerHandle:
    began = time.monotonic()  # reported start time includes a cold jar download
    heap = _check_heap(settings.kafka_heap)
    java = require_java()
    lib = ensure_kafka_libs(settings)

    paths.logs.mkdir(parents=True, exist_ok=True)
    port, cport = _pick_ports(paths)
    # Rewritten every time: ports may change, and the quorum address lives in config,
    # not in the formatted storage, so a formatted data dir survives a port change.
    paths.properties.write_text(
        render_server_properties(
            port=port,
            controller_port=cport,
            data_dir=paths.data,
            message_max_bytes=settings.max_record_bytes + 4096,  # room for batch overhead
        ),
        encoding="latin-1",
    )
    paths.log4j.write_text(render_log4j2_properties(paths.server_log), encoding="latin-1")
    _format_storage(java, lib, paths)

    bootstrap = f"{HOST}:{port}"
    cmd = [
        java,
        f"-Xmx{heap}",
        # Kafka's own launcher flags (kafka-run-class.sh): G1 with short pauses.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j.as_uri()}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(paths.properties),  # must stay last: stop/status identify our broker by it
    ]
    _progress(f"starting Apache Kafka {settings.kafka_version} on {bootstrap} ...")
    # Failure reports show only what this run logged (the log file is appended to).
    log_offset = paths.server_log.stat().st_size if paths.server_log.exists() else 0
    with paths.stdout.open("wb") as out:
        # Own session: Ctrl-C in the terminal and the end of this process leave it running.
        proc = subprocess.Popen(
            cmd,
            cwd=paths.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    try:
        wait_for_metadata(bootstrap, timeout, alive=lambda: proc.poll() is None)
    except _BrokerExited:
        _CHILDREN.pop(proc.pid, None)
        raise GovstreamError(
            f"Kafka broker exited during start (status {proc.returncode}); last lines:\n"
            f"{_log_tail(paths, log_offset)}"
        ) from None
    except BaseException as exc:
        # Timeout or Ctrl-C: don't leave an unrecorded broker behind.
        _terminate(proc.pid, 5.0)
        _CHILDREN.pop(proc.pid, None)
        if isinstance(exc, GovstreamError):
            raise GovstreamError(f"{exc}; last lines:\n{_log_tail(paths, log_offset)}") from None
        raise

    info = BrokerInfo(
        pid=proc.pid,
        port=port,
        controller_port=cport,
        bootstrap=bootstrap,
        log_path=paths.server_log,
        started_at=time.time(),
        kafka_version=settings.kafka_version,
    )
    _write_state(paths, info)
    return BrokerHandle(
        bootstrap=bootstrap,
        pid=proc.pid,
        started=True,
        startup_seconds=time.monotonic() - began,
        log_path=paths.server_log,
    )
