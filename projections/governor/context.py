"""What the API reads from the governor's state: a session's compact context and a
tenant's balances. Pure functions of the entries."""

from __future__ import annotations

from typing import Any

from projections.governor.budgets import budgets_of
from projections.governor.config import GovernorConfig
from projections.governor.state import (
    PartitionState,
    SessionEntry,
    TenantEntry,
    session_key,
    tenant_key,
)


def compact_context(
    session: SessionEntry, tenant: TenantEntry | None, *, token_budget: int
) -> dict[str, Any]:
    """What a runtime builds its next prompt from.

    Task memory whole, the most recent turns whose tokens fit `token_budget`
    (newest first until the next one would not fit, then back in time order),
    the active constraints (session status, budget verdict, tenant plan and
    allowlists) and the newest denials, so the runtime does not repeat them.
    """
    picked = []
    used = 0
    for turn in reversed(session.turns):
        if used + turn.tokens > token_budget:
            break
        picked.append(turn.to_json())
        used += turn.tokens
    denied = [
        {"at": r.at, "tool": r.tool, "action": r.action, "reason_code": r.reason_code,
         "operation_key": r.operation_key}
        for r in session.policy
        if r.decision != "allow"
    ][-20:]  # fmt: skip
    constraints: dict[str, Any] = {"status": session.status, "budget": session.verdict}
    if tenant is not None and tenant.profiles:
        number, _, profile = tenant.profiles[-1]
        constraints["tenant"] = {
            "plan": profile["plan"],
            "profile_version": number,
            "egress_allowlist": profile["egress_allowlist"],
            "tool_permissions": dict(sorted(profile["tool_permissions"].items())),
        }
    return {
        "session_id": session.session_id,
        "tenant_id": session.tenant_id,
        "task": session.task.to_json(),
        "recent_turns": list(reversed(picked)),
        "recent_turn_tokens": used,
        "turn_memory_tokens": session.turn_tokens,
        "compaction_requested": session.compaction is not None,
        "constraints": constraints,
        "recent_denials": denied,
        "policy_head": session.policy_head,
        "as_of": session.updated_at,
    }


def tenant_balances(
    state: PartitionState, tenant_id: str, config: GovernorConfig, session_id: str | None = None
) -> dict[str, Any]:
    """A tenant's balances and gauges as the partition's state holds them, with one
    session's token balance when `session_id` is given. A tenant with no profile
    shows the deployment's default limits (`"profile": null`)."""
    entry = state.peek(tenant_key(tenant_id))
    tenant = entry if isinstance(entry, TenantEntry) else TenantEntry(tenant_id)
    now = state.clock_ms
    profile = tenant.profile or {}
    budgets = budgets_of(state, tenant_id, config)

    def balance(b: Any, limit: int | None) -> dict[str, Any]:
        return {"limit": limit, "used": b.used, "reserved": b.held(now), "period": b.period}

    balances = {
        "tenant_cost_day": balance(tenant.day, budgets.cost_per_day_usd_micros),
        "tenant_cost_month": balance(tenant.month, budgets.cost_per_month_usd_micros),
    }
    session = state.peek(session_key(tenant_id, session_id)) if session_id else None
    if isinstance(session, SessionEntry):
        balances["session_tokens"] = balance(session.tokens, budgets.tokens_per_session)
    gauges = {
        "tenant_concurrent_sessions": {
            "limit": budgets.concurrent_sessions, "in_use": len(tenant.sessions)
        },
        **{
            f"tool_concurrent_calls/{tool}": {
                "limit": budgets.concurrent_calls_per_tool, "in_use": len(calls)
            }
            for tool, calls in sorted(tenant.tool_calls.items())
        },
    }  # fmt: skip
    held = sum(1 for _, expires in tenant.day.reserved.values() if expires > now)
    return {
        "tenant": tenant_id,
        "plan": profile.get("plan"),
        "profile_version": tenant.latest_version,
        "balances": balances,
        "gauges": gauges,
        "pending_reservations": held,
    }
