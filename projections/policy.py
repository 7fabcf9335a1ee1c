"""The policy engine: decide a ToolCallProposed against a policy document. Pure.

`evaluate(policy, proposal, context, now)` reads nothing but its arguments: no
clock, no I/O, no randomness. The same inputs always give the same Decision,
so a decision can be re-derived bit for bit from the log (and re-run against
a new policy version for what-if analysis). The only I/O is `load_policy`
(in projections.policy_contract, re-exported here), which the processor calls
once at start-up. The contract format and host grammar are documented in
projections/policy_contract.py and policies/example.yaml.

Rule order (fixed; the first deny wins, then approval, else allow):

    0. tenant.unknown  the tenant has no profile in the log and the deployment
                     refuses unknown tenants (GOVSTREAM_UNKNOWN_TENANT=deny)
                     -> UNKNOWN_TENANT
    1. session.*     session status not in session.allowed_statuses:
                     quarantined -> QUARANTINED, suspended -> SESSION_SUSPENDED,
                     not started yet (status "none") -> SESSION_NOT_STARTED,
                     anything else (closed, failed, unknown...) -> SESSION_NOT_ACTIVE;
                     a session suspended because its budget was exceeded falls
                     through to rule 2, which names the cause
    2. budget.exceeded  context.budget_exceeded and session.deny_when_budget_exceeded
    3. tenant.tool.<tool>  the tenant profile marks the tool "deny" (or any value
                     other than allow/deny/approval: fail closed) -> TENANT_DENIED
    4. plan.*        plan.unknown: the plan is not in the document -> UNKNOWN_PLAN;
                     plan.<plan>.tool.<tool>: tool not listed or "deny" ->
                     TOOL_NOT_PERMITTED; declared risk above the listed tier ->
                     RISK_ABOVE_PLAN. Skipped when the tenant profile marks the
                     tool "allow" (a per-tenant grant; nothing else is lifted).
    5. method.<tool> methods lists the tool and the method is not listed
                     (compared upper-cased) -> METHOD_NOT_ALLOWED
    6. payload.*     payload_bytes above payload.per_tool[tool] (payload.tool.<tool>)
                     or, for tools not listed there, payload.max_bytes
                     (payload.global) -> PAYLOAD_TOO_LARGE
    7. egress.*      only when destination_host is set:
                     egress.host: not a plain host -> EGRESS_INVALID_HOST;
                     egress.ip_literal: an IP not listed literally -> EGRESS_INVALID_HOST;
                     egress.<environment>: host not in the environment's allowlist
                     nor the tenant's extra allowlist -> EGRESS_NOT_ALLOWED;
                     egress.port: an explicit port not in egress.ports ->
                     EGRESS_NOT_ALLOWED
    8. approval      approval.<risk>: approval.by_risk[risk] is async or human;
                     tenant.tool.<tool>: the tenant profile marks the tool
                     "approval" (mode approval.tenant_override). When both ask,
                     the stronger mode wins (human > async; on a tie the risk rule).
                     -> require_approval, APPROVAL_REQUIRED
    9. default.allow -> allow, ALLOWED

Tool names are compared exactly (case-sensitive).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from projections.policy_contract import (
    RISK_ORDER,
    ApprovalMode,
    ContractError,
    HostError,
    PolicyDocument,
    compile_allowlist,
    load_policy,
    parse_host,
    parse_policy,
)

if TYPE_CHECKING:
    from events.models import TenantProfileUpdated, ToolCallProposed

__all__ = [
    "REASON_CODES",
    "RULE_ORDER",
    "ContractError",
    "Decision",
    "PolicyContext",
    "PolicyDocument",
    "evaluate",
    "load_policy",
    "parse_policy",
]

REASON_CODES: dict[str, str] = {
    "ALLOWED": "no rule denied the call and none asked for approval",
    "UNKNOWN_TENANT": "the tenant has no profile and this deployment refuses unknown tenants",
    "QUARANTINED": "the session is quarantined; no tool may run",
    "SESSION_SUSPENDED": "the session is suspended; no tool may run until it resumes",
    "SESSION_NOT_ACTIVE": "the session is in a status the policy does not allow tools in",
    "SESSION_NOT_STARTED": "no SessionStarted yet: propose again once the session started",
    "BUDGET_EXCEEDED": "the session's budget is exhausted",
    "TENANT_DENIED": "the tenant profile denies this tool",
    "UNKNOWN_PLAN": "the tenant's plan is not defined in the policy document",
    "TOOL_NOT_PERMITTED": "the plan does not grant this tool (not listed, or deny)",
    "RISK_ABOVE_PLAN": "the declared risk level is above the plan's ceiling for this tool",
    "METHOD_NOT_ALLOWED": "the HTTP method is not allowed for this tool",
    "PAYLOAD_TOO_LARGE": "the payload is larger than the tool's (or the global) limit",
    "EGRESS_INVALID_HOST": "the destination is not a plain hostname, or is an unlisted IP",
    "EGRESS_NOT_ALLOWED": "the destination host or port is not allowed in this environment",
    "APPROVAL_REQUIRED": "the call may run only after an approval (async or human)",
}

RULE_ORDER: tuple[str, ...] = (
    "tenant_unknown",
    "session",
    "budget",
    "tenant_deny",
    "plan",
    "method",
    "payload",
    "egress",
    "approval",
    "default",
)

DecisionKind = Literal["allow", "deny", "require_approval"]
_MODE_STRENGTH = {"none": 0, "async": 1, "human": 2}
_SESSION_REASONS = {"quarantined": "QUARANTINED", "suspended": "SESSION_SUSPENDED"}
NOT_STARTED = "none"  # the status of a session with no SessionStarted folded yet
_TENANT_VALUES = frozenset({"allow", "deny", "approval"})


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation."""

    decision: DecisionKind
    reason_code: str
    rule_id: str  # which rule decided, e.g. "egress.production"
    policy_version: str
    approval_mode: ApprovalMode = "none"  # async | human when require_approval


