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

Owner HTTP protocol (JSON bodies, mounted by :func:`mount_owner_routes`). Every
request carries the owner's local secret (``Authorization: Bearer <secret>``,
from the owner file, mode 0600) and comes from loopback; the worker's guard
(streams/http_guard.py) refuses anything else::

    POST /v1/clickhouse/query    {"sql": str, "parameters": {name: value} | null}
         200 {"columns": [str], "types": [str], "rows": [[value, ...], ...]}
         only one read-only statement (sql/readonly.py), run with readonly = 1
    POST /v1/clickhouse/migrate  {}
         200 {"applied": [str], "retention": [str]}  (the owner's own migrations)
    POST /v1/clickhouse/ping     {}
         200 {"ok": true, "pid": int}
    errors: 400 {"error": "one line"} (bad request, refused or failed statement),
            401/403/404/415 from the guard, 500 (unexpected failure in the owner)

Writes go through the owner only as `migrate`: the CLI's other commands read.

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
MIGRATE_PATH = "/v1/clickhouse/migrate"
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
    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, readonly: bool = False
    ) -> QueryResult:
        """Rows of one statement; `readonly` runs it under ClickHouse's readonly = 1."""

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


class Queued(ClickHouse):
    """`inner` with each call queued on `executor` as a task of its own. A read of many
    statements that takes seconds runs on another thread through this, so the
    executor's queue (first in, first out) lets the sink's inserts and a page's queries
    in between its statements instead of after all of them. (The engine's lock would
    not: the thread that releases it takes it straight back.)"""

    kind = "queued"

    def __init__(self, inner: ClickHouse, executor: Executor) -> None:
        self._inner, self._executor = inner, executor
        self.target = inner.target

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, readonly: bool = False
    ) -> QueryResult:
        return self._executor.submit(self._inner.query, sql, parameters, readonly=readonly).result()

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._executor.submit(self._inner.command, sql, parameters).result()

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        self._executor.submit(self._inner.insert, table, rows, column_names).result()

    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        self._executor.submit(self._inner.insert_json, table, column_names, body).result()

    def close(self) -> None:
        """Nothing: the inner client belongs to whoever made it."""


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
    # SQL text -> the columns and types of its result, for this database (_describe).
    _described: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]

    def _wrap(self, exc: Exception) -> ClickHouseError:
        return ClickHouseError(f"ClickHouse: {one_line(str(exc))}")

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, readonly: bool = False
    ) -> QueryResult:
        from clickhouse_connect.driver.exceptions import Error

        params = check_parameters(sql, parameters)
        settings = {"readonly": 1} if readonly else None
        try:
            with self._lock:
                result = self._client.query(sql, parameters=params, settings=settings)
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
        # A statement's columns do not depend on its parameters' values, so each
        # text is described once (a page's empty panels cost ~15 ms each otherwise).
        from clickhouse_connect.driver.exceptions import Error

        known = self._described.get(sql)
        if known is not None:
            return list(known[0]), list(known[1])
        body = sql.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", _LEADING_COMMENTS_RE.sub("", body)):
            return [], []
        try:
            described = self._client.query(f"DESCRIBE ({body}\n)", parameters=params)
        except Error:
            return [], []
        columns = [r[0] for r in described.result_rows]
        types = [r[1] for r in described.result_rows]
        if len(self._described) < 512:  # the shipped queries; not ad hoc texts past it
            self._described[sql] = (tuple(columns), tuple(types))
        return columns, types

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        from clickhouse_connect.driver.exceptions import Error

        params = check_parameters(sql, parameters)
        self._described.clear()  # a statement may change a table, so what a SELECT returns
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
        self._described = {}
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
        self._described = {}
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
    """The embedded engine of another local process, over its HTTP routes.

    It reads (one read-only statement at a time) and asks the owner to apply
    its migrations; it cannot write otherwise (see the module doc).
    """

    kind = "proxy"

    def __init__(self, url: str, secret: str, *, timeout: float = 300.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.target = f"embedded ClickHouse owned by the process at {self.url}"
        # trust_env=False: an HTTP(S)_PROXY from the environment must not capture localhost.
        self._http = httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=2.0),
            headers={"Authorization": f"Bearer {secret}"},
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

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
            raise ClickHouseError(
                f"the ClickHouse owner at {self.url} answered HTTP {response.status_code}"
            )
        if not isinstance(payload, dict):
            raise ClickHouseError(f"the ClickHouse owner at {self.url} sent a malformed answer")
        return payload

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, *, readonly: bool = True
    ) -> QueryResult:
        params = check_parameters(sql, parameters)
        body = {"sql": sql, "parameters": _param_to_json(params) if params else None}
        payload = self._post(QUERY_PATH, body)
        types = list(payload.get("types", []))
        return QueryResult(
            list(payload.get("columns", [])), types, _decode_rows(types, payload.get("rows", []))
        )

    def _refuse_write(self) -> UsageError:
        return UsageError(
            f"a worker owns embedded ClickHouse ({self.url}) and serves reads only; "
            "stop the worker to write, or use a ClickHouse server (GOVSTREAM_CLICKHOUSE_URL)"
        )

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        raise self._refuse_write()

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        raise self._refuse_write()

    def insert_json(self, table: str, column_names: Sequence[str], body: bytes) -> None:
        raise self._refuse_write()

    def migrate(self) -> tuple[list[str], list[str]]:
        """Ask the owner to apply its migrations and retention: (applied, retention)."""
        payload = self._post(MIGRATE_PATH, {})
        return list(payload.get("applied", [])), list(payload.get("retention", []))

    def close(self) -> None:
        self._http.close()


# --------------------------------------------------------------------------- owner side

