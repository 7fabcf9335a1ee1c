"""Memory strata: what a session knows, as pure folds over its log records.

Four strata (DESIGN "Projections"), each with its own retention:

- turn memory: the session's recent turns (metadata, token counts, redacted
  content when present), kept `turn_retention_hours` back from the newest turn;
- task memory: objective, decisions and facts from TaskSummaryUpdated, and
  checkpoints, kept `task_retention_days` back;
- policy memory: every PolicyDecided of the session, immutable and hash-chained
  (each record carries the hash of the one before), kept for good;
- tenant profile memory: plan, limits, allowlists and tool permissions of a
  tenant, versioned (`tenant_versions` kept).

No I/O and no clock: retention is measured from the newest event time in the
stratum, so the live Faust tables (streams/memory.py) and a rebuild from the
log (streams/rebuild.py) compute byte-identical state from the same records.
Each stratum reads one ordered stream of the log (turns and task facts from
the sessions topic, decisions from the derived topic, profiles from the
tenants topic); how a consumer interleaves those topics cannot change it.

Compaction: when the tokens of turn memory pass `compaction_threshold_tokens`
the fold emits one ContextCompactionRequested and remembers it; later turns
do not repeat it. A CheckpointCreated means the runtime compacted: the turns
up to it leave turn memory and a new request may follow.

Redaction: content enters turn memory only redacted (projections.redaction);
the record keeps the counts per kind and a hash of the original, never the
raw text.

State is a JSON-ready dict with `"version"`; `migrate_session` upgrades an
older stored layout when it is read (see `SESSION_MIGRATIONS`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events.models import (
    CheckpointCreated,
    ContextCompactionRequested,
    Event,
    PolicyDecided,
    SessionEvent,
    TaskSummaryUpdated,
    TenantProfileUpdated,
    TurnCompleted,
)
from projections.redaction import DEFAULT_REDACTOR, Redactor

__all__ = [
    "MEMORY_VERSION",
    "PRODUCER",
    "MemoryConfig",
    "canonical_json",
    "compact_context",
    "empty_session",
    "fold_session",
    "fold_tenant",
    "migrate_session",
    "policy_chain_ok",
    "policy_genesis",
    "session_step",
    "tenant_step",
]

MEMORY_VERSION = 1
PRODUCER = "govstream-memory/0.1"
_COMPACTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:govstream:ContextCompactionRequested")


@dataclass(frozen=True)
class MemoryConfig:
    """Retention per stratum, the compaction threshold and the dedupe window."""

    turn_retention_hours: float = 24.0
    task_retention_days: float = 30.0
    tenant_versions: int = 16
    compaction_threshold_tokens: int = 100_000
    dedupe_window: int = 1000
    redactor: Redactor = field(default=DEFAULT_REDACTOR)
    # text -> redacted text: task summaries repeat their items on every update.
    _redacted: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def redact(self, text: str) -> str:
        """The redacted text (memoized; the rules are fixed per config)."""
        cached = self._redacted.get(text)
        if cached is None:
            if len(self._redacted) >= 100_000:
                self._redacted.clear()
            cached = self._redacted[text] = self.redactor.redact(text).text
        return cached


def canonical_json(value: Any) -> bytes:
    """The one serialization of projection state: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def policy_genesis(session_id: str) -> str:
    return hashlib.sha256(f"govstream.policy-memory:{session_id}".encode()).hexdigest()


def _record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()


def empty_session(session_id: str, tenant_id: str) -> dict[str, Any]:
    return {
        "version": MEMORY_VERSION,
        "session_id": session_id,
        "tenant_id": tenant_id,
        "seen_inputs": [],
        "seen_decisions": [],
        "turns": [],
        "turn_tokens": 0,
        "compaction": None,
        "task": {"objective": None, "decisions": [], "facts": [], "checkpoints": []},
        "policy": [],
        "policy_head": policy_genesis(session_id),
        "updated_at": None,
    }


# --- versioned state ------------------------------------------------------------------

# version -> function turning that version's layout into the next one. Empty
# while version 1 is the only layout written; a layout change adds its step
# here and bumps MEMORY_VERSION, and stored state is upgraded on read.
SESSION_MIGRATIONS: dict[int, Any] = {}


def migrate_session(state: Mapping[str, Any]) -> dict[str, Any]:
    """Upgrade a stored state to MEMORY_VERSION (unchanged when current)."""
    version = int(state.get("version", 1))
    if version > MEMORY_VERSION:
        raise ValueError(
            f"memory state version {version} is newer than this code ({MEMORY_VERSION})"
        )
    out = dict(state)
    while version < MEMORY_VERSION:
        out = SESSION_MIGRATIONS[version](out)
        version = int(out["version"])
    return out


# --- the session fold -----------------------------------------------------------------


def _seen(seen: list[str], key: str, window: int) -> list[str] | None:
    """The new FIFO of applied keys, or None when `key` was applied already."""
    if key in seen:
        return None
    new = [*seen, key]
    return new[-window:] if len(new) > window else new


