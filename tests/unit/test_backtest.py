"""Policy backtest core: known proposals, a known new policy, the exact changes.

The recorded decisions are not hand-written: a miniature stream runs the
session processor's own pure functions (`process`, `process_signal`) over the
inputs in order, with the packaged policy, and logs what they emit the way
the worker does (sessions records and derived records with timestamps and
offsets). The backtest must then find no change against the same policy, and
exactly the known changes against the new one.
"""

from __future__ import annotations

import copy
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.models import (
    BudgetExceeded,
    PolicyDecided,
    SessionEvent,
    SessionResumed,
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallCompleted,
    ToolCallProposed,
)
from govstream.cli import main
from govstream.settings import Settings
from projections.backtest import Logged, backtest
from projections.policy import PolicyDocument, load_policy, parse_policy
from streams.processors import Signing, process, process_signal
from tests.factories import T0, session_started, tenant_profile, turn

SETTINGS = Settings()
SIGNING = Signing.from_settings(SETTINGS)
BASE_PATH = SETTINGS.resolved_policy_path


def base_policy() -> PolicyDocument:
    return load_policy(BASE_PATH)


def variant(version: str, edit: Any) -> PolicyDocument:
    data = yaml.safe_load(BASE_PATH.read_text())
    data = copy.deepcopy(data)
    data["version"] = version
    edit(data)
    return parse_policy(data, "variant")


def no_free_search(data: dict[str, Any]) -> None:
    data["plans"]["free"]["tools"]["web_search"] = "deny"


class Stream:
    """A miniature worker: producer records in, the processor's outputs logged."""

    def __init__(self, policy: PolicyDocument) -> None:
        self.policy = policy
        self.entries: dict[str, Any] = {}
        self.sessions: list[Logged] = []
        self.derived: list[Logged] = []
        self.profiles: list[Logged] = []
        self.clock = 0

    def _tick(self) -> int:
        self.clock += 1000
        return self.clock

    def _profile(self, tenant: str, ts: int) -> TenantProfileUpdated | None:
        found = [r for r in self.profiles if r.event.tenant_id == tenant and r.timestamp_ms <= ts]
        return found[-1].event if found else None  # type: ignore[return-value]

    def _log(self, events: list[SessionEvent], ts: int) -> None:
        for event in events:
            self.derived.append(Logged(event, ts, len(self.derived)))

    def profile(self, profile: TenantProfileUpdated) -> None:
        self.profiles.append(Logged(profile, self._tick(), len(self.profiles)))

    def send(self, *events: SessionEvent, decide: bool = True) -> None:
        for event in events:
            ts = self._tick()
            self.sessions.append(Logged(event, ts, len(self.sessions)))
            entry, out = process(
                self.entries.get(event.session_id),
                event,
                policy=self.policy,
                signing=SIGNING,
                now=event.occurred_at,
                profile=self._profile(event.tenant_id, ts),
            )
            self.entries[event.session_id] = entry
            if decide:
                self._log(out, ts)

    def signal(self, signal: SessionEvent) -> None:
        ts = self._tick()
        entry, out = process_signal(self.entries.get(signal.session_id), signal, dedupe_window=1000)
        self.entries[signal.session_id] = entry
        self._log(out, ts)

    def run(self, policy: PolicyDocument, **filters: Any) -> Any:
        return backtest(
            policy,
            sessions=self.sessions,
            derived=self.derived,
            profiles=self.profiles,
            **filters,
        )


def _env(tenant: str, session: str, seconds: float, **fields: Any) -> dict[str, Any]:
    event_id = fields.pop("event_id", str(uuid.uuid4()))
    return {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(seconds=seconds),
        "tenant_id": tenant,
        "session_id": session,
        "idempotency_key": fields.pop("idempotency_key", f"key-{event_id}"),
        **fields,
    }


def search(tenant: str, session: str, seconds: float, op: str, **fields: Any) -> ToolCallProposed:
    base = {"tool": "web_search", "action": "query", "operation_key": op,
            "destination_host": "api.good.com", "method": "GET", "payload_bytes": 200,
            "risk_level": "low"}  # fmt: skip
    base.update(fields)
    return ToolCallProposed(**_env(tenant, session, seconds, **base))


