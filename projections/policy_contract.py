"""The policy contract: the schema of a policy document, its host grammar, and its loader.

A policy document is YAML or JSON (see policies/example.yaml, which documents
every field). It is validated against `PolicyDocument`, a pydantic model with
extra="forbid" at every level, so a misspelt field is an error rather than a
silently ignored rule. A bad document raises `ContractError` whose message is
one line naming the field, e.g.

    policies/x.yaml: approval.by_risk.high: Input should be 'none', 'async' or 'human'

Shape (schema_version 1):

    schema_version: 1                  # the contract format; only 1 exists
    version: "2026-11-01"              # the policy version stamped on every decision
    plans:                             # plan -> tool -> max risk tier | deny
      free: {tools: {web_search: medium, shell: deny}}
    approval:
      by_risk: {low: none, medium: none, high: async, critical: human}
      tenant_override: human           # mode when a tenant marks a tool "approval"
    egress:
      ports: [443]                     # ports a "host:port" destination may name
      allowlist:                       # environment -> host patterns
        production: [api.example.com, "*.good.com", "xn--bcher-kva.example"]
    methods: {http_request: [GET, HEAD]}       # tool -> allowed HTTP methods
    payload: {max_bytes: 1048576, per_tool: {file_upload: 26214400}}
    session:
      allowed_statuses: [created, active, waiting_for_tool, checkpointed]
      deny_when_budget_exceeded: true

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
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import idna
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

__all__ = [
    "RISK_ORDER",
    "ApprovalMode",
    "ContractError",
    "HostError",
    "ParsedHost",
    "PolicyDocument",
    "compile_allowlist",
    "load_policy",
    "parse_host",
    "parse_host_pattern",
    "parse_policy",
]

RiskTier = Literal["low", "medium", "high", "critical"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
ToolPermission = Literal["low", "medium", "high", "critical", "deny"]
ApprovalMode = Literal["none", "async", "human"]


DocumentT = TypeVar("DocumentT", bound=BaseModel)


class ContractError(ValueError):
    """A policy document is invalid; str() is one line naming the field."""


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


# --- the document schema -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _host_pattern(value: str) -> str:
    try:
        parse_host_pattern(value)
    except HostError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return value


def _method(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{1,16}", value):
        raise ValueError(f"{value!r} is not an upper-case HTTP method such as GET")
    return value


def _not_a_date(value: Any) -> Any:
    if isinstance(value, date):
        raise ValueError('must be a string; quote it in YAML, e.g. "2026-11-01"')
    return value


Name = Annotated[str, Field(min_length=1, max_length=128)]
HostPattern = Annotated[str, Field(min_length=1, max_length=520), AfterValidator(_host_pattern)]
Method = Annotated[str, AfterValidator(_method)]
Bytes = Annotated[int, Field(ge=0, le=2**31 - 1)]


class PlanPolicy(_Strict):
    """Tools a plan may use: tool -> highest risk tier allowed, or "deny"."""

    tools: dict[Name, ToolPermission]


class RiskApproval(_Strict):
    """Approval mode for each declared risk level (all four are required)."""

    low: ApprovalMode
    medium: ApprovalMode
    high: ApprovalMode
    critical: ApprovalMode


class ApprovalPolicy(_Strict):
    by_risk: RiskApproval
    tenant_override: Literal["async", "human"] = Field(
        default="human", description='mode when a tenant profile marks a tool "approval"'
    )


class EgressPolicy(_Strict):
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = (443,)
    allowlist: dict[Name, tuple[HostPattern, ...]]


class PayloadPolicy(_Strict):
    max_bytes: Bytes
    per_tool: dict[Name, Bytes] = Field(
        default_factory=dict, description="replaces max_bytes for the named tool"
    )


class SessionGates(_Strict):
    allowed_statuses: tuple[Name, ...] = Field(min_length=1)
    deny_when_budget_exceeded: bool = True


class PolicyDocument(_Strict):
    """A versioned policy document (schema_version 1)."""

    schema_version: Literal[1]
    version: Annotated[str, BeforeValidator(_not_a_date), Field(min_length=1, max_length=64)]
    description: str = ""
    plans: dict[Name, PlanPolicy] = Field(min_length=1)
    approval: ApprovalPolicy
    egress: EgressPolicy
    methods: dict[Name, tuple[Method, ...]] = Field(default_factory=dict)
    payload: PayloadPolicy
    session: SessionGates

    @field_validator("version")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable() or value != value.strip():
            raise ValueError("must be printable with no surrounding whitespace")
        return value


# --- loading -------------------------------------------------------------------------


def one_line(error: ValidationError, source: str, root: str | None = "<document>") -> str:
    """A validation error as one line naming the file and the first field at fault.

    `root` names a problem of the whole document (an empty location); None
    leaves it unnamed, for checks whose message already names their fields.
    """
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in item["loc"]) or root
        problems.append(f"{where}: {message}" if where else message)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return " ".join(f"{source}: {problems[0]}{more}".split())


def validate_document(
    model: type[DocumentT],
    data: Any,
    source: str,
    error: type[ContractError] = ContractError,
    root: str | None = "<document>",
) -> DocumentT:
    """Validate an already-decoded document against `model`; `error` (one line) if not."""
    if not isinstance(data, Mapping):
        raise error(f"{source}: <document>: must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(exc, source, root)) from None


def parse_policy(data: Any, source: str = "policy") -> PolicyDocument:
    """Validate an already-decoded document; raises ContractError (one line)."""
    return validate_document(PolicyDocument, data, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ContractError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,  # type: ignore[arg-type]
)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ContractError(f"duplicate key {key!r}")
        result[key] = value
    return result


def read_document(path: str | Path, error: type[ContractError] = ContractError) -> Any:
    """The data of a .yaml, .yml or .json document, duplicate keys refused.

    Shared by policy and SLO documents. Raises `error` with a one-line message
    naming the file: a duplicate key silently winning is how a tightened rule
    gets lost in a long file.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{source}: cannot read: {exc}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        if path.suffix in (".yaml", ".yml"):
            return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        raise error(f"{source}: expected a .yaml, .yml or .json file")
    except ContractError as exc:  # duplicate keys, or the suffix check above
        message = str(exc)
        raise error(message if message.startswith(source) else f"{source}: {message}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise error(" ".join(f"{source}: not valid YAML/JSON: {exc}".split())) from None


def load_policy(path: str | Path) -> PolicyDocument:
    """Read and validate a policy document (.yaml, .yml or .json).

    The only I/O of the policy engine. Raises ContractError with a one-line
    message naming the file and the offending field.
    """
    return parse_policy(read_document(path), str(path))