# What the owner runs for POST /v1/clickhouse/migrate: (applied, retention statements).
Migrate = Callable[["ClickHouse"], tuple[list[str], list[str]]]


async def handle_owner_request(
    ch: ClickHouse, executor: Executor | None, path: str, body: bytes, migrate: Migrate
) -> tuple[int, dict[str, Any]]:
    """Serve one owner-protocol request; framework-free (status, JSON payload).

    The ClickHouse call (and the JSON conversion of its rows) runs in
    ``executor`` because chDB blocks; ``None`` means the loop's default executor.
    The caller has authenticated the request (streams/http_guard.py).
    """
    import asyncio

    from sql.readonly import read_only_statement

    route = path.rstrip("/")
    if route == PING_PATH:
        return 200, {"ok": True, "pid": os.getpid()}
    if route not in (QUERY_PATH, MIGRATE_PATH):
        return 404, {"error": f"no route {path}"}
    try:
        request = json.loads(body or b"null")
    except ValueError:
        return 400, {"error": "request body is not JSON"}
    if not isinstance(request, dict):
        return 400, {"error": "request body must be a JSON object"}

    def run_migrate() -> dict[str, Any]:
        applied, retention = migrate(ch)
        return {"applied": applied, "retention": retention}

    def run_query() -> dict[str, Any]:
        statement = read_only_statement(ch, sql, parameters)
        result = ch.query(statement, parameters, readonly=True)
        return {
            "columns": result.columns,
            "types": result.types,
            "rows": [[to_json_value(v) for v in row] for row in result.rows],
        }

    if route == MIGRATE_PATH:
        run = run_migrate
    else:
        if not isinstance(request.get("sql"), str):
            return 400, {"error": 'request must be {"sql": str, "parameters": {...} | null}'}
        sql: str = request["sql"]
        parameters = request.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            return 400, {"error": "parameters must be a JSON object"}
        if not sql.strip():
            return 400, {"error": "empty query"}
        run = run_query

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
    aiohttp_app: web.Application, ch: ClickHouse, executor: Executor | None, migrate: Migrate
) -> None:
    """Add the owner routes to an aiohttp app (before it starts; routers freeze).

    Behind the worker's guard: only the owner's local secret reaches them.
    """
    import asyncio

    from aiohttp import web

    def view(route: str) -> Callable[[web.Request], Any]:
        # The route is bound here, not read from request.path, so a prefix/sub-app works.
        async def handler(request: web.Request) -> web.Response:
            if not _is_loopback(request.remote):
                # SQL for whoever connects: never for other hosts, even if the
                # worker's web server listens on 0.0.0.0.
                return web.json_response(
                    {"error": "the ClickHouse owner routes answer local clients only"}, status=403
                )
            status, payload = await handle_owner_request(
                ch, executor, route, await request.read(), migrate
            )
            # Big results: serialize off the loop (the worker must keep its heartbeats).
            text = await asyncio.get_running_loop().run_in_executor(None, json.dumps, payload)
            return web.Response(text=text, status=status, content_type="application/json")

        return handler

    for route in (QUERY_PATH, MIGRATE_PATH, PING_PATH):
        aiohttp_app.router.add_post(route, view(route))


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


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by this user only (0600 in a 0700 directory)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)  # atomic: readers never see half a file


@contextlib.contextmanager
def register_owner(settings: Settings, url: str, secret: str) -> Iterator[Path]:
    """Advertise this process as the embedded engine's owner while the block runs.

    Call it after the engine is open and the routes answer: whoever holds the
    engine is by definition the only owner, so an existing file is overwritten.
    The file holds the owner's local secret: only this user can read it.
    """
    path = owner_file(settings)
    text = json.dumps({"pid": os.getpid(), "url": url.rstrip("/"), "secret": secret})
    write_private(path, text)
    try:
        yield path
    finally:
        _remove_if_unchanged(path, text)


@dataclass(frozen=True)
class Owner:
    url: str
    secret: str


def find_owner(settings: Settings, *, timeout: float = 1.0) -> Owner | None:
    """The registered owner if its process is alive and answers, else None."""
    import httpx

    path = owner_file(settings)
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        record = json.loads(text)
        pid, url, secret = int(record["pid"]), str(record["url"]), str(record["secret"])
    except (ValueError, KeyError, TypeError):
        _remove_if_unchanged(path, text)
        return None
    if not _pid_alive(pid):
        _remove_if_unchanged(path, text)
        return None
    try:
        response = httpx.post(
            url + PING_PATH,
            json={},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=timeout,
            trust_env=False,
        )
        answer = response.json()
    except (httpx.HTTPError, ValueError):
        # Alive but silent (starting, or wedged): not ours to delete; the caller
        # will find the engine locked and say so.
        return None
    if response.status_code != 200 or not isinstance(answer, dict) or answer.get("pid") != pid:
        return None
    return Owner(url, secret)


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
    owner = find_owner(settings)
    if owner is not None:
        return OwnerProxy(owner.url, owner.secret)
    try:
        return Embedded(settings.chdb_path, settings.clickhouse_database)
    except EmbeddedLockedError as exc:
        # A worker that is still starting has registered and holds the engine
        # before its web port answers: give it a moment before calling it stuck.
        grace = OWNER_STARTUP_GRACE if owner_file(settings).exists() else 0.0
        deadline = clock.monotonic() + grace
        while clock.monotonic() < deadline:
            clock.sleep(0.25)
            owner = find_owner(settings)
            if owner is not None:
                return OwnerProxy(owner.url, owner.secret)
        raise GovstreamError(
            f"embedded ClickHouse at {exc.path} is held by another process "
            f"({_pid_hint(exc.pid)}) that does not answer; stop it or set "
            "GOVSTREAM_CLICKHOUSE_URL"
        ) from None
