"""How every Kafka client of this process connects: plaintext, TLS, SASL or both.

One value, `KafkaSecurity`, holds the protocol (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL), the SASL mechanism and credentials (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) and the TLS material (a CA file, optionally a client
certificate and key, hostname checking). `client_options()` is what each
aiokafka producer, consumer and admin client is built with.

A process configures it once at start (`configure`; the CLI and the worker do
so from their GOVSTREAM_KAFKA_* settings) and every client picks it up with
`current()`; the Emitter also takes one explicitly, for runtimes that talk to
several clusters.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

__all__ = ["KafkaSecurity", "configure", "current"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        sasl = self.protocol.startswith("SASL_")
        if sasl and not (self.mechanism and self.username and self.password is not None):
            raise ValueError(f"{self.protocol} needs a SASL mechanism, a username and a password")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path}: no such file")
        if self.uses_tls:
            self.ssl_context()  # a bad CA or key fails here, not at the first connection

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext:
        """One context per value: every client of the process shares it, so the CA and
        key files are read once, not at each client's construction."""
        return self._context

    @cached_property
    def _context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            context.check_hostname = self.check_hostname
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"TLS material: {exc}") from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.protocol.startswith("SASL_"):
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def faust_credentials(self) -> Any:
        """The same for Faust's own clients (None: plaintext)."""
        import faust

        if self.protocol.startswith("SASL_"):
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=self.ssl_context() if self.uses_tls else None,
            )
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


_CURRENT = KafkaSecurity()


def configure(security: KafkaSecurity) -> None:
    """Set how this process's Kafka clients connect (once, at start)."""
    global _CURRENT
    _CURRENT = security


def current() -> KafkaSecurity:
    return _CURRENT