def _turn_record(turn: TurnCompleted, at: str, redactor: Redactor) -> dict[str, Any]:
    content = redaction = None
    if turn.content is not None:
        redacted = redactor.redact(turn.content)
        content, redaction = redacted.text, redacted.record.to_dict()
    return {
        "event_id": turn.event_id,
        "at": at,
        "model": turn.model,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "cost_usd_micros": turn.cost_usd_micros,
        "outcome": str(turn.outcome),
        "content": content,
        "redaction": redaction,
    }


def _tokens(turns: Iterable[Mapping[str, Any]]) -> int:
    return sum(t["input_tokens"] + t["output_tokens"] for t in turns)


def _compaction_event(
    turn: TurnCompleted, tokens: int, threshold: int
) -> ContextCompactionRequested:
    event_id = str(uuid.uuid5(_COMPACTION_NAMESPACE, turn.event_id))
    key = f"ContextCompactionRequested/{event_id}"
    return ContextCompactionRequested(
        **turn.envelope_for_derived(event_id, key, PRODUCER),
        turn_tokens=tokens,
        threshold=threshold,
    )


def _add_turn(
    state: dict[str, Any], turn: TurnCompleted, at: str, config: MemoryConfig
) -> tuple[dict[str, Any], list[SessionEvent]]:
    previous = state["turns"]
    newest = max(at, previous[-1]["at"]) if previous else at  # fixed-width ISO: text order
    cutoff = _iso(_parse(newest) - timedelta(hours=config.turn_retention_hours))
    turns = [t for t in previous if t["at"] >= cutoff]
    turns.append(_turn_record(turn, at, config.redactor))
    turns.sort(key=lambda t: t["at"])  # stable: log order among equal times
    tokens = _tokens(turns)
    out: list[SessionEvent] = []
    compaction = state["compaction"]
    if compaction is None and tokens > config.compaction_threshold_tokens:
        compaction = {"requested_at": at, "turn_tokens": tokens}
        out.append(_compaction_event(turn, tokens, config.compaction_threshold_tokens))
    return {**state, "turns": turns, "turn_tokens": tokens, "compaction": compaction}, out


def _keep_recent(items: list[dict[str, Any]], cutoff: str) -> list[dict[str, Any]]:
    return [i for i in items if i["at"] >= cutoff]


def _merge_items(
    items: list[dict[str, Any]], texts: Iterable[str], at: str
) -> list[dict[str, Any]]:
    known = {i["text"] for i in items}
    return items + [{"text": t, "at": at} for t in dict.fromkeys(texts) if t not in known]


def _task_update(
    state: dict[str, Any], event: SessionEvent, at: str, config: MemoryConfig
) -> dict[str, Any]:
    cutoff = _iso(event.occurred_at - timedelta(days=config.task_retention_days))
    task = dict(state["task"])
    redact = config.redact
    new_state = dict(state)
    if isinstance(event, TaskSummaryUpdated):
        task["objective"] = {"text": redact(event.objective), "at": at}
        task["decisions"] = _merge_items(task["decisions"], map(redact, event.decisions), at)
        task["facts"] = _merge_items(task["facts"], map(redact, event.facts), at)
    elif isinstance(event, CheckpointCreated):
        task["checkpoints"] = [
            *task["checkpoints"],
            {
                "artifact_ref": redact(event.artifact_ref),
                "summary": redact(event.summary),
                "at": at,
            },
        ]
        # The runtime compacted: earlier turns live on in the checkpoint.
        turns = [t for t in state["turns"] if t["at"] > at]
        new_state.update(turns=turns, turn_tokens=_tokens(turns), compaction=None)
    for name in ("decisions", "facts", "checkpoints"):
        task[name] = _keep_recent(task[name], cutoff)
    objective = task["objective"]
    if objective is not None and objective["at"] < cutoff:
        task["objective"] = None
    new_state["task"] = task
    return new_state


def _policy_record(state: dict[str, Any], decided: PolicyDecided, at: str) -> dict[str, Any]:
    record = {
        "seq": len(state["policy"]),
        "event_id": decided.event_id,
        "at": at,
        "operation_key": decided.operation_key,
        "tool": decided.tool,
        "action": decided.action,
        "decision": str(decided.decision),
        "reason_code": decided.reason_code,
        "rule_id": decided.rule_id,
        "policy_version": decided.policy_version,
        "signature": decided.signature,
        "prev_hash": state["policy_head"],
    }
    record["hash"] = _record_hash(state["policy_head"], record)
    return record


