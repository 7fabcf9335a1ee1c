"""The governor's state: typed entries per key, changed in an overlay. Pure.

One partition of the tenant-keyed sessions log owns one PartitionState. Its
entries, by key (the changelog record key of each):

    s/<tenant>/<session>   SessionEntry   lifecycle, gate, budgets and memory of a session
    t/<tenant>             TenantEntry    profile versions, day/month cost, gauges
    w/<tenant>/<workflow>  WorkflowEntry  the workflow's cumulative tokens
    p/<partition>          PartitionEntry the log clock, the global minute share

Changes go to an overlay (`dirty`): the first time a checkpoint interval
touches a key, its committed entry is copied there and mutated in place for
the rest of the interval (never copied per event). `commit()` moves the
overlay into the committed state and returns the changed keys, which the
adapter writes to the changelog as canonical JSON (`canonical`); `abort()`
drops it. Ids hold no "/" (events.models.ID_ALPHABET), so keys are
unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from projections.lifecycle import SessionState as LifecycleState
from projections.lifecycle import state_from_dict, state_to_dict

STATE_VERSION = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def canonical(value: Any) -> bytes:
    """The one byte form of a state value: sorted keys, no spaces (orjson)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def iso(at: datetime) -> str:
    """Fixed-width UTC ISO text with microseconds: text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def session_key(tenant_id: str, session_id: str) -> str:
    return f"s/{tenant_id}/{session_id}"


def tenant_key(tenant_id: str) -> str:
    return f"t/{tenant_id}"


def workflow_key(tenant_id: str, workflow_id: str) -> str:
    return f"w/{tenant_id}/{workflow_id}"


def partition_key(number: int) -> str:
    return f"p/{number}"


# --- balances ---------------------------------------------------------------------------


@dataclass(slots=True)
class Balance:
    """Usage of one budget in one period ("" = no period), with the reservations held.

    `reserved` maps a reservation id to (amount, expires_at_ms in log time): a
    reservation past its expiry no longer counts, whether or not it was
    released yet.
    """

    period: str = ""
    used: int = 0
    reserved: dict[str, tuple[int, int]] = field(default_factory=dict)

    def held(self, now_ms: int) -> int:
        return sum(amount for amount, expires in self.reserved.values() if expires > now_ms)

    def roll(self, period: str) -> None:
        """Start a newer period (an older one is never reopened: see callers)."""
        if period != self.period:
            self.period, self.used, self.reserved = period, 0, {}

    def copy(self) -> Balance:
        return Balance(self.period, self.used, dict(self.reserved))

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "used": self.used,
            "reserved": {k: list(v) for k, v in self.reserved.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Balance:
        reserved = {k: (int(v[0]), int(v[1])) for k, v in data["reserved"].items()}
        return cls(data["period"], int(data["used"]), reserved)


# --- memory records (immutable once written) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnMemo:
    event_id: str
    at: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd_micros: int
    outcome: str
    content: str | None
    redaction: dict[str, Any] | None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "at": self.at,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd_micros": self.cost_usd_micros,
            "outcome": self.outcome,
            "content": self.content,
            "redaction": self.redaction,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TurnMemo:
        return cls(
            d["event_id"], d["at"], d["model"], d["input_tokens"], d["output_tokens"],
            d["cost_usd_micros"], d["outcome"], d["content"], d["redaction"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """One decision in the session's hash-chained policy memory."""

    seq: int
    event_id: str
    at: str
    operation_key: str
    tool: str
    action: str
    decision: str
    reason_code: str
    rule_id: str
    policy_version: str
    signature: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PolicyRecord:
        return cls(**d)