@dataclass(frozen=True)
class PolicyContext:
    """What the policy processor knows about the session and tenant besides the proposal.

    tenant_tool_permissions: tool -> "allow" | "deny" | "approval" (from
    TenantProfileUpdated); any other value counts as "deny".
    tenant_egress_allowlist: extra allowlist entries (same grammar as the
    document's); entries that do not parse are ignored. They apply in every
    environment, on top of the document's list for the environment.
    """

    plan: str
    environment: str
    session_status: str = "active"
    budget_exceeded: bool = False
    tenant_egress_allowlist: tuple[str, ...] = ()
    tenant_tool_permissions: Mapping[str, str] = field(default_factory=dict)
    tenant_refused: bool = False  # no profile, and unknown tenants are refused

    def __post_init__(self) -> None:
        # Immutable copies: a caller mutating its list/dict cannot change a context.
        object.__setattr__(self, "tenant_egress_allowlist", tuple(self.tenant_egress_allowlist))
        object.__setattr__(
            self, "tenant_tool_permissions", MappingProxyType(dict(self.tenant_tool_permissions))
        )

    @classmethod
    def from_tenant_profile(
        cls,
        profile: TenantProfileUpdated | None,
        *,
        environment: str,
        session_status: str,
        budget_exceeded: bool,
        default_plan: str = "free",
    ) -> PolicyContext:
        """The context for a session of a tenant (default_plan when no profile is known)."""
        if profile is None:
            return cls(default_plan, environment, session_status, budget_exceeded)
        return cls(
            plan=profile.plan,
            environment=environment,
            session_status=session_status,
            budget_exceeded=budget_exceeded,
            tenant_egress_allowlist=tuple(profile.egress_allowlist),
            tenant_tool_permissions=dict(profile.tool_permissions),
        )


_Verdict = tuple[str, str] | None  # (reason_code, rule_id) of a deny, or None


def _tenant_permission(context: PolicyContext, tool: str) -> str | None:
    value = context.tenant_tool_permissions.get(tool)
    if value is None:
        return None
    return value if value in _TENANT_VALUES else "deny"


def _session(
    policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext
) -> _Verdict:
    status = context.session_status
    if status in policy.session.allowed_statuses:
        return None
    if (
        status == "suspended"
        and context.budget_exceeded
        and policy.session.deny_when_budget_exceeded
    ):
        return None  # suspended by its budget: rule 2 names the cause
    if status == NOT_STARTED:
        return "SESSION_NOT_STARTED", "session.not_started"
    if status in _SESSION_REASONS:
        return _SESSION_REASONS[status], f"session.{status}"
    return "SESSION_NOT_ACTIVE", "session.status"