def start(tenant: str, session: str, plan: str) -> SessionEvent:
    return session_started(
        tenant_id=tenant, session_id=session, plan=plan, occurred_at=T0, event_id=str(uuid.uuid4())
    )


def budget(tenant: str, session: str, seconds: float, action: str) -> BudgetExceeded:
    return BudgetExceeded(
        **_env(
            tenant,
            session,
            seconds,
            scope="session",
            scope_key=session,
            limit=10,
            used=11,
            action=action,
        )
    )


@pytest.fixture
def fleet() -> Stream:
    """Three free-plan searches (one retried), a team tenant, a suspended session."""
    stream = Stream(base_policy())
    stream.profile(tenant_profile(tenant_id="t-team", plan="team"))
    for n in range(3):
        sid = f"s-free-{n}"
        stream.send(start("t-free", sid, "free"), search("t-free", sid, 1, f"{sid}/op-1"))
    # a retry of s-free-0's proposal (same idempotency key) and a second proposal
    # for the same operation: neither is decided again
    first = stream.sessions[1].event
    retry = first.model_copy(update={"event_id": str(uuid.uuid4()), "attempt": 2})
    again = search("t-free", "s-free-0", 3, "s-free-0/op-1")
    stream.send(retry, again)
    # an http_request on the free plan: the new policy leaves it alone
    stream.send(search("t-free", "s-free-1", 4, "s-free-1/op-2", tool="http_request",
                       action="fetch"))  # fmt: skip
    # a team tenant (plan from its profile, the session says free): unchanged
    stream.send(start("t-team", "s-team", "free"), search("t-team", "s-team", 1, "s-team/op-1"))
    # a suspended free session: denied before, still denied for the same reason
    stream.send(
        start("t-free", "s-susp", "free"),
        turn(tenant_id="t-free", session_id="s-susp", occurred_at=T0 + timedelta(seconds=0.5)),
        SessionSuspended(**_env("t-free", "s-susp", 1, reason="operator")),
        search("t-free", "s-susp", 2, "s-susp/op-1"),
    )
    return stream


def test_the_same_policy_changes_nothing(fleet: Stream) -> None:
    result = fleet.run(base_policy())
    assert (result.re_evaluated, result.undecided, result.changes) == (6, 0, ())


def test_denying_search_on_free_changes_exactly_the_free_searches(fleet: Stream) -> None:
    result = fleet.run(variant("2026-12-01", no_free_search))
    assert result.policy_version == "2026-12-01"
    assert result.re_evaluated == 6
    assert [
        (c.session_id, c.operation_key, f"{c.tool}.{c.action}", c.old_decision,
         c.old_reason_code, c.new_decision, c.new_reason_code, c.new_rule_id)
        for c in result.changes
    ] == [
        (f"s-free-{n}", f"s-free-{n}/op-1", "web_search.query", "allow", "ALLOWED", "deny",
         "TOOL_NOT_PERMITTED", "plan.free.tool.web_search")
        for n in range(3)
    ]  # fmt: skip
    assert {c.old_policy_version for c in result.changes} == {"2026-11-01"}
    assert result.changes[0].to_dict()["occurred_at"] == (T0 + timedelta(seconds=1)).isoformat()


def test_filters_by_tenant_and_log_time(fleet: Stream) -> None:
    new = variant("2026-12-01", no_free_search)
    assert fleet.run(new, tenant="t-team").re_evaluated == 1
    assert fleet.run(new, tenant="t-team").changes == ()
    # s-free-0's proposal is the 2nd record (ts 3000): from 4000 on, two remain
    later = fleet.run(new, since_ms=4000)
    assert [c.session_id for c in later.changes] == ["s-free-1", "s-free-2"]


def test_a_proposal_without_a_recorded_decision_is_not_compared() -> None:
    stream = Stream(base_policy())
    stream.send(start("t-free", "s-1", "free"))
    stream.send(search("t-free", "s-1", 1, "op-1"), decide=False)
    result = stream.run(variant("2026-12-01", no_free_search))
    assert (result.re_evaluated, result.undecided, result.changes) == (0, 1, ())


