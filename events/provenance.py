"""Record provenance: what a govstream worker writes to Kafka carries its signature.

Producers share the log with the workers (and, before Kafka ACLs are set up,
could write to any topic). A derived event (a decision, a budget verdict) is
honoured only when a worker wrote it, so every record a worker produces has a
header

    govstream-signature: <key id>:<hex HMAC-SHA256>

over DOMAIN, the record key (length-prefixed) and the value bytes. The key is
derived from the policy signing key with its own domain, so a record
signature and a PolicyDecided signature are never interchangeable. Pure: no
I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SIGNATURE_HEADER = "govstream-signature"
DOMAIN = b"govstream.record.v1\n"
_KEY_DOMAIN = b"govstream.record-signing-key.v1"


def record_key_from(policy_signing_key: bytes) -> bytes:
    """The record-signing key derived from the worker's policy signing key."""
    return hmac.new(policy_signing_key, _KEY_DOMAIN, hashlib.sha256).digest()


def _message(key: bytes | None, value: bytes) -> bytes:
    k = key or b""
    return DOMAIN + len(k).to_bytes(4, "big") + k + value


def _header_value(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> bytes | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, raw in items:
        if name == SIGNATURE_HEADER and isinstance(raw, bytes | bytearray):
            return bytes(raw)
    return None


@dataclass(frozen=True)
class RecordSigner:
    """Signs records and verifies them; `keys` holds every key id still accepted."""

    key_id: str
    keys: Mapping[str, bytes]

    @classmethod
    def from_policy_key(cls, key_id: str, policy_signing_key: bytes) -> RecordSigner:
        return cls(key_id, {key_id: record_key_from(policy_signing_key)})

    def signature(self, key: bytes | None, value: bytes) -> bytes:
        digest = hmac.new(self.keys[self.key_id], _message(key, value), hashlib.sha256)
        return f"{self.key_id}:{digest.hexdigest()}".encode()

    def header(self, key: bytes | None, value: bytes) -> tuple[str, bytes]:
        """The (name, value) header to send with a record."""
        return SIGNATURE_HEADER, self.signature(key, value)

    def signed_by_worker(
        self,
        headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None,
        key: bytes | None,
        value: bytes,
    ) -> bool:
        raw = _header_value(headers)
        if raw is None:
            return False
        key_id, sep, hexdigest = raw.decode("ascii", "replace").partition(":")
        secret = self.keys.get(key_id)
        if not sep or secret is None:
            return False
        expected = hmac.new(secret, _message(key, value), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, hexdigest)
