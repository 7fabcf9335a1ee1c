"""ClickHouse access for govstream: one small interface, three ways to reach the engine.

* :class:`Embedded` — chDB in this process (clickhouse-connect ``interface="chdb"``).
* :class:`Server` — a ClickHouse server over HTTP(S), from ``GOVSTREAM_CLICKHOUSE_URL``.
* :class:`OwnerProxy` — the embedded engine owned by another local process (the
  worker), reached over its HTTP server.

Why the proxy exists: only one process can open a chDB data directory, and one
process can open only one engine path. The owner (the sink worker) opens the
engine, serves the routes below and registers itself in
``<home>/clickhouse-owner.json``; every other process finds it with
:func:`find_owner`. :func:`open_clickhouse` picks the right implementation.

Owner HTTP protocol (JSON bodies, mounted by :func:`mount_owner_routes`)::

    POST /v1/clickhouse/query    {"sql": str, "parameters": {name: value} | null}
         200 {"columns": [str], "types": [str], "rows": [[value, ...], ...]}
    POST /v1/clickhouse/command  {"sql": str, "parameters": {name: value} | null}
         200 {"ok": true}
    GET or POST /v1/clickhouse/ping   (find_owner uses POST, empty body)
         200 {"ok": true, "pid": int}
    errors: 400 {"error": "one line"} (bad request or ClickHouse error),
            403 (client not on loopback), 404 (unknown route),
            500 (unexpected failure in the owner)

JSON value encoding (:func:`to_json_value` / :func:`from_json_value`):
datetime/date/time -> ISO 8601 strings (aware datetimes keep their offset),
Decimal -> str, UUID/IP addresses/anything else -> str, bytes -> str decoded as
latin-1 (one char per byte, so lossless), tuples -> lists, NaN/Inf as Python's
json emits them. The proxy turns top-level DateTime*/Date*/Decimal/UUID/IPv*/
FixedString columns back into Python values by their ClickHouse type, so
``OwnerProxy.query`` returns what ``Embedded.query`` would; values nested inside
Array/Map/Tuple stay JSON-decoded. Parameters sent through the proxy are
encoded the same way except datetimes, which become UTC wall time
"YYYY-MM-DD HH:MM:SS.ffffff" (the text ClickHouse parses for DateTime params).

Parameters are always bound server side: every parameter must appear as a
``{name:Type}`` placeholder, otherwise :class:`UsageError` (clickhouse-connect
would otherwise fall back to client-side string formatting).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time as clock
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit
from uuid import UUID

import orjson

from govstream.errors import GovstreamError, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from aiohttp import web
    from clickhouse_connect.driver.client import Client

    from govstream.settings import Settings

log = logging.getLogger(__name__)
# clickhouse-connect logs failures it also raises; with no logging configured
# (the CLI) Python's last-resort handler would print them as extra stderr lines.
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())

QUERY_PATH = "/v1/clickhouse/query"
COMMAND_PATH = "/v1/clickhouse/command"
PING_PATH = "/v1/clickhouse/ping"
OWNER_FILE = "clickhouse-owner.json"
# Largest request body the proxy sends when it batches an insert; aiohttp's
# default client_max_size is 1 MiB.
PROXY_MAX_BODY = 900_000

# The same placeholder grammar clickhouse-connect uses to decide on server-side binding.
_PLACEHOLDER_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*[^}]+\}")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_COMMENTS_RE = re.compile(r"^(\s|--[^\n]*(\n|$)|/\*.*?\*/)*", re.S)
_MAX_ERROR_CHARS = 1000

# chDB's engine is process-global: every Embedded in this process shares it, so one lock.
_ENGINE_LOCK = threading.RLock()
# Data directories this process has open (Embedded instances per path): our own
# engine holds the status-file lock, which must not read as "another process".
_OPEN_PATHS: dict[Path, int] = {}


class ClickHouseError(GovstreamError):
    """ClickHouse rejected a statement, or could not be reached."""


class EmbeddedLockedError(GovstreamError):
    """Another process holds the embedded engine's data directory."""

    def __init__(self, message: str, path: Path, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def scalar(self) -> Any:
        """The first column of the first row (e.g. of ``SELECT count() ...``)."""
        if not self.rows or not self.rows[0]:
            raise ClickHouseError("query returned no rows where one value was expected")
        return self.rows[0][0]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class ClickHouse(ABC):
    """What govstream needs from ClickHouse; all calls block (run them in an executor)."""

    kind: ClassVar[str]
    target: str  # human-readable location, for messages

    @abstractmethod
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult: ...

    @abstractmethod
    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None: ...

    @abstractmethod
    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None: ...

    @abstractmethod
    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        """Insert a JSONCompactEachRow block (one JSON array per line), as one INSERT."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"


# --------------------------------------------------------------------------- helpers


def one_line(text: str) -> str:
    """A ClickHouse/driver message reduced to one readable line."""
    text = " ".join(text.split())
    # HTTP driver messages wrap the server's text; keep from the ClickHouse error code on.
    match = re.search(r"Code: \d+\.", text)
    if match:
        text = text[match.start() :]
    text = text.split(" Stack trace", 1)[0]
    text = re.sub(r"\s*\(version [^)]*\)\.?\s*$", "", text)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def check_parameters(sql: str, parameters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Refuse parameters that would not be bound server side.

    clickhouse-connect formats values into the SQL text on the client when the
    query has no {name:Type} placeholder; we never want that.
    """
    if not parameters:
        return None
    if not isinstance(parameters, Mapping):
        raise UsageError("query parameters must be a mapping of name -> value")
    placeholders = set(_PLACEHOLDER_RE.findall(sql))
    for name in parameters:
        if not isinstance(name, str) or not _IDENT_RE.match(name):
            raise UsageError(f"invalid parameter name {name!r}")
        if name not in placeholders:
            raise UsageError(
                f"parameter {name!r} has no {{{name}:Type}} placeholder in the query "
                "(parameters are bound server side only)"
            )
    return dict(parameters)


def quote_identifier(name: str) -> str:
    """`name`, or `db`.`table` for a dotted name; backticks inside are escaped."""
    parts = name.split(".")
    if not all(parts):
        raise UsageError(f"invalid identifier {name!r}")
    return ".".join("`" + p.replace("\\", "\\\\").replace("`", "\\`") + "`" for p in parts)


def _database_name(database: str) -> str:
    if not _IDENT_RE.match(database):
        raise UsageError(
            f"invalid ClickHouse database name {database!r} (letters, digits, underscore)"
        )
    return database


def to_json_value(value: Any) -> Any:
    """A query result value as a JSON-safe value (see the module docstring)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(to_json_value(k)): to_json_value(v) for k, v in value.items()}
    return str(value)  # Decimal, UUID, IPv4Address, enums, ...


def _param_to_json(value: Any) -> Any:
    """A query parameter as JSON; datetimes in the text form ClickHouse parses."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, list | tuple):
        return [_param_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _param_to_json(v) for k, v in value.items()}
    return to_json_value(value)


def _base_type(type_name: str) -> str:
    while True:
        for wrapper in ("Nullable(", "LowCardinality("):
            if type_name.startswith(wrapper) and type_name.endswith(")"):
                type_name = type_name[len(wrapper) : -1]
                break
        else:
            return type_name


def _decoder(type_name: str) -> Callable[[Any], Any] | None:
    base = _base_type(type_name)
    if base.startswith("DateTime"):
        return datetime.fromisoformat
    if base.startswith("Date"):
        return date.fromisoformat
    if base.startswith("Decimal"):
        return Decimal
    if base == "UUID":
        return UUID
    if base in ("IPv4", "IPv6"):
        return ipaddress.ip_address
    if base.startswith("FixedString"):
        return lambda v: v.encode("latin-1")
    return None


def from_json_value(type_name: str, value: Any) -> Any:
    """Undo :func:`to_json_value` for a top-level value of ClickHouse type ``type_name``."""
    decode = _decoder(type_name)
    return value if value is None or decode is None else decode(value)


def _decode_rows(types: list[str], rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    decoders = [_decoder(t) for t in types]
    if not any(decoders):
        return [tuple(row) for row in rows]
    return [
        tuple(v if d is None or v is None else d(v) for d, v in zip(decoders, row, strict=True))
        for row in rows
    ]


def _json_line(value: Any) -> str:
    # ClickHouse's JSON input has no NaN/Infinity tokens; those floats become null.
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- clickhouse-connect


JSON_INSERT_SETTINGS = {
    "date_time_input_format": "best_effort",
    # lets a row carry a JSON document (orjson.Fragment) into a String column
    # without escaping it a second time
    "input_format_json_read_objects_as_strings": 1,
}


class _DriverBacked(ClickHouse):
    """Shared code for the two implementations that hold a clickhouse-connect client."""

    _client: Client
    _lock: threading.RLock

    def _wrap(self, exc: Exception) -> ClickHouseError:
        return ClickHouseError(f"ClickHouse: {one_line(str(exc))}")

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        from clickhouse_connect.driver.exceptions import Error

        params = check_parameters(sql, parameters)
        try:
            with self._lock:
                result = self._client.query(sql, parameters=params)
                columns = list(result.column_names)
                types = [t.name for t in result.column_types]
                rows = [tuple(r) for r in result.result_rows]
                if not columns and not rows:
                    columns, types = self._describe(sql, params)
        except Error as exc:
            raise self._wrap(exc) from None
        return QueryResult(columns, types, rows)

    def _describe(self, sql: str, params: dict[str, Any] | None) -> tuple[list[str], list[str]]:
        # The Native format drops the header block of an empty result; ask for it
        # so an empty SELECT still reports its columns (tables, JSON consumers).
        from clickhouse_connect.driver.exceptions import Error

        body = sql.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", _LEADING_COMMENTS_RE.sub("", body)):
            return [], []
        try:
            described = self._client.query(f"DESCRIBE ({body}\n)", parameters=params)
        except Error:
            return [], []
        return [r[0] for r in described.result_rows], [r[1] for r in described.result_rows]

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        from clickhouse_connect.driver.exceptions import Error

        params = check_parameters(sql, parameters)
        try:
            with self._lock:
                self._client.command(sql, parameters=params)
        except Error as exc:
            raise self._wrap(exc) from None

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        from clickhouse_connect.driver.exceptions import Error

        if not rows:
            return
        try:
            body = b"\n".join(map(orjson.dumps, rows))
        except TypeError:  # bytes values: JSON cannot carry arbitrary bytes
            try:
                with self._lock:
                    self._client.insert(table, rows, column_names=list(column_names))
            except Error as exc:
                raise self._wrap(exc) from None
            return
        self.insert_json(table, column_names, body)

    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        from clickhouse_connect.driver.exceptions import Error

        if not body:
            return
        try:
            with self._lock:
                # ClickHouse parses the rows in C++ with the GIL released, so the
                # worker keeps decoding while a batch is inserted.
                self._client.raw_insert(
                    table,
                    list(column_names),
                    insert_block=body,
                    fmt="JSONCompactEachRow",
                    settings=JSON_INSERT_SETTINGS,
                )
        except Error as exc:
            raise self._wrap(exc) from None

    def _use_database(self, database: str) -> None:
        from clickhouse_connect.driver.exceptions import Error

        try:
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
        except Error:
            # A server user may lack CREATE DATABASE yet have the database already.
            exists = self._client.command(
                "SELECT count() FROM system.databases WHERE name = {name:String}",
                parameters={"name": database},
            )
            if not exists:
                raise
        self._client.database = database

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _status_pid(path: Path) -> int | None:
    """The pid ClickHouse wrote into <data dir>/status (may be stale)."""
    try:
        match = re.search(r"PID:\s*(\d+)", (path / "status").read_text(errors="replace"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _status_locked_elsewhere(path: Path) -> bool:
    """True when another process holds ClickHouse's flock on <data dir>/status."""
    if _status_pid(path) == os.getpid():
        return False  # ClickHouse in this very process wrote it
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class Embedded(_DriverBacked):
    """chDB in this process. Only one process may hold ``path``; see the module doc."""

    kind = "embedded"

    def __init__(self, path: Path, database: str) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error

        self.path = Path(path).resolve()
        self.target = f"embedded ClickHouse at {self.path}"
        self._lock = _ENGINE_LOCK
        database = _database_name(database)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GovstreamError(f"cannot create {self.path}: {exc.strerror}") from None
        self._closed = False
        with self._lock:
            # Check the lock first: a failed chDB open prints ClickHouse's own error
            # straight to fd 2, which would break "one line on stderr" in the CLI.
            if _OPEN_PATHS.get(self.path, 0) == 0 and _status_locked_elsewhere(self.path):
                raise self._locked_error()
            try:
                # tz_mode="schema": columns declared with 'UTC' come back as aware datetimes.
                self._client = clickhouse_connect.get_client(
                    interface="chdb", path=str(self.path), tz_mode="schema"
                )
            except Error as exc:
                raise self._open_error(exc) from None
            try:
                self._use_database(database)
            except Error as exc:
                self._client.close()
                raise self._wrap(exc) from None
            _OPEN_PATHS[self.path] = _OPEN_PATHS.get(self.path, 0) + 1

    def _locked_error(self) -> EmbeddedLockedError:
        pid = _status_pid(self.path)
        return EmbeddedLockedError(
            f"embedded ClickHouse at {self.path} is held by another process "
            f"({_pid_hint(pid)}); stop it or set GOVSTREAM_CLICKHOUSE_URL",
            self.path,
            pid,
        )

    def _open_error(self, exc: Exception) -> GovstreamError:
        message = str(exc)
        if "already initialized with path" in message:
            return GovstreamError(
                f"this process already opened an embedded ClickHouse at another path; "
                f"chDB allows one data directory per process ({one_line(message)})"
            )
        if _status_locked_elsewhere(self.path):  # lost a race with another opener
            return self._locked_error()
        return ClickHouseError(f"cannot open {self.target}: {one_line(message)}")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._client.close()
            _OPEN_PATHS[self.path] -= 1


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


class Server(_DriverBacked):
    """A ClickHouse server over HTTP(S): ``http://user:password@host:8123``."""

    kind = "server"

    def __init__(self, url: str, database: str) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"GOVSTREAM_CLICKHOUSE_URL must look like http://user:pass@host:8123, "
                f"not {_redact(url)!r}"
            )
        if parts.path not in ("", "/"):
            # One source of truth for the database: GOVSTREAM_CLICKHOUSE_DATABASE.
            raise UsageError(
                "put the database in GOVSTREAM_CLICKHOUSE_DATABASE, not in the URL path"
            )
        secure = parts.scheme == "https"
        self.target = f"ClickHouse server at {_redact(url)}"
        self._lock = threading.RLock()
        database = _database_name(database)
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if secure else 8123),
                username=unquote(parts.username) if parts.username else "default",
                password=unquote(parts.password) if parts.password else "",
                secure=secure,
                tz_mode="schema",
                # No HTTP session: sessions serialize queries server side ("session is locked").
                autogenerate_session_id=False,
                connect_timeout=5,
            )
        except Error as exc:
            raise ClickHouseError(f"cannot reach {self.target}: {one_line(str(exc))}") from None
        try:
            self._use_database(database)
        except Error as exc:
            self._client.close()
            raise self._wrap(exc) from None


# --------------------------------------------------------------------------- owner proxy


class OwnerProxy(ClickHouse):
    """The embedded engine of another local process, over its HTTP routes."""

    kind = "proxy"

    def __init__(self, url: str, *, timeout: float = 300.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.target = f"embedded ClickHouse owned by the process at {self.url}"
        # trust_env=False: an HTTP(S)_PROXY from the environment must not capture localhost.
        self._http = httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=2.0),
        )

    def _post(self, path: str, sql: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        import httpx

        params = check_parameters(sql, parameters)
        body = {"sql": sql, "parameters": _param_to_json(params) if params else None}
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise ClickHouseError(
                f"the ClickHouse owner at {self.url} did not answer: {exc}"
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                raise ClickHouseError(payload["error"])
            if response.status_code == 413:
                raise ClickHouseError(
                    f"the ClickHouse owner at {self.url} refused a {len(sql)}-character "
                    "statement as too large for its HTTP server"
                )
            raise ClickHouseError(
                f"the ClickHouse owner at {self.url} answered HTTP {response.status_code}"
            )
        if not isinstance(payload, dict):
            raise ClickHouseError(f"the ClickHouse owner at {self.url} sent a malformed answer")
        return payload

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        payload = self._post(QUERY_PATH, sql, parameters)
        types = list(payload.get("types", []))
        return QueryResult(
            list(payload.get("columns", [])), types, _decode_rows(types, payload.get("rows", []))
        )

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._post(COMMAND_PATH, sql, parameters)

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        """Insert as JSONEachRow data through the command route (no third route needed).

        The values travel as data parsed by ClickHouse's JSON input format, never
        as SQL text; datetimes use the parameter encoding (UTC wall time). Rows go
        in requests of at most ~PROXY_MAX_BODY bytes (aiohttp refuses bodies over
        1 MiB by default), so a large insert is several INSERTs, not one atomic one.
        """
        if not rows:
            return
        names = list(column_names)
        columns = ", ".join(quote_identifier(n) for n in names)
        head = (
            f"INSERT INTO {quote_identifier(table)} ({columns}) "
            "SETTINGS date_time_input_format = 'best_effort' FORMAT JSONEachRow\n"
        )
        batch: list[str] = []
        size = len(head) + 64
        for row in rows:
            if len(row) != len(names):
                raise UsageError(
                    f"insert into {table}: row has {len(row)} values, not {len(names)}"
                )
            line = (
                "{"
                + ",".join(
                    f"{_json_line(n)}:{_json_line(_param_to_json(v))}"
                    for n, v in zip(names, row, strict=True)
                )
                + "}"
            )
            # The line is embedded in a JSON string in the request: count its escaped size.
            line_size = len(json.dumps(line, ensure_ascii=False).encode()) + 2
            if batch and size + line_size > PROXY_MAX_BODY:
                self._post(COMMAND_PATH, head + "\n".join(batch), None)
                batch, size = [], len(head) + 64
            batch.append(line)
            size += line_size
        self._post(COMMAND_PATH, head + "\n".join(batch), None)

    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        if not body:
            return
        columns = ", ".join(quote_identifier(n) for n in column_names)
        settings = ", ".join(f"{k} = {v!r}" for k, v in JSON_INSERT_SETTINGS.items())
        head = (
            f"INSERT INTO {quote_identifier(table)} ({columns}) "
            f"SETTINGS {settings} FORMAT JSONCompactEachRow\n"
        )
        chunk: list[str] = []
        size = 0
        for line in body.decode().split("\n"):
            # Keep each request under the owner's body limit (see insert()).
            line_size = len(json.dumps(line, ensure_ascii=False).encode()) + 2
            if chunk and size + line_size > PROXY_MAX_BODY - len(head) - 64:
                self._post(COMMAND_PATH, head + "\n".join(chunk), None)
                chunk, size = [], 0
            chunk.append(line)
            size += line_size
        self._post(COMMAND_PATH, head + "\n".join(chunk), None)

    def close(self) -> None:
        self._http.close()


# --------------------------------------------------------------------------- owner side


async def handle_owner_request(
    ch: ClickHouse, executor: Executor | None, path: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    """Serve one owner-protocol request; framework-free (status, JSON payload).

    The ClickHouse call (and the JSON conversion of its rows) runs in
    ``executor`` because chDB blocks; ``None`` means the loop's default executor.
    """
    import asyncio

    route = path.rstrip("/")
    if route == PING_PATH:
        return 200, {"ok": True, "pid": os.getpid()}
    if route not in (QUERY_PATH, COMMAND_PATH):
        return 404, {"error": f"no route {path}"}
    try:
        request = json.loads(body or b"null")
    except ValueError:
        return 400, {"error": "request body is not JSON"}
    if not isinstance(request, dict) or not isinstance(request.get("sql"), str):
        return 400, {"error": 'request must be {"sql": str, "parameters": {...} | null}'}
    sql: str = request["sql"]
    parameters = request.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        return 400, {"error": "parameters must be a JSON object"}
    if not sql.strip():
        return 400, {"error": "empty query"}

    def run() -> dict[str, Any]:
        if route == COMMAND_PATH:
            ch.command(sql, parameters)
            return {"ok": True}
        result = ch.query(sql, parameters)
        return {
            "columns": result.columns,
            "types": result.types,
            "rows": [[to_json_value(v) for v in row] for row in result.rows],
        }

    loop = asyncio.get_running_loop()
    try:
        return 200, await loop.run_in_executor(executor, run)
    except GovstreamError as exc:
        # Already a message for humans ("ClickHouse: Code: ..."): just keep it to one line.
        return 400, {"error": " ".join(str(exc).split())}
    except Exception as exc:  # the owner must answer, not drop the connection
        log.exception("ClickHouse owner request failed")
        return 500, {"error": f"internal error in the ClickHouse owner: {type(exc).__name__}"}


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def mount_owner_routes(
    aiohttp_app: web.Application, ch: ClickHouse, executor: Executor | None
) -> None:
    """Add the owner routes to an aiohttp app (before it starts; routers freeze)."""
    import asyncio

    from aiohttp import web

    def view(route: str) -> Callable[[web.Request], Any]:
        # The route is bound here, not read from request.path, so a prefix/sub-app works.
        async def handler(request: web.Request) -> web.Response:
            if not _is_loopback(request.remote):
                # Arbitrary SQL for whoever connects: never for other hosts, even if
                # the worker's web server listens on 0.0.0.0.
                return web.json_response(
                    {"error": "the ClickHouse owner routes answer local clients only"}, status=403
                )
            status, payload = await handle_owner_request(ch, executor, route, await request.read())
            # Big results: serialize off the loop (the worker must keep its heartbeats).
            text = await asyncio.get_running_loop().run_in_executor(None, json.dumps, payload)
            return web.Response(text=text, status=status, content_type="application/json")

        return handler

    aiohttp_app.router.add_post(QUERY_PATH, view(QUERY_PATH))
    aiohttp_app.router.add_post(COMMAND_PATH, view(COMMAND_PATH))
    aiohttp_app.router.add_get(PING_PATH, view(PING_PATH))
    aiohttp_app.router.add_post(PING_PATH, view(PING_PATH))


# --------------------------------------------------------------------------- registration


OWNER_STARTUP_GRACE = 20.0  # seconds


def owner_file(settings: Settings) -> Path:
    # Beside the data directory: each embedded engine has its own owner.
    path = settings.chdb_path
    return path.parent / f"{path.name}.{OWNER_FILE}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _pid_hint(pid: int | None) -> str:
    return f"pid {pid}?" if pid else "pid unknown"


def _remove_if_unchanged(path: Path, text: str) -> None:
    # Only remove what we judged stale: a new owner may have just rewritten the file.
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            path.unlink()


@contextlib.contextmanager
def register_owner(settings: Settings, url: str) -> Iterator[Path]:
    """Advertise this process as the embedded engine's owner while the block runs.

    Call it after the engine is open and the routes answer: whoever holds the
    engine is by definition the only owner, so an existing file is overwritten.
    """
    path = owner_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"pid": os.getpid(), "url": url.rstrip("/")})
    tmp = path.with_name(f".{OWNER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: readers never see half a file
    try:
        yield path
    finally:
        _remove_if_unchanged(path, text)


def find_owner(settings: Settings, *, timeout: float = 1.0) -> str | None:
    """The registered owner's URL if its process is alive and answers, else None."""
    import httpx

    path = owner_file(settings)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        record = json.loads(text)
        pid, url = int(record["pid"]), str(record["url"])
    except (ValueError, KeyError, TypeError):
        _remove_if_unchanged(path, text)
        return None
    if not _pid_alive(pid):
        _remove_if_unchanged(path, text)
        return None
    try:
        # POST: a view that serves only POST /v1/clickhouse/{action} answers it too.
        response = httpx.post(url + PING_PATH, timeout=timeout, trust_env=False)
        answer = response.json()
    except (httpx.HTTPError, ValueError):
        # Alive but silent (starting, or wedged): not ours to delete; the caller
        # will find the engine locked and say so.
        return None
    if response.status_code != 200 or not isinstance(answer, dict) or answer.get("pid") != pid:
        return None
    return url


def open_clickhouse(
    settings: Settings, *, role: Literal["owner", "client"] = "client"
) -> ClickHouse:
    """The right ClickHouse for this process.

    server URL set -> Server; embedded + owner -> Embedded; embedded + client ->
    OwnerProxy when an owner answers, else Embedded opened directly.
    """
    if not settings.clickhouse_embedded:
        assert settings.clickhouse_url is not None
        return Server(settings.clickhouse_url, settings.clickhouse_database)
    if role == "owner":
        return Embedded(settings.chdb_path, settings.clickhouse_database)
    url = find_owner(settings)
    if url is not None:
        return OwnerProxy(url)
    try:
        return Embedded(settings.chdb_path, settings.clickhouse_database)
    except EmbeddedLockedError as exc:
        # A worker that is still starting has registered and holds the engine
        # before its web port answers: give it a moment before calling it stuck.
        grace = OWNER_STARTUP_GRACE if owner_file(settings).exists() else 0.0
        deadline = clock.monotonic() + grace
        while clock.monotonic() < deadline:
            clock.sleep(0.25)
            url = find_owner(settings)
            if url is not None:
                return OwnerProxy(url)
        raise GovstreamError(
            f"embedded ClickHouse at {exc.path} is held by another process "
            f"({_pid_hint(exc.pid)}) that does not answer; stop it or set "
            "GOVSTREAM_CLICKHOUSE_URL"
        ) from None