def test_the_profile_in_force_at_log_time_gives_the_plan() -> None:
    stream = Stream(base_policy())
    stream.profile(tenant_profile(tenant_id="t-up", plan="free"))
    stream.send(start("t-up", "s-1", "free"), search("t-up", "s-1", 1, "op-before"))
    stream.profile(tenant_profile(tenant_id="t-up", plan="team"))  # the upgrade
    stream.send(search("t-up", "s-1", 5, "op-after"))
    result = stream.run(variant("2026-12-01", no_free_search))
    assert result.re_evaluated == 2
    assert [c.operation_key for c in result.changes] == ["op-before"]


def test_tenant_tool_permissions_and_allowlist_come_from_the_profile() -> None:
    stream = Stream(base_policy())
    stream.profile(
        tenant_profile(
            tenant_id="t-p",
            plan="free",
            egress_allowlist=["search.partner.example"],
            tool_permissions={"web_search": "allow"},
        )
    )
    stream.send(
        start("t-p", "s-1", "free"),
        search("t-p", "s-1", 1, "op-1", destination_host="search.partner.example"),
    )
    # the tenant's grant lifts the plan rule: the new policy changes nothing
    result = stream.run(variant("2026-12-01", no_free_search))
    assert (result.re_evaluated, result.changes) == (1, ())


def test_budget_gates_apply_in_log_order() -> None:
    """suspend: denied BUDGET_EXCEEDED, then (budget rule off) SESSION_SUSPENDED;
    degrade: denied, then allowed; a proposal decided before the signal stays allowed;
    a resume lifts the gate."""
    stream = Stream(base_policy())
    for sid in ("s-suspend", "s-degrade", "s-resume"):
        stream.send(start("t-b", sid, "team"), turn(tenant_id="t-b", session_id=sid))
        stream.send(search("t-b", sid, 1, f"{sid}/early"))
    stream.signal(budget("t-b", "s-suspend", 0.5, "suspend"))
    stream.signal(budget("t-b", "s-degrade", 0.5, "degrade"))
    stream.signal(budget("t-b", "s-resume", 0.5, "suspend"))
    stream.send(SessionResumed(**_env("t-b", "s-resume", 3, reason="operator")))
    for sid in ("s-suspend", "s-degrade", "s-resume"):
        stream.send(search("t-b", sid, 4, f"{sid}/late"))

    same = stream.run(base_policy())
    assert (same.re_evaluated, same.changes) == (6, ())

    def no_budget_rule(data: dict[str, Any]) -> None:
        data["session"]["deny_when_budget_exceeded"] = False

    result = stream.run(variant("2026-12-02", no_budget_rule))
    assert [
        (c.operation_key, c.old_decision, c.old_reason_code, c.new_decision, c.new_reason_code)
        for c in result.changes
    ] == [
        ("s-degrade/late", "deny", "BUDGET_EXCEEDED", "allow", "ALLOWED"),
        ("s-suspend/late", "deny", "BUDGET_EXCEEDED", "deny", "SESSION_SUSPENDED"),
    ]


def test_quarantine_from_invalid_transitions_is_reconstructed() -> None:
    stream = Stream(base_policy())
    stream.send(start("t-free", "s-q", "free"), search("t-free", "s-q", 1, "op-0"))
    # three completions of operations that are not pending quarantine the session
    stream.send(*(_completion("s-q", n) for n in range(1, 4)))
    stream.send(search("t-free", "s-q", 9, "op-late"))
    recorded = {
        e.operation_key: e.reason_code
        for e in (r.event for r in stream.derived)
        if isinstance(e, PolicyDecided)
    }
    assert recorded == {"op-0": "ALLOWED", "op-late": "QUARANTINED"}
    result = stream.run(variant("2026-12-01", no_free_search))
    # op-0 changes; op-late is still QUARANTINED (the session rule comes first)
    assert result.re_evaluated == 2
    assert [c.operation_key for c in result.changes] == ["op-0"]


def _completion(session: str, n: int) -> SessionEvent:
    return ToolCallCompleted(
        **_env(
            "t-free", session, 1 + n, operation_key=f"unknown-{n}", status="succeeded", latency_ms=1
        )
    )


def test_a_bad_policy_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "new.yaml"
    bad.write_text(BASE_PATH.read_text().replace("tenant_override: human", "tenant_override: x"))
    assert main(["policy", "backtest", "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "approval.tenant_override" in err and str(bad) in err
    assert main(["policy", "backtest", "--policy", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
