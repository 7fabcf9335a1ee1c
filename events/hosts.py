"""Destination hosts: the strict grammar and normalisation the policy engine decides
on and a signed decision's proposal digest covers (one rule in one place: the
policy contract and `events.signing` both use it).

Host grammar (`parse_host` for destinations, `parse_host_pattern` for
allowlist entries; the same code checks both, so an entry that could never
match is rejected when the document loads):

- A destination is a bare hostname or IP literal, optionally followed by
  ":port" (decimal 1-65535, no leading zeros). Anything else is invalid:
  schemes, paths, queries, userinfo ("good.com@evil.com"), whitespace,
  control characters, empty labels ("good.com..", ".good.com"), labels
  longer than 63 octets or names longer than 253.
- Normalization: ASCII is lower-cased, ONE trailing dot is stripped, every
  non-ASCII label is IDNA2008-encoded to its punycode A-label (the `idna`
  package). Comparisons use the A-label form only, so a Cyrillic or Greek
  look-alike (Cyrillic "o" in "google.com") never equals its Latin original, and an entry
  written in punycode matches the same name written in Unicode.
- A non-ASCII label must already be in its UTS #46 mapped form apart from
  letter case: full-width letters, ideographic full stops, soft hyphens and
  other characters that a resolver would silently rewrite are rejected, so
  the name checked is the name the tool will resolve.
- An ASCII label starting "xn--" must be a valid A-label that round-trips.
- IP literals: canonical dotted-quad IPv4, IPv6 bare ("::1") or bracketed
  ("[::1]", required with a port). A name whose last label is numeric
  ("2130706433", "0x7f000001", "127.1", "0177.0.0.1") is parsed the way
  URL parsers would parse it (as IPv4) and is invalid unless it is a
  canonical dotted quad. An IP literal matches only the same address listed
  literally in an allowlist (never through a wildcard); IPv6 is compared in
  its compressed form.
- Allowlist entries: an exact hostname, an IP literal, or "*." followed by
  a hostname. "*.good.com" matches any name with at least one more label
  ("api.good.com", "a.b.good.com") but not "good.com" itself (list it too)
  and never "good.com.evil.com" or "evilgood.com". Entries carry no port.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import idna

__all__ = [
    "CompiledAllowlist",
    "HostError",
    "ParsedHost",
    "compile_allowlist",
    "parse_host",
    "parse_host_pattern",
]


class HostError(ValueError):
    """A destination host or allowlist entry is not a plain hostname / IP literal."""


# --- host grammar ----------------------------------------------------------------

_ASCII_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:[]")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
# Unicode categories never acceptable in a hostname: controls, format characters
# (zero-width joiners, bidi overrides), separators, unassigned, private use, surrogates.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class ParsedHost:
    """A normalized destination: kind "name" (A-label form) or "ip" (canonical text)."""

    kind: Literal["name", "ip"]
    value: str
    port: int | None = None


def _label_to_ascii(label: str) -> str:
    if label.isascii():
        label = label.lower()
        if not _LDH_LABEL.fullmatch(label):
            raise HostError(f"label {label!r} is not letters, digits and inner hyphens")
        if label.startswith("xn--"):
            try:
                if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                    raise HostError(f"label {label!r} is not a canonical punycode A-label")
            except UnicodeError as exc:  # idna.IDNAError and punycode failures
                raise HostError(f"label {label!r} is not a valid punycode A-label: {exc}") from None
        return label
    for char in label:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            raise HostError(f"label {label!r} contains the invisible character U+{ord(char):04X}")
    try:
        mapped = idna.uts46_remap(label, std3_rules=True, transitional=False)
    except ValueError as exc:  # idna.IDNAError is a ValueError too
        raise HostError(f"label {label!r} is not a valid IDN label: {exc}") from None
    if mapped != label.lower():
        raise HostError(f"label {label!r} is not in normalized form (it maps to {mapped!r})")
    try:
        encoded = idna.alabel(mapped).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError
        raise HostError(f"label {label!r} is not a valid IDN label: {exc}") from None
    if not _LDH_LABEL.fullmatch(encoded):  # belt and braces: output must be plain LDH
        raise HostError(f"label {label!r} does not encode to a plain label")
    return encoded


def _hostname(name: str) -> str:
    """The A-label form of a hostname (no port, no brackets); raises HostError."""
    if name.endswith("."):
        name = name[:-1]  # ONE trailing dot (the DNS root); a second one is an empty label
    if not name:
        raise HostError("empty host")
    labels = name.split(".")
    if any(not label for label in labels):
        raise HostError("empty label")
    ascii_name = ".".join(_label_to_ascii(label) for label in labels)
    if len(ascii_name) > 253:
        raise HostError("host longer than 253 characters")
    return ascii_name


def _ipv6(text: str) -> str:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise HostError(f"{text!r} is not an IPv6 address") from None


def _check_characters(text: str) -> None:
    if not isinstance(text, str):
        raise HostError(f"a host must be a string, got {type(text).__name__}")
    if not text:
        raise HostError("empty host")
    for char in text:
        if char.isascii():
            if char not in _ASCII_ALLOWED:
                raise HostError(
                    f"character {char!r} is not allowed in a host "
                    "(no scheme, path, userinfo, whitespace or wildcard)"
                )
        elif char.isspace() or unicodedata.category(char) in _BAD_CATEGORIES:
            raise HostError(f"invisible character U+{ord(char):04X} in host")


def _name_or_ipv4(name: str) -> ParsedHost:
    stripped = name[:-1] if name.endswith(".") else name
    last = stripped.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last):
        # URL parsers (WHATWG, inet_aton) read such a name as an IPv4 address,
        # including 2130706433, 0x7f000001, 0177.0.0.1 and 127.1: only the
        # canonical dotted quad is accepted, everything else is ambiguous.
        try:
            return ParsedHost("ip", str(ipaddress.IPv4Address(stripped)))
        except ValueError:
            raise HostError(f"{name!r} is a numeric host that is not a dotted-quad IPv4") from None
    return ParsedHost("name", _hostname(name))


@lru_cache(maxsize=8192)
def parse_host(text: str) -> ParsedHost:
    """Parse a destination_host strictly; raises HostError for anything not plain."""
    _check_characters(text)
    port: int | None = None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise HostError("unterminated IPv6 literal")
        if rest:
            if not rest.startswith(":"):
                raise HostError("unexpected text after IPv6 literal")
            port = _port(rest[1:])
        return ParsedHost("ip", _ipv6(inside), port)
    if "[" in text or "]" in text:
        raise HostError("brackets are only allowed around an IPv6 literal")
    colons = text.count(":")
    if colons > 1:
        return ParsedHost("ip", _ipv6(text))  # bare IPv6 ("::1"); it cannot carry a port
    if colons == 1:
        text, _, port_text = text.partition(":")
        port = _port(port_text)
    parsed = _name_or_ipv4(text)
    return ParsedHost(parsed.kind, parsed.value, port)


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise HostError(f"port {text!r} is not a decimal number 1-65535")
    return int(text)


@lru_cache(maxsize=8192)
def parse_host_pattern(text: str) -> tuple[Literal["exact", "wildcard", "ip"], str]:
    """Parse an allowlist entry to ("exact"|"wildcard"|"ip", normalized value)."""
    if text.startswith("*."):
        body = text[2:]
        _check_characters(body)
        if ":" in body or "[" in body:
            raise HostError("a wildcard entry must be '*.' followed by a hostname")
        parsed = _name_or_ipv4(body)
        if parsed.kind == "ip":
            raise HostError("a wildcard entry cannot name an IP address")
        return ("wildcard", parsed.value)
    parsed = parse_host(text)
    if parsed.port is not None:
        raise HostError("allowlist entries carry no port (see egress.ports)")
    return ("ip" if parsed.kind == "ip" else "exact", parsed.value)


@dataclass(frozen=True, slots=True)
class CompiledAllowlist:
    exact: frozenset[str]
    ips: frozenset[str]
    wildcard_suffixes: tuple[str, ...]  # ".good.com" for "*.good.com"

    def matches(self, host: ParsedHost) -> bool:
        if host.kind == "ip":
            return host.value in self.ips
        if host.value in self.exact:
            return True
        return any(host.value.endswith(suffix) for suffix in self.wildcard_suffixes)


@lru_cache(maxsize=1024)
def compile_allowlist(entries: tuple[str, ...], *, skip_invalid: bool = False) -> CompiledAllowlist:
    """Normalize allowlist entries; invalid ones raise, or are skipped if skip_invalid."""
    exact: set[str] = set()
    ips: set[str] = set()
    suffixes: set[str] = set()
    for entry in entries:
        try:
            kind, value = parse_host_pattern(entry)
        except HostError:
            if skip_invalid:
                continue
            raise
        if kind == "wildcard":
            suffixes.add("." + value)
        elif kind == "ip":
            ips.add(value)
        else:
            exact.add(value)
    return CompiledAllowlist(frozenset(exact), frozenset(ips), tuple(sorted(suffixes)))