def _budget(policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext) -> _Verdict:
    if context.budget_exceeded and policy.session.deny_when_budget_exceeded:
        return "BUDGET_EXCEEDED", "budget.exceeded"
    return None


def _tenant_deny(
    policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext
) -> _Verdict:
    if _tenant_permission(context, proposal.tool) == "deny":
        return "TENANT_DENIED", f"tenant.tool.{proposal.tool}"
    return None


def _plan(policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext) -> _Verdict:
    plan = policy.plans.get(context.plan)
    if plan is None:
        return "UNKNOWN_PLAN", "plan.unknown"
    if _tenant_permission(context, proposal.tool) == "allow":
        return None
    rule_id = f"plan.{context.plan}.tool.{proposal.tool}"
    ceiling = plan.tools.get(proposal.tool, "deny")
    if ceiling == "deny":
        return "TOOL_NOT_PERMITTED", rule_id
    if RISK_ORDER[proposal.risk_level] > RISK_ORDER[ceiling]:
        return "RISK_ABOVE_PLAN", rule_id
    return None


def _method(policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext) -> _Verdict:
    allowed = policy.methods.get(proposal.tool)
    if allowed is not None and proposal.method.upper() not in allowed:
        return "METHOD_NOT_ALLOWED", f"method.{proposal.tool}"
    return None


def _payload(
    policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext
) -> _Verdict:
    limit = policy.payload.per_tool.get(proposal.tool)
    if limit is not None:
        rule_id = f"payload.tool.{proposal.tool}"
    else:
        limit, rule_id = policy.payload.max_bytes, "payload.global"
    if proposal.payload_bytes > limit:
        return "PAYLOAD_TOO_LARGE", rule_id
    return None


def _egress(policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext) -> _Verdict:
    if proposal.destination_host is None:
        return None  # the tool makes no network call
    try:
        host = parse_host(proposal.destination_host)
    except HostError:
        return "EGRESS_INVALID_HOST", "egress.host"
    listed = compile_allowlist(policy.egress.allowlist.get(context.environment, ()))
    extra = compile_allowlist(context.tenant_egress_allowlist, skip_invalid=True)
    if not (listed.matches(host) or extra.matches(host)):
        if host.kind == "ip":
            return "EGRESS_INVALID_HOST", "egress.ip_literal"
        return "EGRESS_NOT_ALLOWED", f"egress.{context.environment}"
    if host.port is not None and host.port not in policy.egress.ports:
        return "EGRESS_NOT_ALLOWED", "egress.port"
    return None


def _tenant_unknown(
    policy: PolicyDocument, proposal: ToolCallProposed, context: PolicyContext
) -> _Verdict:
    return ("UNKNOWN_TENANT", "tenant.unknown") if context.tenant_refused else None


_DENY_RULES = (
    _tenant_unknown, _session, _budget, _tenant_deny, _plan, _method, _payload, _egress,
)  # fmt: skip


def evaluate(
    policy: PolicyDocument,
    proposal: ToolCallProposed,
    context: PolicyContext,
    now: datetime,
) -> Decision:
    """Decide a proposal. Pure and deterministic; see the module docstring for the order.

    `now` is the caller's clock reading (timezone-aware). No current rule
    depends on time; it is an argument so that time-bound rules never read a
    clock and a replay can pass the original instant.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    version = policy.version
    for rule in _DENY_RULES:
        verdict = rule(policy, proposal, context)
        if verdict is not None:
            return Decision("deny", verdict[0], verdict[1], version)

    # Approval: candidates in a fixed order; the strongest mode wins, ties go first.
    candidates: list[tuple[ApprovalMode, str]] = []
    by_risk: ApprovalMode = getattr(policy.approval.by_risk, proposal.risk_level)
    if by_risk != "none":
        candidates.append((by_risk, f"approval.{proposal.risk_level}"))
    if _tenant_permission(context, proposal.tool) == "approval":
        candidates.append((policy.approval.tenant_override, f"tenant.tool.{proposal.tool}"))
    if candidates:
        mode, rule_id = max(candidates, key=lambda item: _MODE_STRENGTH[item[0]])
        return Decision("require_approval", "APPROVAL_REQUIRED", rule_id, version, mode)
    return Decision("allow", "ALLOWED", "default.allow", version)