@dataclass(slots=True)
class TaskMemo:
    """Task memory: objective, decisions, facts and checkpoints, each with its time."""

    objective: dict[str, str] | None = None  # {"text", "at"}
    decisions: list[dict[str, str]] = field(default_factory=list)
    facts: list[dict[str, str]] = field(default_factory=list)
    checkpoints: list[dict[str, str]] = field(default_factory=list)

    def copy(self) -> TaskMemo:
        return TaskMemo(
            self.objective, list(self.decisions), list(self.facts), list(self.checkpoints)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "decisions": self.decisions,
            "facts": self.facts,
            "checkpoints": self.checkpoints,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskMemo:
        return cls(d["objective"], d["decisions"], d["facts"], d["checkpoints"])


# --- entries --------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionEntry:
    """Everything the governor knows about one session."""

    tenant_id: str
    session_id: str
    lifecycle: LifecycleState | None = None
    plan: str | None = None
    tier: str | None = None
    workflow_id: str | None = None
    # idempotency key -> [event_id, attempt], oldest first, at most the dedupe window
    applied: dict[str, tuple[str, int]] = field(default_factory=dict)
    # operation key -> the stored PolicyDecided (JSON): the first decision wins
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the budget gate once a budget of the session was exceeded: action, scope, fallback
    verdict: dict[str, Any] | None = None
    tokens: Balance = field(default_factory=Balance)
    # what the session's turns spent: [input tokens, output tokens, micro-dollars]
    spent: tuple[int, int, int] = (0, 0, 0)
    tools: dict[str, str] = field(default_factory=dict)  # allowed calls holding a slot
    # reservation id -> {"model", "kinds": {scope kind: balance key}}, oldest first
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)
    turns: list[TurnMemo] = field(default_factory=list)
    turn_tokens: int = 0
    compaction: dict[str, Any] | None = None
    task: TaskMemo = field(default_factory=TaskMemo)
    policy: list[PolicyRecord] = field(default_factory=list)
    policy_head: str = ""
    updated_at: str | None = None

    def copy(self) -> SessionEntry:
        return SessionEntry(
            self.tenant_id, self.session_id, self.lifecycle, self.plan, self.tier,
            self.workflow_id, dict(self.applied), dict(self.decisions), self.verdict,
            self.tokens.copy(), self.spent, dict(self.tools),
            {k: dict(v) for k, v in self.reservations.items()}, list(self.turns),
            self.turn_tokens, self.compaction, self.task.copy(), list(self.policy),
            self.policy_head, self.updated_at,
        )  # fmt: skip

    @property
    def status(self) -> str:
        return str(self.lifecycle.status) if self.lifecycle is not None else "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "tenant_id": self.tenant_id,
            "session_id": self.session_id,
            "lifecycle": state_to_dict(self.lifecycle) if self.lifecycle else None,
            "plan": self.plan,
            "tier": self.tier,
            "workflow_id": self.workflow_id,
            "applied": [[k, e, a] for k, (e, a) in self.applied.items()],
            "decisions": self.decisions,
            "verdict": self.verdict,
            "tokens": self.tokens.to_json(),
            "spent": list(self.spent),
            "tools": self.tools,
            "reservations": [[k, v] for k, v in self.reservations.items()],
            "turns": [t.to_json() for t in self.turns],
            "turn_tokens": self.turn_tokens,
            "compaction": self.compaction,
            "task": self.task.to_json(),
            "policy": [r.to_json() for r in self.policy],
            "policy_head": self.policy_head,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionEntry:
        return cls(
            tenant_id=d["tenant_id"],
            session_id=d["session_id"],
            lifecycle=state_from_dict(d["lifecycle"]) if d["lifecycle"] else None,
            plan=d["plan"],
            tier=d["tier"],
            workflow_id=d["workflow_id"],
            applied={k: (e, int(a)) for k, e, a in d["applied"]},
            decisions=d["decisions"],
            verdict=d["verdict"],
            tokens=Balance.from_json(d["tokens"]),
            spent=tuple(d["spent"]),  # type: ignore[arg-type]
            tools=d["tools"],
            reservations={k: v for k, v in d["reservations"]},
            turns=[TurnMemo.from_json(t) for t in d["turns"]],
            turn_tokens=d["turn_tokens"],
            compaction=d["compaction"],
            task=TaskMemo.from_json(d["task"]),
            policy=[PolicyRecord.from_json(r) for r in d["policy"]],
            policy_head=d["policy_head"],
            updated_at=d["updated_at"],
        )


@dataclass(slots=True)
class TenantEntry:
    """A tenant's profile versions, money balances and concurrency gauges."""

    tenant_id: str
    # [profile version number, log time ms, TenantProfileUpdated as JSON], oldest first
    profiles: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    latest_version: int = 0
    day: Balance = field(default_factory=Balance)
    month: Balance = field(default_factory=Balance)
    sessions: list[str] = field(default_factory=list)  # open sessions, in start order
    tool_calls: dict[str, list[str]] = field(default_factory=dict)  # tool -> open operations

    def copy(self) -> TenantEntry:
        return TenantEntry(
            self.tenant_id, list(self.profiles), self.latest_version, self.day.copy(),
            self.month.copy(), list(self.sessions),
            {k: list(v) for k, v in self.tool_calls.items()},
        )  # fmt: skip

    @property
    def profile(self) -> dict[str, Any] | None:
        return self.profiles[-1][2] if self.profiles else None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "tenant_id": self.tenant_id,
            "profiles": [list(p) for p in self.profiles],
            "latest_version": self.latest_version,
            "day": self.day.to_json(),
            "month": self.month.to_json(),
            "sessions": self.sessions,
            "tool_calls": self.tool_calls,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TenantEntry:
        return cls(
            d["tenant_id"],
            [(int(n), int(ms), p) for n, ms, p in d["profiles"]],
            d["latest_version"],
            Balance.from_json(d["day"]),
            Balance.from_json(d["month"]),
            d["sessions"],
            d["tool_calls"],
        )


@dataclass(slots=True)
class WorkflowEntry:
    tenant_id: str
    workflow_id: str
    tokens: Balance = field(default_factory=Balance)

    def copy(self) -> WorkflowEntry:
        return WorkflowEntry(self.tenant_id, self.workflow_id, self.tokens.copy())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "tenant_id": self.tenant_id,
            "workflow_id": self.workflow_id,
            "tokens": self.tokens.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkflowEntry:
        return cls(d["tenant_id"], d["workflow_id"], Balance.from_json(d["tokens"]))


@dataclass(slots=True)
class PartitionEntry:
    """The partition's log clock (the newest record time folded) and its share of the
    global tokens-per-minute envelope."""

    clock_ms: int = 0
    minute: Balance = field(default_factory=Balance)

    def copy(self) -> PartitionEntry:
        return PartitionEntry(self.clock_ms, self.minute.copy())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "clock_ms": self.clock_ms,
            "minute": self.minute.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PartitionEntry:
        return cls(int(d["clock_ms"]), Balance.from_json(d["minute"]))


Entry = SessionEntry | TenantEntry | WorkflowEntry | PartitionEntry
E = TypeVar("E", SessionEntry, TenantEntry, WorkflowEntry, PartitionEntry)
_PARSERS: dict[str, Callable[[dict[str, Any]], Entry]] = {
    "s": SessionEntry.from_json,
    "t": TenantEntry.from_json,
    "w": WorkflowEntry.from_json,
    "p": PartitionEntry.from_json,
}


def entry_from_bytes(key: str, value: bytes) -> Entry:
    """A changelog record back into its entry (the key's prefix names the type)."""
    return entry_from_json(key, orjson.loads(value))


def entry_from_json(key: str, data: dict[str, Any]) -> Entry:
    return _PARSERS[key.split("/", 1)[0]](data)


# --- the partition's state ------------------------------------------------------------------


class PartitionState:
    """Committed entries, the sealed overlay of a checkpoint being committed, and the
    overlay of the current interval (reads go dirty -> sealed -> committed).

    Sealing lets the adapter fold the next records while the previous
    checkpoint's transaction is in flight: entries are copied on first write, so
    a sealed entry is never changed after it was sealed.

    Also keeps an index the entries imply (operation key -> session, per
    tenant), rebuilt on restore, so a lookup never scans.

    A restored entry stays parsed JSON until the fold first reads it: a restart
    over many sessions answers once the changelog is read, not once every
    entry is built.
    """

    __slots__ = ("committed", "dirty", "number", "operations", "sealed")

    def __init__(self, number: int = 0) -> None:
        self.number = number  # the partition of the tenant log this state is of
        self.committed: dict[str, Entry | dict[str, Any]] = {}  # dict: restored, not built
        self.sealed: dict[str, Entry | None] = {}  # being committed (None = deleted)
        self.dirty: dict[str, Entry | None] = {}
        # (tenant, operation key) -> session key of the decision
        self.operations: dict[tuple[str, str], str] = {}

    # -- reads and writes through the overlay -----------------------------------------

    def peek(self, key: str) -> Entry | None:
        """The current entry (overlay first), not for changing."""
        if key in self.dirty:
            return self.dirty[key]
        if key in self.sealed:
            return self.sealed[key]
        return self._committed(key)

    def _committed(self, key: str) -> Entry | None:
        value = self.committed.get(key)
        if type(value) is dict:
            value = self.committed[key] = entry_from_json(key, value)
        return value  # type: ignore[return-value]

    def _touch(self, key: str, make: Callable[[], E], kind: type[E]) -> E:
        if key in self.dirty:
            entry = self.dirty[key]
            if entry is not None:
                return entry  # type: ignore[return-value]
        else:
            current = self.sealed[key] if key in self.sealed else self._committed(key)
            if current is not None:
                entry = current.copy()
                self.dirty[key] = entry
                return entry  # type: ignore[return-value]
        fresh = make()
        self.dirty[key] = fresh
        return fresh

    def session(self, tenant_id: str, session_id: str) -> SessionEntry:
        return self._touch(
            session_key(tenant_id, session_id),
            lambda: SessionEntry(tenant_id, session_id),
            SessionEntry,
        )

    def tenant(self, tenant_id: str) -> TenantEntry:
        return self._touch(tenant_key(tenant_id), lambda: TenantEntry(tenant_id), TenantEntry)

    def workflow(self, tenant_id: str, workflow_id: str) -> WorkflowEntry:
        return self._touch(
            workflow_key(tenant_id, workflow_id),
            lambda: WorkflowEntry(tenant_id, workflow_id),
            WorkflowEntry,
        )

    def partition(self) -> PartitionEntry:
        return self._touch(partition_key(self.number), PartitionEntry, PartitionEntry)

    def delete(self, key: str) -> None:
        self.dirty[key] = None

    @property
    def clock_ms(self) -> int:
        entry = self.peek(partition_key(self.number))
        return entry.clock_ms if isinstance(entry, PartitionEntry) else 0

    # -- checkpoints ---------------------------------------------------------------------

    def commit(self) -> dict[str, Entry | None]:
        """Apply the overlay; return the changed keys (None = deleted)."""
        return self.commit_sealed(self.seal())

    def seal(self) -> dict[str, Entry | None]:
        """Close the current overlay for a checkpoint; later writes go to a new one.
        Returns the sealed keys (None = deleted). One sealed overlay at a time."""
        if self.sealed:
            raise RuntimeError("a sealed overlay is still being committed")
        self.sealed, self.dirty = self.dirty, {}
        return self.sealed

    def commit_sealed(self, sealed: dict[str, Entry | None]) -> dict[str, Entry | None]:
        """Apply the sealed overlay: its checkpoint committed."""
        for key, entry in sealed.items():
            if entry is None:
                self.committed.pop(key, None)
            else:
                self.committed[key] = entry
        if self.sealed is sealed:
            self.sealed = {}
        return sealed

    def abort(self) -> None:
        """Drop both overlays: the state is as it was at the last commit."""
        self.dirty, self.sealed = {}, {}
        self.reindex()

    def drop_dirty(self) -> None:
        """Drop the current overlay only (the sealed one may still commit)."""
        self.dirty = {}
        self.reindex()

    def restore(self, key: str, value: bytes | None) -> None:
        """Load one changelog record (None: a tombstone) into the committed state."""
        if value is None:
            self.committed.pop(key, None)
        else:
            self.committed[key] = orjson.loads(value)

    def reindex(self) -> None:
        operations: dict[tuple[str, str], str] = {}
        view: dict[str, Entry | dict[str, Any] | None] = dict(self.committed)
        view.update(self.sealed)
        for key, entry in view.items():
            if isinstance(entry, SessionEntry):
                tenant, decisions = entry.tenant_id, entry.decisions
            elif isinstance(entry, dict) and key.startswith("s/"):
                tenant, decisions = entry["tenant_id"], entry.get("decisions") or {}
            else:
                continue
            for op in decisions:
                operations[(tenant, op)] = key
        self.operations = operations

    def items(self) -> Iterator[tuple[str, Entry]]:
        """Every current entry (overlay applied), in key order."""
        keys = sorted(set(self.committed) | set(self.sealed) | set(self.dirty))
        for key in keys:
            entry = self.peek(key)
            if entry is not None:
                yield key, entry

    def digest(self) -> str:
        """sha256 of the committed state (keys and changelog bytes, in key order): two
        states with the same digest are the same, byte for byte."""
        h = hashlib.sha256()
        for key in sorted(self.committed):
            entry = self.committed[key]
            data = entry if isinstance(entry, dict) else entry.to_json()
            h.update(key.encode() + b"\0" + canonical(data) + b"\n")
        return h.hexdigest()

    def snapshot(self) -> dict[str, bytes]:
        """Every current entry as its changelog bytes (what a rebuild compares)."""
        return {key: canonical(entry.to_json()) for key, entry in self.items()}
