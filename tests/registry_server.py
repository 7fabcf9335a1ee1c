"""A small Confluent Schema Registry API server for tests (no registry runs here).

It implements the part of the REST API govstream uses, with Confluent's
semantics: ids are global and shared by identical schemas, versions count per
subject, a registered schema is looked up by POST /subjects/{subject}.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RegistryState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: dict[int, str] = {}  # id -> canonical text
        self.ids: dict[str, int] = {}  # canonical text -> id
        self.subjects: dict[str, list[int]] = {}  # subject -> ids by version
        self.requests: list[tuple[str, str]] = []

    @staticmethod
    def canonical(text: str) -> str:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))

    def register(self, subject: str, text: str) -> int:
        canon = self.canonical(text)
        with self.lock:
            schema_id = self.ids.get(canon)
            if schema_id is None:
                schema_id = self.ids[canon] = 100 + len(self.ids)
                self.schemas[schema_id] = canon
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


def _handler(state: RegistryState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, code: int, message: str) -> None:
            self._reply(404, {"error_code": code, "message": message})

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            parts = self.path.strip("/").split("/")
            if parts[:2] == ["schemas", "ids"] and len(parts) == 3:
                text = state.schemas.get(int(parts[2]))
                if text is None:
                    return self._not_found(40403, "Schema not found")
                return self._reply(200, {"schema": text})
            if parts[0] == "subjects" and parts[2:] == ["versions", "latest"]:
                ids = state.subjects.get(parts[1])
                if not ids:
                    return self._not_found(40401, "Subject not found")
                sid = ids[-1]
                return self._reply(
                    200,
                    {"subject": parts[1], "version": len(ids), "id": sid,
                     "schema": state.schemas[sid]},
                )  # fmt: skip
            return self._not_found(404, "not found")

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            parts = self.path.strip("/").split("/")
            if parts[0] != "subjects" or len(parts) < 2:
                return self._not_found(404, "not found")
            subject = parts[1]
            if parts[2:] == ["versions"]:
                return self._reply(200, {"id": state.register(subject, body["schema"])})
            if len(parts) == 2:
                canon = state.canonical(body["schema"])
                sid = state.ids.get(canon)
                if sid is None or sid not in state.subjects.get(subject, []):
                    return self._not_found(40403, "Schema not found")
                version = state.subjects[subject].index(sid) + 1
                return self._reply(200, {"subject": subject, "id": sid, "version": version})
            return self._not_found(404, "not found")

    return Handler


class RegistryServer:
    """Serves on 127.0.0.1 in a thread: `with RegistryServer() as url: ...`."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
