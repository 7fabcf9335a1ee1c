"""Replay of one session: its timeline and its state at any instant. Pure: no I/O.

Input is the session's tenant log (the tenant's records, in log order, up to
the session's last record; read from Kafka or from an evidence export):
pairs of (where the record was, the decoded event). They go through the
governor's own fold (projections/governor/fold.py), the one the live worker
runs, so the replay shows exactly what was decided and derived, in the order
it happened: each record of the session, then what its step derived (a
decision, a budget warning, a suspension) right after it.

`replay(records, tenant, session, config, at)` gives the timeline (one row
per record of the session and per event derived for it: time, event type,
what it decided or did, the session's spend after it) and the session's state
after the last record of the session with occurred_at <= `at` (default: all
of them): lifecycle status, turns, tokens and cost, tool decisions, budget
verdicts and memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from events.models import (
    AdmissionDecided,
    ApprovalRecorded,
    BudgetExceeded,
    BudgetWarning,
    CheckpointCreated,
    ContextCompactionRequested,
    DuplicateSuppressed,
    Event,
    InvalidTransitionRejected,
    PolicyDecided,
    SessionEvent,
    TaskSummaryUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from projections.governor.config import GovernorConfig
from projections.governor.fold import policy_chain_ok, step
from projections.governor.state import PartitionState, SessionEntry, session_key
from projections.lifecycle import LIFECYCLE_EVENTS, Status, state_to_dict

__all__ = [
    "COLUMNS",
    "Position",
    "Row",
    "SessionReplay",
    "format_time",
    "render_state",
    "render_table",
    "replay",
]

COLUMNS = ("time", "event", "decision", "budget after")


class Position(Protocol):
    """Where a record was read: events.evidence.LogRecord has these."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


Located = tuple[Position, Event]


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_spend(tokens: int, cost_usd_micros: int) -> str:
    return f"{tokens:,} tok / ${cost_usd_micros / 1_000_000:.6f}"


def _decision_text(event: Event, status: str) -> str:
    """What the record decided or did, in a few words."""
    if isinstance(event, PolicyDecided):
        return f"{event.decision} {event.reason_code} {event.tool}.{event.action}"
    if isinstance(event, BudgetWarning):
        pct = event.used * 100 // event.limit if event.limit else event.threshold_pct
        return f"{event.scope} {event.threshold_pct}% (used {event.used:,}/{event.limit:,}, {pct}%)"
    if isinstance(event, BudgetExceeded):
        fallback = f" to {event.fallback_model}" if event.fallback_model else ""
        return f"{event.scope} exceeded {event.used:,}/{event.limit:,} -> {event.action}{fallback}"
    if isinstance(event, InvalidTransitionRejected):
        return f"{event.attempted} from {event.from_state}: {event.reason}"
    if isinstance(event, TurnCompleted):
        return f"{event.outcome} {event.model}"
    if isinstance(event, ToolCallProposed):
        return f"proposed {event.tool}.{event.action} ({event.risk_level} risk) -> {status}"
    if isinstance(event, ApprovalRecorded):
        verdict = "granted" if event.granted else "refused"
        return f"{verdict} by {event.approver} ({event.operation_key}) -> {status}"
    if isinstance(event, ToolCallCompleted):
        return f"{event.status} ({event.operation_key}) -> {status}"
    if isinstance(event, AdmissionDecided):
        model = f" {event.model}" if event.model else ""
        return f"{event.request_kind} {event.decision} {event.reason_code}{model}"
    if isinstance(event, DuplicateSuppressed):
        return (
            f"attempt {event.duplicate_attempt} suppressed "
            f"(original attempt {event.original_attempt})"
        )
    if isinstance(event, ContextCompactionRequested):
        return f"turn memory {event.turn_tokens:,} tok >= {event.threshold:,}"
    if isinstance(event, TaskSummaryUpdated):
        objective = event.objective if len(event.objective) <= 40 else event.objective[:39] + "…"
        return f"objective {objective!r} -> {status}"
    if isinstance(event, CheckpointCreated):
        return f"checkpoint {event.artifact_ref} -> {status}"
    if type(event).__name__ in LIFECYCLE_EVENTS:  # started, suspended, resumed, closed, ...
        reason = getattr(event, "reason", None)
        return f"-> {status}" + (f" ({reason})" if reason else "")
    return ""


@dataclass(frozen=True)
class Row:
    """One line of the timeline."""

    time: str
    event: str
    decision: str
    budget_after: str
    topic: str
    partition: int
    offset: int
    event_id: str
    status_after: str | None
    tokens_after: int
    cost_usd_micros_after: int
    occurred_at: datetime

    def cells(self) -> tuple[str, str, str, str]:
        return (self.time, self.event, self.decision, self.budget_after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "event": self.event,
            "decision": self.decision,
            "budget_after": self.budget_after,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.event_id,
            "status_after": self.status_after,
            "tokens_after": self.tokens_after,
            "cost_usd_micros_after": self.cost_usd_micros_after,
        }


