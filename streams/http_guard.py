"""Who may call which route on a worker's web port, checked before any handler runs.

Every route is listed in ROUTES with the credentials that may call it; the
guard (an aiohttp middleware on Faust's web server) answers everything else
itself, before a handler parses a byte of the body:

- a browser-shaped request (an Origin or Sec-Fetch-* header) is refused, 403:
  no API route is meant for a web page, and refusing them stops a page open in
  a browser on the same machine from driving the API (CSRF, DNS rebinding).
  The console's routes (`browser=True`) are for browsers: they take a
  same-origin request only (Origin, if sent, is the worker's own; Sec-Fetch-Site
  is same-origin or none) and read the key from the console's cookie, which
  `POST /console/login` sets (HttpOnly, SameSite=Strict); a browser without
  one is sent to the sign-in page;
- no credential, or an unknown one, is 401 on every path, listed or not;
- a route not in ROUTES (Faust's own views included) is 404;
- a credential whose role the route does not admit is 403;
- a POST whose body is not `application/json` is 415; the OTLP route
  (`POST /v1/traces`) also takes `application/x-protobuf` (Route.content_types).

Credentials (`Authorization: Bearer <credential>` or `X-API-Key`):
- a tenant API key (GOVSTREAM_API_KEYS `key:tenant`): that tenant's data only;
- an operator key (GOVSTREAM_API_KEYS `key:*`): every tenant, and health;
- the worker's local secret: a random value the worker writes at start into
  `<home>/run/worker-<port>.json`, readable by its own user only (mode 0600).
  The CLI, the demo and tests on the same machine use it for health and for
  the embedded ClickHouse owner routes (sql/client.py).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from sql.client import write_private

if TYPE_CHECKING:
    from govstream.settings import Settings

Role = Literal["tenant", "operator", "local"]


@dataclass(frozen=True)
class Principal:
    role: Role
    tenant: str | None = None  # the tenant of a tenant key

    def may_act_for(self, tenant: str) -> bool:
        """Operator keys act for every tenant, tenant keys for their own only."""
        return self.role == "operator" or (self.role == "tenant" and self.tenant == tenant)


# Where the guard leaves the authenticated Principal on the request.
PRINCIPAL = web.RequestKey("govstream.principal", Principal)


JSON_ONLY: frozenset[str] = frozenset({"application/json"})


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp's canonical form
    roles: frozenset[Role]
    purpose: str
    content_types: frozenset[str] = JSON_ONLY  # what a POST body may be
    browser: bool = False  # the console: same-origin browser requests, cookie credential
    public: bool = False  # no credential (the console's sign-in)


_TENANT_OR_OPERATOR: frozenset[Role] = frozenset({"tenant", "operator"})
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/admission/turn", _TENANT_OR_OPERATOR, "may this turn proceed (budgets)"),
    Route("POST", "/v1/admission/tool", _TENANT_OR_OPERATOR, "the signed policy decision"),
    Route("GET", "/v1/budgets/{tenant}", _TENANT_OR_OPERATOR, "a tenant's balances"),
    Route(
        "POST",
        "/v1/traces",
        frozenset({"tenant"}),
        "OTLP/HTTP GenAI spans as events (docs/otlp.md)",
        frozenset({"application/json", "application/x-protobuf"}),
    ),
    Route(
        "GET",
        "/v1/sessions/{session_id}/context",
        _TENANT_OR_OPERATOR,
        "the compact context of a session",
    ),
    Route("GET", "/v1/health", frozenset({"operator", "local"}), "worker health and counters"),
    Route(
        "POST",
        "/v1/clickhouse/query",
        frozenset({"local"}),
        "read-only SQL for the CLI (embedded ClickHouse owner)",
    ),
    Route(
        "POST",
        "/v1/clickhouse/migrate",
        frozenset({"local"}),
        "apply migrations and retention (embedded ClickHouse owner)",
    ),
    Route(
        "POST", "/v1/clickhouse/ping", frozenset({"local"}), "find the embedded ClickHouse owner"
    ),
)
_CONSOLE_FORM: frozenset[str] = frozenset({"application/x-www-form-urlencoded"})
ROUTES += (
    Route("GET", "/console/login", frozenset(), "the console's sign-in page", browser=True,
          public=True),
    Route("POST", "/console/login", frozenset(), "sign in: an API key in, the console cookie out",
          _CONSOLE_FORM, browser=True, public=True),
    Route("GET", "/console", _TENANT_OR_OPERATOR, "the console: KPIs, charts, tables",
          browser=True),
    Route("GET", "/console/sessions", _TENANT_OR_OPERATOR, "the console: a tenant's sessions",
          browser=True),
    Route("GET", "/console/sessions/{session_id}", _TENANT_OR_OPERATOR,
          "the console: one session's timeline", browser=True),
)  # fmt: skip
_BY_KEY = {(r.method, r.path): r for r in ROUTES}
# The console's cookie: the API key a browser signed in with.
CONSOLE_COOKIE = "govstream_console"
CONSOLE_LOGIN = "/console/login"


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def credential_of(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


class Guard:
    """Authenticates every request and admits it only to the routes its role may call."""

    def __init__(self, api_keys: Mapping[str, str], local_secret: str) -> None:
        self._keys = dict(api_keys)
        self._local = local_secret

    def authenticate(self, credential: str) -> Principal | None:
        if not credential:
            return None
        if hmac.compare_digest(credential.encode(), self._local.encode()):
            return Principal("local")
        tenant = self._keys.get(credential)
        if tenant is None:
            return None
        return Principal("operator") if tenant == "*" else Principal("tenant", tenant)

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = _BY_KEY.get((request.method, resource.canonical if resource else ""))
        console = route is not None and route.browser
        browser = "Origin" in request.headers or any(
            h.lower().startswith("sec-fetch-") for h in request.headers
        )
        if browser and not (console and _same_origin(request)):
            return json_error(403, "browser requests are refused; call the API from a server")
        if route is not None and route.public:
            return _wrong_body(request, route) or await handler(request)
        credential = credential_of(request)
        if not credential and console:
            credential = request.cookies.get(CONSOLE_COOKIE, "")
        principal = self.authenticate(credential) if credential else None
        if principal is None and console and browser:
            raise web.HTTPSeeOther(CONSOLE_LOGIN)  # a person: to the sign-in page
        if not credential:
            return json_error(401, "missing credential (Authorization: Bearer <key>)")
        if principal is None:
            return json_error(401, "unknown credential")
        if route is None:
            return json_error(404, f"no route {request.method} {request.path}")
        if principal.role not in route.roles:
            return json_error(403, "this credential may not call this route")
        wrong = _wrong_body(request, route)
        if wrong is not None:
            return wrong
        request[PRINCIPAL] = principal
        return await handler(request)


def _wrong_body(request: web.Request, route: Route) -> web.Response | None:
    """415 for a POST whose body is not of a type the route takes."""
    if request.method == "POST" and request.content_type not in route.content_types:
        return json_error(415, f"the body must be {' or '.join(sorted(route.content_types))}")
    return None


def _same_origin(request: web.Request) -> bool:
    """A request a page of this worker made (or a person typed): not another site's."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return False
    return request.headers.get("Sec-Fetch-Site", "none") in ("same-origin", "none")


def principal_of(request: web.Request) -> Principal:
    """The Principal the guard authenticated (every handler runs behind it)."""
    return request[PRINCIPAL]


# --- the worker's local secret -------------------------------------------------------


def worker_file(settings: Settings) -> Path:
    return (settings.home / "run" / f"worker-{settings.web_port}.json").resolve()


def new_local_secret() -> str:
    return secrets.token_urlsafe(32)


@contextlib.contextmanager
def registered_worker(settings: Settings, url: str, secret: str) -> Iterator[Path]:
    """Advertise the worker's URL and local secret while the block runs."""
    path = worker_file(settings)
    text = json.dumps({"pid": os.getpid(), "url": url, "secret": secret})
    write_private(path, text)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                path.unlink()


def read_local_secret(settings: Settings) -> str | None:
    """The local secret of the worker on settings.web_port, if one is registered."""
    try:
        record = json.loads(worker_file(settings).read_text())
        return str(record["secret"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
