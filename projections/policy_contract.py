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

Host grammar: events/hosts.py (`parse_host` for destinations,
`parse_host_pattern` for allowlist entries).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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

from events.hosts import (
    HostError,
    ParsedHost,
    compile_allowlist,
    parse_host,
    parse_host_pattern,
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