def _decision_dict(decided: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": format_time(datetime.fromisoformat(decided["occurred_at"])),
        **{k: decided[k] for k in (
            "operation_key", "tool", "action", "decision", "reason_code", "rule_id",
            "policy_version",
        )},
    }  # fmt: skip


@dataclass
class _Tally:
    """What the timeline counts of the session's records as the fold takes them."""

    records: int = 0
    turns: int = 0
    retries: int = 0
    proposals: int = 0
    rejections: int = 0
    last_decision: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    exceeded: list[dict[str, Any]] = field(default_factory=list)


def _state(
    session: SessionEntry | None, tally: _Tally, total: int, tenant: str, sid: str,
    at: datetime | None,
) -> dict[str, Any]:  # fmt: skip
    """The session's state as a JSON-ready dict (the fold's entry plus the tally)."""
    lifecycle = session.lifecycle if session is not None else None
    status = str(lifecycle.status) if lifecycle is not None else None
    spent_in, spent_out, cost = session.spent if session is not None else (0, 0, 0)
    counts = {"allow": 0, "deny": 0, "require_approval": 0}
    for decided in (session.decisions if session is not None else {}).values():
        counts[decided["decision"]] = counts.get(decided["decision"], 0) + 1
    exceeded = tally.exceeded or []
    described = state_to_dict(lifecycle) if lifecycle is not None else None
    memory = None
    if session is not None and (session.turns or session.policy or session.task.objective
                                or session.task.checkpoints):  # fmt: skip
        memory = {
            "turns": [t.to_json() for t in session.turns],
            "turn_tokens": session.turn_tokens,
            "task": session.task.to_json(),
            "policy": [r.to_json() for r in session.policy],
            "policy_chain_ok": policy_chain_ok(session),
            "compaction": session.compaction,
        }
    return {
        "session_id": sid,
        "tenant_id": tenant,
        "at": format_time(at) if at is not None else None,
        "records": tally.records,
        "records_total": total,
        "last_event_at": format_time(lifecycle.last_event_at) if lifecycle else None,
        "status": status,
        "quarantined": status == Status.QUARANTINED,
        "suspended": status == Status.SUSPENDED,
        "quarantine_reason": lifecycle.quarantine_reason if lifecycle else None,
        "tier": session.tier if session is not None else None,
        "plan": session.plan if session is not None else None,
        "turns": tally.turns,
        "retries": tally.retries,
        "tokens": {"input": spent_in, "output": spent_out, "total": spent_in + spent_out},
        "cost_usd_micros": cost,
        "tools": {
            "proposed": tally.proposals,
            "decisions": counts,
            "last_decision": tally.last_decision,
            "pending": sorted(lifecycle.pending_operations) if lifecycle else [],
        },
        "budget": {
            "warnings": list(tally.warnings or []),
            "exceeded": list(exceeded),
            "action": (session.verdict or {}).get("action") if session is not None else None,
        },
        "invalid_transitions": tally.rejections,
        "lifecycle": described,
        "memory": memory,
    }


@dataclass(frozen=True)
class SessionReplay:
    rows: list[Row]
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"timeline": [r.to_dict() for r in self.rows], "state": self.state}


def replay(
    records: Iterable[Located],
    tenant: str,
    session_id: str,
    config: GovernorConfig,
    at: datetime | None = None,
) -> SessionReplay:
    """Fold the tenant log with the governor's fold; the session's timeline and its
    state at `at` (default: after the last record)."""
    if at is not None and at.tzinfo is None:
        raise ValueError("at must carry a timezone")
    state = PartitionState()
    key = session_key(tenant, session_id)
    rows: list[Row] = []
    tally, cut = _Tally(), None
    total = 0
    for pos, event in records:
        mine = isinstance(event, SessionEvent) and (event.tenant_id, event.session_id) == (
            tenant, session_id,
        )  # fmt: skip
        if mine and at is not None and cut is None and event.occurred_at > at:
            # The state at `at`: a copy, the fold goes on for the rest of the timeline.
            session = state.peek(key)
            frozen = (
                SessionEntry.from_json(session.to_json())
                if isinstance(session, SessionEntry)
                else None
            )
            copied = _Tally(**vars(tally))
            copied.warnings, copied.exceeded = list(tally.warnings), list(tally.exceeded)
            cut = _state(frozen, copied, 0, tenant, session_id, at)
        folded = step(state, event, pos.timestamp_ms, config)
        if not mine:
            continue
        session = state.peek(key)
        assert isinstance(session, SessionEntry)  # the step just wrote it
        status = session.status
        spent_in, spent_out, cost = session.spent
        produced = [(pos.topic, pos.partition, pos.offset, event)]
        produced += [("derived", pos.partition, pos.offset, d) for d in folded.derived]
        total += len(produced)
        if cut is None:
            tally.records += len(produced)
        for topic, partition, offset, item in produced:
            if cut is None:
                _count(tally, item, folded.derived)
            decision = _decision_text(item, status)
            if item is event and not folded.applied:
                decision += f"  [retry (attempt {event.attempt}), not applied]"  # type: ignore[attr-defined]
            rows.append(
                Row(
                    time=format_time(item.occurred_at),  # type: ignore[attr-defined]
                    event=type(item).__name__,
                    decision=decision,
                    budget_after=format_spend(spent_in + spent_out, cost),
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    event_id=item.event_id,  # type: ignore[attr-defined]
                    status_after=status,
                    tokens_after=spent_in + spent_out,
                    cost_usd_micros_after=cost,
                    occurred_at=item.occurred_at,  # type: ignore[attr-defined]
                )
            )
    final = state.peek(key)
    if cut is None:
        cut = _state(
            final if isinstance(final, SessionEntry) else None, tally, 0, tenant, session_id, at
        )
    cut["records_total"] = total
    return SessionReplay(rows, cut)