def session_step(
    state: Mapping[str, Any] | None, event: SessionEvent, config: MemoryConfig
) -> tuple[dict[str, Any] | None, list[SessionEvent]]:
    """Fold one session record into its memory; returns (new state, events to emit).

    Returns the input object unchanged (same identity) when the record does
    not touch memory, so the adapter can skip the table write.
    """
    kinds = (TurnCompleted, TaskSummaryUpdated, CheckpointCreated, PolicyDecided)
    if not isinstance(event, kinds):
        return (dict(state) if state is not None else None), []
    current = (
        migrate_session(state)
        if state is not None
        else empty_session(event.session_id, event.tenant_id)
    )
    if event.tenant_id != current["tenant_id"]:
        return current, []  # another tenant's record under this id (lifecycle: tenant_mismatch)
    # Decisions are re-emitted on retries with the same event id; inputs are
    # retried under the same idempotency key: both collapse to the first. One
    # FIFO per topic, so how a consumer interleaves the two cannot matter.
    if isinstance(event, PolicyDecided):
        fifo, key = "seen_decisions", event.event_id
    else:
        fifo, key = "seen_inputs", event.idempotency_key
    seen = _seen(current[fifo], key, config.dedupe_window)
    if seen is None:
        return current, []
    at = _iso(event.occurred_at)
    updated_at = max(at, current["updated_at"] or at)  # order-free, like the strata
    current = {**current, fifo: seen, "updated_at": updated_at}
    out: list[SessionEvent] = []
    if isinstance(event, TurnCompleted):
        current, out = _add_turn(current, event, at, config)
    elif isinstance(event, PolicyDecided):
        record = _policy_record(current, event, at)
        current = {**current, "policy": [*current["policy"], record], "policy_head": record["hash"]}
    else:
        current = _task_update(current, event, at, config)
    return current, out


def fold_session(
    events: Iterable[SessionEvent], config: MemoryConfig | None = None
) -> dict[str, Any] | None:
    """Memory of one session after `events` (its records in log order)."""
    config = config or MemoryConfig()
    state: dict[str, Any] | None = None
    for event in events:
        state, _ = session_step(state, event, config)
    return state


def policy_chain_ok(state: Mapping[str, Any]) -> int | None:
    """None when the policy memory's hash chain holds, else the first bad seq."""
    prev = policy_genesis(state["session_id"])
    for record in state["policy"]:
        if record["prev_hash"] != prev or _record_hash(prev, record) != record["hash"]:
            return int(record["seq"])
        prev = record["hash"]
    return None if prev == state["policy_head"] else len(state["policy"])


# --- tenant profile memory ------------------------------------------------------------


def tenant_step(
    state: Mapping[str, Any] | None, event: Event, config: MemoryConfig
) -> dict[str, Any] | None:
    """Fold one TenantProfileUpdated into the tenant's versioned profile memory."""
    if not isinstance(event, TenantProfileUpdated):
        return dict(state) if state is not None else None
    current = (
        dict(state)
        if state is not None
        else {
            "version": MEMORY_VERSION,
            "tenant_id": event.tenant_id,
            "latest_version": 0,
            "versions": [],
        }
    )
    if any(v["event_id"] == event.event_id for v in current["versions"]):
        return current
    number = int(current["latest_version"]) + 1
    profile = {
        "profile_version": number,
        "event_id": event.event_id,
        "at": _iso(event.occurred_at),
        "plan": event.plan,
        "budgets": event.budgets.model_dump(mode="json"),
        "egress_allowlist": list(event.egress_allowlist),
        "tool_permissions": dict(sorted(event.tool_permissions.items())),
    }
    versions = [*current["versions"], profile][-config.tenant_versions :]
    return {**current, "latest_version": number, "versions": versions}


def fold_tenant(
    events: Iterable[Event], config: MemoryConfig | None = None
) -> dict[str, Any] | None:
    config = config or MemoryConfig()
    state: dict[str, Any] | None = None
    for event in events:
        state = tenant_step(state, event, config)
    return state


# --- the compact context ----------------------------------------------------------------


def compact_context(
    memory: Mapping[str, Any],
    *,
    token_budget: int,
    constraints: Mapping[str, Any] | None = None,
    tenant: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a runtime builds its next prompt from.

    Task memory whole, the most recent turns whose tokens fit `token_budget`
    (newest first until the next one would not fit, then back in time order),
    the active constraints (session status, budget verdict, tenant plan and
    allowlists) and the newest policy decisions' denials to avoid repeating.
    """
    picked: list[Mapping[str, Any]] = []
    used = 0
    for turn in reversed(memory["turns"]):
        cost = turn["input_tokens"] + turn["output_tokens"]
        if used + cost > token_budget:
            break
        picked.append(turn)
        used += cost
    denied = [
        {k: r[k] for k in ("at", "tool", "action", "reason_code", "operation_key")}
        for r in memory["policy"]
        if r["decision"] != "allow"
    ][-20:]
    active = dict(constraints or {})
    if tenant and tenant.get("versions"):
        latest = tenant["versions"][-1]
        active["tenant"] = {
            "plan": latest["plan"],
            "profile_version": latest["profile_version"],
            "egress_allowlist": latest["egress_allowlist"],
            "tool_permissions": latest["tool_permissions"],
        }
    return {
        "session_id": memory["session_id"],
        "tenant_id": memory["tenant_id"],
        "task": memory["task"],
        "recent_turns": list(reversed(picked)),
        "recent_turn_tokens": used,
        "turn_memory_tokens": memory["turn_tokens"],
        "compaction_requested": memory["compaction"] is not None,
        "constraints": active,
        "recent_denials": denied,
        "policy_head": memory["policy_head"],
        "as_of": memory["updated_at"],
    }
