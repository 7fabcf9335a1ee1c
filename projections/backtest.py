"""Policy backtest: re-run historical tool proposals against a new policy version. Pure.

`backtest(policy, sessions=..., derived=..., profiles=...)` takes what the log
holds (records already decoded, each with its record timestamp and offset)
and answers "which decisions would change under this document?". No I/O and
no clock: the CLI (govstream/commands/policy.py) reads Kafka and calls this.

What is re-evaluated. The session processor (streams/processors.py `process`)
decides the first applied ToolCallProposed per operation_key of a session
(a retry with an idempotency key already applied is suppressed, not
decided). The same proposals are re-evaluated here, with
`evaluate(policy, proposal, context, now=proposal.occurred_at)`, and compared
with the recorded decision: the first PolicyDecided with that (session,
operation_key) in the derived topic (the one the processor kept, whether it
decided itself or the admission API did first). A proposal with no recorded
decision (the processors have not caught up, or the record is gone) is
counted as `undecided` and not compared. A change is any difference in
decision or reason_code.

How the evaluation context is rebuilt, mirroring `process`, `process_signal`
and `policy_context`:

- Session status before the proposal: the session's events from the sessions
  topic in log order, deduplicated by idempotency_key, folded with
  projections.lifecycle (rejected events record their rejection, so repeated
  invalid transitions quarantine as they did live). A budget suspension the
  processor derived (a SessionSuspended with idempotency key
  "budget-suspend/...", in the derived topic) is folded in too.
- budget_exceeded: a BudgetExceeded with action suspend or degrade applied to
  the session and not lifted by a later applied SessionResumed.
- plan: the tenant's profile at log time (the newest TenantProfileUpdated
  whose record timestamp is <= the proposal's record timestamp), else the
  plan of the session's SessionStarted, else "free"; the tenant's egress
  allowlist and tool permissions come from that profile.
- environment: the proposal's.

Where a budget signal or suspension goes in the session's order: signals
reach the processor through another topic, so the sessions topic alone does
not say when they were applied. Both the signal and every decision are
written by the session's owner to the derived topic, keyed by session_id (one
partition), so for a proposal with a recorded decision the derived offsets
are exact: the signal was applied before the proposal iff it precedes the
proposal's PolicyDecided. For other events (turns, resumes) the record
timestamps decide: a signal is applied before a sessions-topic event whose
record timestamp is later than the signal's (ties: the session event first).

Limits (what this cannot reproduce):

- A decision the admission API gave before the proposal reached the stream
  was evaluated with the API's view at that moment; it is compared like any
  other, so a context that changed in between can show up as a change.
- The timestamp order of signals against turns and resumes is an
  approximation (processing happens after a record's timestamp).
- The processor forgets idempotency keys beyond its dedupe window (1000 per
  session); here every key is remembered, which only matters for sessions
  longer than that with very late retries.
- Profiles removed from the compacted tenants topic by compaction are gone:
  a proposal older than the oldest surviving profile version falls back to
  the session's plan, as it does on a worker that rebuilt its profiles.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from events.models import (
    BudgetExceeded,
    Event,
    PolicyDecided,
    SessionEvent,
    SessionResumed,
    SessionStarted,
    SessionSuspended,
    TenantProfileUpdated,
    ToolCallProposed,
)
from projections.lifecycle import LIFECYCLE_EVENTS, Rejected, SessionState, transition
from projections.policy import PolicyContext, PolicyDocument, evaluate

__all__ = ["DEFAULT_PLAN", "BacktestResult", "Change", "Logged", "backtest"]

DEFAULT_PLAN = "free"  # streams.processors.DEFAULT_PLAN (not imported: that module needs Faust)
BUDGET_SUSPEND_PREFIX = "budget-suspend/"  # idempotency keys of budget suspensions
GATING_ACTIONS = ("suspend", "degrade")


@dataclass(frozen=True, slots=True)
class Logged:
    """One decoded record: the event, its record timestamp and its offset in its partition."""

    event: Event
    timestamp_ms: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One decision that the new policy would make differently."""

    occurred_at: datetime
    tenant_id: str
    session_id: str
    operation_key: str
    tool: str
    action: str
    old_decision: str
    old_reason_code: str
    old_policy_version: str
    new_decision: str
    new_reason_code: str
    new_rule_id: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class BacktestResult:
    policy_version: str
    re_evaluated: int  # proposals evaluated and compared with a recorded decision
    undecided: int  # proposals without a recorded decision (evaluated, not compared)
    changes: tuple[Change, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "re_evaluated": self.re_evaluated,
            "changed": len(self.changes),
            "undecided": self.undecided,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass
class _Session:
    """The fold of one session: what the processor's table entry held."""

    state: SessionState | None = None
    plan: str | None = None
    budget: bool = False  # a suspend/degrade BudgetExceeded is in force
    applied: set[str] | None = None
    decided: set[str] | None = None  # operation keys already decided

    def __post_init__(self) -> None:
        self.applied = set()
        self.decided = set()


def _profile_at(
    versions: dict[str, list[tuple[int, TenantProfileUpdated]]], tenant: str, ts_ms: int
) -> TenantProfileUpdated | None:
    found = versions.get(tenant)
    if not found:
        return None
    index = bisect.bisect_right(found, ts_ms, key=lambda v: v[0])
    return found[index - 1][1] if index else None


def _context(
    session: _Session, proposal: ToolCallProposed, profile: TenantProfileUpdated | None
) -> PolicyContext:
    status = str(session.state.status) if session.state is not None else "none"
    plan = (profile.plan if profile is not None else None) or session.plan or DEFAULT_PLAN
    return PolicyContext(
        plan=plan,
        environment=proposal.environment,
        session_status=status,
        budget_exceeded=session.budget,
        tenant_egress_allowlist=tuple(profile.egress_allowlist) if profile else (),
        tenant_tool_permissions=dict(profile.tool_permissions) if profile else {},
    )


def _is_signal(event: Event) -> bool:
    """A budget gate the processor applied to a session (derived topic)."""
    if isinstance(event, BudgetExceeded):
        return event.action in GATING_ACTIONS
    return isinstance(event, SessionSuspended) and event.idempotency_key.startswith(
        BUDGET_SUSPEND_PREFIX
    )


def _apply_signal(session: _Session, signal: Logged) -> None:
    event = signal.event
    if isinstance(event, BudgetExceeded):
        session.budget = True
    elif isinstance(event, SessionSuspended) and session.state is not None:
        result = transition(session.state, event)
        if not isinstance(result, Rejected):  # the processor applied it (it is in the log)
            session.state = result.new_state


def backtest(
    policy: PolicyDocument,
    *,
    sessions: Iterable[Logged],
    derived: Iterable[Logged],
    profiles: Iterable[Logged] = (),
    tenant: str | None = None,
    since_ms: int | None = None,
) -> BacktestResult:
    """Re-evaluate the decided proposals; see the module docstring for the context.

    `sessions`, `derived`, `profiles`: the records of the sessions, derived and
    tenants topics, each partition in offset order (partitions may interleave;
    every topic is keyed so that one session, or one tenant, is one
    partition). `tenant` keeps only that tenant's proposals; `since_ms` only
    proposals whose record timestamp is at or after it (the whole history is
    still folded: a session's start and a tenant's profile may be older).
    """
    versions: dict[str, list[tuple[int, TenantProfileUpdated]]] = defaultdict(list)
    for record in profiles:
        if isinstance(record.event, TenantProfileUpdated):
            versions[record.event.tenant_id].append((record.timestamp_ms, record.event))
    for found in versions.values():
        found.sort(key=lambda v: v[0])  # stable: offset order within a timestamp

    recorded: dict[tuple[str, str], Logged] = {}
    signals: dict[str, list[Logged]] = defaultdict(list)
    seen_signals: set[str] = set()
    for record in derived:
        event = record.event
        if isinstance(event, PolicyDecided):
            recorded.setdefault((event.session_id, event.operation_key), record)
        elif _is_signal(event) and event.event_id not in seen_signals:
            assert isinstance(event, SessionEvent)
            seen_signals.add(event.event_id)
            signals[event.session_id].append(record)
    for pending in signals.values():
        pending.sort(key=lambda r: r.offset)

    by_session: dict[str, list[Logged]] = defaultdict(list)
    for record in sessions:
        event = record.event
        if isinstance(event, SessionEvent) and type(event).__name__ in LIFECYCLE_EVENTS:
            by_session[event.session_id].append(record)

    re_evaluated = undecided = 0
    changes: list[Change] = []
    for session_id, records in by_session.items():
        session = _Session()
        pending = signals.get(session_id, [])
        for record in records:
            event = record.event
            assert isinstance(event, SessionEvent)
            decision_record = (
                recorded.get((session_id, event.operation_key))
                if isinstance(event, ToolCallProposed)
                else None
            )
            # Signals the processor applied before this event.
            while pending and (
                pending[0].offset < decision_record.offset
                if decision_record is not None
                else pending[0].timestamp_ms < record.timestamp_ms
            ):
                _apply_signal(session, pending.pop(0))
            assert session.applied is not None and session.decided is not None
            if event.idempotency_key in session.applied:
                continue  # a duplicate: suppressed, not applied, not decided
            session.applied.add(event.idempotency_key)
            state_before = session.state
            if isinstance(event, ToolCallProposed) and event.operation_key not in session.decided:
                session.decided.add(event.operation_key)
                wanted = (tenant is None or event.tenant_id == tenant) and (
                    since_ms is None or record.timestamp_ms >= since_ms
                )
                if wanted:
                    profile = _profile_at(versions, event.tenant_id, record.timestamp_ms)
                    new = evaluate(
                        policy, event, _context(session, event, profile), event.occurred_at
                    )
                    if decision_record is None:
                        undecided += 1
                    else:
                        re_evaluated += 1
                        old = decision_record.event
                        assert isinstance(old, PolicyDecided)
                        if (old.decision, old.reason_code) != (new.decision, new.reason_code):
                            changes.append(
                                Change(
                                    occurred_at=event.occurred_at,
                                    tenant_id=event.tenant_id,
                                    session_id=session_id,
                                    operation_key=event.operation_key,
                                    tool=event.tool,
                                    action=event.action,
                                    old_decision=old.decision,
                                    old_reason_code=old.reason_code,
                                    old_policy_version=old.policy_version,
                                    new_decision=new.decision,
                                    new_reason_code=new.reason_code,
                                    new_rule_id=new.rule_id,
                                )
                            )
            result = transition(state_before, event)
            session.state = result.new_state
            if (
                isinstance(event, SessionStarted)
                and state_before is None
                and session.state is not None
            ):
                session.plan = event.plan
            if isinstance(event, SessionResumed) and not isinstance(result, Rejected):
                session.budget = False  # the operator's resume lifts a budget gate
    changes.sort(key=lambda c: (c.occurred_at, c.session_id, c.operation_key))
    return BacktestResult(policy.version, re_evaluated, undecided, tuple(changes))