def _count(tally: _Tally, item: Event, derived: Sequence[Event]) -> None:
    if isinstance(item, TurnCompleted) and not any(
        isinstance(d, DuplicateSuppressed) for d in derived
    ):
        tally.turns += 1
    elif isinstance(item, DuplicateSuppressed):
        tally.retries += 1
    elif isinstance(item, ToolCallProposed):
        tally.proposals += 1
    elif isinstance(item, InvalidTransitionRejected):
        tally.rejections += 1
    elif isinstance(item, PolicyDecided):
        tally.last_decision = _decision_dict(item.model_dump(mode="json"))
    elif isinstance(item, BudgetWarning):
        warning = {"scope": item.scope, "threshold_pct": item.threshold_pct}
        tally.warnings.append({**warning, "used": item.used, "limit": item.limit})
    elif isinstance(item, BudgetExceeded):
        exceeded = {"scope": item.scope, "action": item.action, "used": item.used}
        limits = {"limit": item.limit, "fallback_model": item.fallback_model}
        tally.exceeded.append({**exceeded, **limits})


# --- text ----------------------------------------------------------------------------


def render_table(rows: Sequence[Row], *, at: datetime | None = None) -> str:
    """Aligned columns; with `at`, a marker line where the instant falls."""
    header = COLUMNS
    body = [r.cells() for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in body)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    marker = f"---- state at {format_time(at)} ----" if at is not None else None
    for row, cells in zip(rows, body, strict=True):
        if marker is not None and at is not None and row.occurred_at > at:
            out.append(marker)
            marker = None
        out.append(line(cells))
    if marker is not None and rows:
        out.append(marker)
    return "\n".join(out)


def _memory_lines(memory: dict[str, Any] | None) -> list[str]:
    if memory is None:
        return ["  memory        (nothing yet)"]
    task = memory.get("task") or {}
    policy = memory.get("policy") or []
    chain = memory.get("policy_chain_ok")
    compaction = memory.get("compaction")
    lines = [
        f"  memory        turns {len(memory.get('turns') or [])} "
        f"({memory.get('turn_tokens', 0):,} tok), "
        f"policy records {len(policy)} (chain {'ok' if chain is None else f'broken at {chain}'})"
        + (", compaction requested" if compaction else ""),
    ]
    if task.get("objective") or task.get("decisions") or task.get("checkpoints"):
        lines.append(
            f"                objective {task.get('objective')!r}, "
            f"{len(task.get('decisions') or [])} decisions, "
            f"{len(task.get('facts') or [])} facts, "
            f"{len(task.get('checkpoints') or [])} checkpoints"
        )
    return lines


def render_state(state: dict[str, Any]) -> str:
    """The state dict as a few labelled lines."""
    when = state["at"] or "after the last event"
    tools = state["tools"]
    counts = tools["decisions"]
    last = tools["last_decision"]
    flags = [name for name in ("quarantined", "suspended") if state[name]]
    tokens = state["tokens"]
    budget = state["budget"]
    lines = [
        f"state of session {state['session_id']} at {when} "
        f"({state['records']} of {state['records_total']} records)",
        f"  status        {state['status'] or 'not started'}"
        + (f" [{', '.join(flags)}]" if flags else "")
        + (f" ({state['quarantine_reason']})" if state["quarantine_reason"] else ""),
        f"  turns         {state['turns']} ({state['retries']} retries not counted)",
        f"  spent         {tokens['total']:,} tok (in {tokens['input']:,}, "
        f"out {tokens['output']:,}), ${state['cost_usd_micros'] / 1_000_000:.6f}",
        f"  tools         {tools['proposed']} proposed; allow {counts['allow']}, "
        f"deny {counts['deny']}, approval {counts['require_approval']}"
        + (f"; pending {', '.join(tools['pending'])}" if tools["pending"] else ""),
    ]
    if last is not None:
        lines.append(
            f"  last decision {last['decision']} {last['reason_code']} "
            f"{last['tool']}.{last['action']} at {last['at']}"
        )
    warned = ", ".join(f"{w['scope']} {w['threshold_pct']}%" for w in budget["warnings"])
    exceeded = ", ".join(f"{e['scope']} -> {e['action']}" for e in budget["exceeded"])
    lines.append(f"  budget        warnings: {warned or 'none'}; exceeded: {exceeded or 'none'}")
    lines.append(f"  rejections    {state['invalid_transitions']} invalid transitions")
    lines.extend(_memory_lines(state["memory"]))
    return "\n".join(lines)
