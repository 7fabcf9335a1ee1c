"""Child processes the CLI, the demo, tests and benchmarks start: workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from govstream.errors import GovstreamError
from govstream.settings import Settings, as_environment
from streams.http_guard import read_local_secret


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (for a worker's web port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """A `govstream worker` in a child process, stopped by pid when done."""

    def __init__(self, settings: Settings, *, log_path: Path, loglevel: str = "warn") -> None:
        self.settings = settings
        self.log_path = log_path
        self.url = f"http://{settings.web_host}:{settings.web_port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115  # closed in stop()
        env = {**os.environ, **as_environment(settings)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "govstream.cli", "worker", "--loglevel", loglevel],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not it
        )

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait until the worker answers on its web port; return seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise GovstreamError(
                    f"worker exited with status {self.proc.returncode}; "
                    f"log {self.log_path}: {self.tail(3)}"
                )
            secret = read_local_secret(self.settings)
            try:
                if secret is not None and self._get_health(secret, 1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise GovstreamError(f"worker not ready after {timeout:.0f}s; log {self.log_path}")

    def _get_health(self, secret: str, timeout: float, digest: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"}
        params = {"digest": "1"} if digest else None
        return httpx.get(f"{self.url}/v1/health", headers=headers, params=params, timeout=timeout)

    def health(self, digest: bool = False) -> dict:  # type: ignore[type-arg]
        """GET /v1/health with the worker's local secret (it runs on this machine)."""
        secret = read_local_secret(self.settings)
        if secret is None:
            raise GovstreamError(f"the worker at {self.url} has not registered its secret")
        return self._get_health(secret, 30.0 if digest else 5.0, digest).json()

    def tail(self, lines: int) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL: for crash drills."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode
