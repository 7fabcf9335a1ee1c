"""Replay of one session: its timeline and its state at any instant. Pure: no I/O.

Input is the session's records as read from the log (or from an evidence
export): pairs of (where the record was, the decoded SessionEvent). Records
of several topics interleave (producer events on `<prefix>.sessions`, the
processors' facts on `<prefix>.derived`), so they are merged by the events'
own time:

    merge order = (occurred_at, producer before derived, topic, partition, offset)

A derived fact carries the occurred_at of the event that caused it (a
PolicyDecided that of its ToolCallProposed, a BudgetExceeded that of its
TurnCompleted); on such a tie the producer record goes first so the timeline
reads cause -> effect. Otherwise ties fall back to the log position.

`timeline(records)` gives one row per record: time, event type, what it
decided or did, and the session's spend after it. `state_at(records, at)`
folds the records with occurred_at <= at (default: all of them): lifecycle
status (projections.lifecycle), turns, tokens and cost, tool decisions,
budget verdicts, and the memory strata (projections.memory).

Folding follows the processors: a producer event whose idempotency_key was
already applied is a retry and does not move the lifecycle or count again
(for turns the lowest attempt wins, as in ClickHouse); a fact redelivered
with the same event id counts once; a decision is per operation_key.
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
    InvalidTransitionRejected,
    PolicyDecided,
    SessionEvent,
    SessionStarted,
    TaskSummaryUpdated,
    ToolCallCompleted,
    ToolCallProposed,
    TurnCompleted,
)
from events.topics import is_derived_topic
from projections import memory as memory_strata
from projections.lifecycle import (
    LIFECYCLE_EVENTS,
    Applied,
    SessionState,
    Status,
    state_to_dict,
    transition,
)

__all__ = [
    "COLUMNS",
    "Position",
    "Row",
    "SessionReplay",
    "format_time",
    "memory_state",
    "merge",
    "render_state",
    "render_table",
    "replay",
    "state_at",
    "timeline",
]

COLUMNS = ("time", "event", "decision", "budget after")


class Position(Protocol):
    """Where a record was read: events.evidence.LogRecord has these."""

    topic: str
    partition: int
    offset: int


Located = tuple[Position, SessionEvent]


def format_time(at: datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-22T12:00:01.250Z."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_spend(tokens: int, cost_usd_micros: int) -> str:
    return f"{tokens:,} tok ${cost_usd_micros / 1_000_000:.6f}"


def _merge_key(item: Located) -> tuple[Any, ...]:
    pos, event = item
    return (event.occurred_at, is_derived_topic(pos.topic), pos.topic, pos.partition, pos.offset)


def merge(records: Iterable[Located]) -> list[Located]:
    """The records in timeline order (see the module docstring); one session only."""
    items = list(records)
    sessions = {event.session_id for _, event in items}
    if len(sessions) > 1:
        raise ValueError(f"records of {len(sessions)} sessions: {sorted(sessions)[:3]}")
    return sorted(items, key=_merge_key)


# --- the fold ---------------------------------------------------------------------------


@dataclass
class _Fold:
    """The session as seen after some prefix of its merged records."""

    lifecycle: SessionState | None = None
    records: int = 0
    last_event_at: datetime | None = None
    applied_keys: dict[str, int] = field(default_factory=dict)  # idempotency_key -> attempt
    seen_event_ids: set[str] = field(default_factory=set)
    turns: dict[str, tuple[int, TurnCompleted]] = field(default_factory=dict)  # key -> attempt
    retries: int = 0
    proposals: set[str] = field(default_factory=set)
    decisions: dict[str, PolicyDecided] = field(default_factory=dict)  # operation_key -> first
    last_decision: PolicyDecided | None = None
    warnings: list[BudgetWarning] = field(default_factory=list)
    exceeded: list[BudgetExceeded] = field(default_factory=list)
    rejections: int = 0
    started: SessionStarted | None = None

    # what the last apply() did, for the timeline row
    note: str = ""

    def apply(self, pos: Position, event: SessionEvent) -> None:
        self.records += 1
        self.note = ""
        self.last_event_at = (
            event.occurred_at
            if self.last_event_at is None
            else max(self.last_event_at, event.occurred_at)
        )
        redelivered = event.event_id in self.seen_event_ids
        self.seen_event_ids.add(event.event_id)
        derived = is_derived_topic(pos.topic)
        name = type(event).__name__

        if not derived and name in LIFECYCLE_EVENTS:
            self._apply_input(event, redelivered)
        elif derived and name in LIFECYCLE_EVENTS:
            # A fact the processors applied themselves (a budget suspension, the
            # quarantine notice of repeated rejections).
            self._apply_lifecycle(event)
        if redelivered:
            self.note = "redelivered"
            return
        if isinstance(event, PolicyDecided):
            self.decisions.setdefault(event.operation_key, event)
            self.last_decision = event
        elif isinstance(event, BudgetWarning):
            self.warnings.append(event)
        elif isinstance(event, BudgetExceeded):
            self.exceeded.append(event)
        elif isinstance(event, InvalidTransitionRejected):
            self.rejections += 1

    def _apply_input(self, event: SessionEvent, redelivered: bool) -> None:
        key = event.idempotency_key
        first = self.applied_keys.get(key)
        if first is not None:
            if not redelivered:
                self.retries += 1
                self.note = f"retry (attempt {event.attempt}), not applied"
            if isinstance(event, TurnCompleted):
                # first attempt wins: the lowest attempt of the key is the one counted
                counted = self.turns.get(key)
                if counted is not None and event.attempt < counted[0]:
                    self.turns[key] = (event.attempt, event)
            return
        self.applied_keys[key] = event.attempt
        if isinstance(event, SessionStarted) and self.started is None:
            self.started = event
        if isinstance(event, TurnCompleted):
            self.turns[key] = (event.attempt, event)
        if isinstance(event, ToolCallProposed):
            self.proposals.add(event.operation_key)
        self._apply_lifecycle(event)

    def _apply_lifecycle(self, event: SessionEvent) -> None:
        result = transition(self.lifecycle, event)
        if result.new_state is not None:
            self.lifecycle = result.new_state
        if not isinstance(result, Applied):
            self.note = f"rejected: {result.reason_code}"
            if result.quarantined:
                self.note += ", session quarantined"

    # -- views -----------------------------------------------------------------------

    @property
    def status(self) -> str | None:
        return str(self.lifecycle.status) if self.lifecycle is not None else None

    @property
    def tokens(self) -> tuple[int, int]:
        turns = [t for _, t in self.turns.values()]
        return sum(t.input_tokens for t in turns), sum(t.output_tokens for t in turns)

    @property
    def cost_usd_micros(self) -> int:
        return sum(t.cost_usd_micros for _, t in self.turns.values())

    def spend(self) -> str:
        tokens_in, tokens_out = self.tokens
        return format_spend(tokens_in + tokens_out, self.cost_usd_micros)


def _decision_text(event: SessionEvent, fold: _Fold) -> str:
    """What the record decided or did, in a few words."""
    status = fold.status or "-"
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


def timeline(records: Iterable[Located]) -> list[Row]:
    """One row per record, in merge order, with the spend after each."""
    fold = _Fold()
    rows = []
    for pos, event in merge(records):
        fold.apply(pos, event)
        decision = _decision_text(event, fold)
        if fold.note:
            decision = f"{decision} [{fold.note}]" if decision else f"[{fold.note}]"
        tokens_in, tokens_out = fold.tokens
        rows.append(
            Row(
                time=format_time(event.occurred_at),
                event=type(event).__name__,
                decision=decision,
                budget_after=fold.spend(),
                topic=pos.topic,
                partition=pos.partition,
                offset=pos.offset,
                event_id=event.event_id,
                status_after=fold.status,
                tokens_after=tokens_in + tokens_out,
                cost_usd_micros_after=fold.cost_usd_micros,
                occurred_at=event.occurred_at,
            )
        )
    return rows


# --- state at an instant ---------------------------------------------------------------


def memory_state(events: Sequence[SessionEvent]) -> dict[str, Any] | None:
    """The memory strata after `events` (merge order), or None when nothing touched memory.

    The hook for projections.memory: its fold reads each stratum from one
    ordered stream, so the interleaving of the merge does not change it.
    """
    return memory_strata.fold_session(events)


def _decision_dict(decided: PolicyDecided) -> dict[str, Any]:
    return {
        "at": format_time(decided.occurred_at),
        "operation_key": decided.operation_key,
        "tool": decided.tool,
        "action": decided.action,
        "decision": decided.decision,
        "reason_code": decided.reason_code,
        "rule_id": decided.rule_id,
        "policy_version": decided.policy_version,
    }


def state_at(records: Iterable[Located], at: datetime | None = None) -> dict[str, Any]:
    """The session's state after every record with occurred_at <= `at` (None: all).

    A JSON-ready dict. `at` before the first record gives the empty state
    (status None, nothing spent).
    """
    merged = merge(records)
    if at is not None and at.tzinfo is None:
        raise ValueError("at must carry a timezone")
    upto = [item for item in merged if at is None or item[1].occurred_at <= at]
    fold = _Fold()
    for pos, event in upto:
        fold.apply(pos, event)
    session_id = merged[0][1].session_id if merged else None
    tenant_id = merged[0][1].tenant_id if merged else None
    tokens_in, tokens_out = fold.tokens
    counts = {"allow": 0, "deny": 0, "require_approval": 0}
    for decided in fold.decisions.values():
        counts[decided.decision] = counts.get(decided.decision, 0) + 1
    status = fold.status
    budget_action = fold.exceeded[-1].action if fold.exceeded else None
    lifecycle = state_to_dict(fold.lifecycle) if fold.lifecycle is not None else None
    if lifecycle is not None:
        lifecycle.pop("recent_event_ids", None)  # bookkeeping for idempotency, not state
    memory = memory_state([event for _, event in upto])
    return {
        "session_id": session_id,
        "tenant_id": tenant_id,
        "at": format_time(at) if at is not None else None,
        "records": fold.records,
        "records_total": len(merged),
        "last_event_at": format_time(fold.last_event_at) if fold.last_event_at else None,
        "status": status,
        "quarantined": status == Status.QUARANTINED,
        "suspended": status == Status.SUSPENDED,
        "quarantine_reason": fold.lifecycle.quarantine_reason if fold.lifecycle else None,
        "tier": fold.started.tier if fold.started else None,
        "plan": fold.started.plan if fold.started else None,
        "turns": len(fold.turns),
        "retries": fold.retries,
        "tokens": {"input": tokens_in, "output": tokens_out, "total": tokens_in + tokens_out},
        "cost_usd_micros": fold.cost_usd_micros,
        "tools": {
            "proposed": len(fold.proposals),
            "decisions": counts,
            "last_decision": _decision_dict(fold.last_decision) if fold.last_decision else None,
            "pending": sorted(fold.lifecycle.pending_operations) if fold.lifecycle else [],
        },
        "budget": {
            "warnings": [
                {
                    "scope": w.scope,
                    "threshold_pct": w.threshold_pct,
                    "used": w.used,
                    "limit": w.limit,
                }
                for w in fold.warnings
            ],
            "exceeded": [
                {
                    "scope": e.scope,
                    "action": e.action,
                    "used": e.used,
                    "limit": e.limit,
                    "fallback_model": e.fallback_model,
                }
                for e in fold.exceeded
            ],
            "action": budget_action,
        },
        "invalid_transitions": fold.rejections,
        "lifecycle": lifecycle,
        "memory": memory,
    }


@dataclass(frozen=True)
class SessionReplay:
    rows: list[Row]
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"timeline": [r.to_dict() for r in self.rows], "state": self.state}


def replay(records: Iterable[Located], at: datetime | None = None) -> SessionReplay:
    """Timeline (every record) and the state at `at` (default: after the last record)."""
    items = list(records)
    return SessionReplay(timeline(items), state_at(items, at))


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
    chain = memory_strata.policy_chain_ok(memory)
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
