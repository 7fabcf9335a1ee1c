"""Policy backtest (projections/backtest.py): the governor's fold again under a new policy,
compared with the decisions the log recorded. Crafted known answers."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from events.models import PolicyDecided, TenantBudgets
from govstream.settings import Settings, governor_config
from projections.backtest import Logged, backtest
from projections.governor.fold import fold_log
from projections.policy import PolicyDocument
from tests.factories import T0, session_started, tenant_profile, tool_proposal, turn

CONFIG = governor_config(Settings(home="/nonexistent"))


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def logged(event: Any) -> Logged:
    return Logged(event, int(event.occurred_at.timestamp() * 1000))


def _log() -> list[Logged]:
    """Two tenants on team: a shell call (denied on team), a web search (allowed), and a
    fetch to a host only the tenant's own allowlist has."""
    events: list[Any] = [
        tenant_profile(tenant_id="t-1", occurred_at=at(-1), budgets=TenantBudgets()),
        tenant_profile(tenant_id="t-2", occurred_at=at(-1), egress_allowlist=["api.partner.io"]),
    ]
    for tenant in ("t-1", "t-2"):
        sid = f"{tenant}-s"
        events += [
            session_started(event_id=str(uuid.uuid4()), tenant_id=tenant, session_id=sid,
                            occurred_at=at(0)),
            turn(event_id=str(uuid.uuid4()), tenant_id=tenant, session_id=sid, occurred_at=at(1)),
        ]  # fmt: skip
        for n, (tool, host, risk) in enumerate(
            [("shell", None, "high"), ("web_search", "good.com", "low"),
             ("http_request", "api.partner.io", "low")]
        ):  # fmt: skip
            events.append(
                tool_proposal(
                    event_id=str(uuid.uuid4()), tenant_id=tenant, session_id=sid,
                    idempotency_key=f"{sid}/p{n}", operation_key=f"{sid}/op{n}", tool=tool,
                    action="run", destination_host=host, risk_level=risk,
                    method="GET", occurred_at=at(2 + n),
                )
            )  # fmt: skip
    return [logged(e) for e in events]


def _recorded(records: list[Logged]) -> dict[tuple[str, str], PolicyDecided]:
    first: dict[tuple[str, str], PolicyDecided] = {}
    for _, _, folded in fold_log(((r, r.event) for r in records), CONFIG):
        for event in folded.derived:
            if isinstance(event, PolicyDecided):
                first.setdefault((event.tenant_id, event.operation_key), event)
    return first


def _with_shell_on_team(policy: PolicyDocument) -> PolicyDocument:
    data = policy.model_dump()
    data["version"] = "2026-12-01"
    data["plans"]["team"]["tools"]["shell"] = "high"
    return PolicyDocument.model_validate(data)


def test_the_same_policy_changes_nothing() -> None:
    records = _log()
    result = backtest([records], _recorded(records), CONFIG)
    assert (result.re_evaluated, result.undecided, result.changes) == (6, 0, ())


def test_a_new_policy_lists_exactly_the_changed_decisions() -> None:
    records = _log()
    config = replace(CONFIG, policy=_with_shell_on_team(CONFIG.policy))
    result = backtest([records], _recorded(records), config)
    assert result.policy_version == "2026-12-01"
    changed = [
        (c.tenant_id, c.operation_key, c.old_reason_code, c.new_decision) for c in result.changes
    ]
    assert changed == [
        ("t-1", "t-1-s/op0", "TOOL_NOT_PERMITTED", "require_approval"),
        ("t-2", "t-2-s/op0", "TOOL_NOT_PERMITTED", "require_approval"),
    ]
    assert result.to_dict()["changed"] == 2


def test_tenant_and_since_filters_and_undecided_operations() -> None:
    records = _log()
    config = replace(CONFIG, policy=_with_shell_on_team(CONFIG.policy))
    only_t2 = backtest([records], _recorded(records), config, tenant="t-2")
    assert [c.tenant_id for c in only_t2.changes] == ["t-2"]
    late = int(at(3).timestamp() * 1000)
    assert backtest([records], _recorded(records), config, since_ms=late).changes == ()
    # Operations the log has no decision for yet are counted, not compared.
    partial = backtest([records], {}, config)
    assert (partial.re_evaluated, partial.undecided) == (0, 6)
