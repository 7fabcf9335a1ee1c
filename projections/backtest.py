"""Policy backtest: re-run historical tool proposals against a new policy version. Pure.

`backtest(partitions, recorded, config)` folds the tenant log again with the
governor's own fold (projections/governor/fold.py) under a configuration
whose policy is the new document, and compares every decision it makes with
the one recorded in the log: "which decisions would change under this
document?". No I/O and no clock: the CLI (govstream/commands/policy.py) reads
Kafka and calls this.

What is compared. The fold decides the first proposal (or admission request)
per (tenant, operation_key) in log order, as the live governor did; the
recorded decision is the first PolicyDecided for that operation in the
derived topic. A change is any difference in decision or reason_code. An
operation with no recorded decision (the governor has not caught up) is
counted as `undecided` and not compared.

The context of each decision (session status, budget gate, plan, the tenant's
allowlist and permissions) is the fold's own state at that record, so it is
exactly the live context; downstream of a changed decision (a call that now
holds a tool slot, say) the what-if world may differ from history, which is
the point of asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from events.models import Event, PolicyDecided
from projections.governor.config import GovernorConfig
from projections.governor.fold import fold_log

__all__ = ["BacktestResult", "Change", "Logged", "backtest"]


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


def backtest(
    partitions: Iterable[Iterable[Logged]],
    recorded: Mapping[tuple[str, str], PolicyDecided],
    config: GovernorConfig,
    *,
    tenant: str | None = None,
    since_ms: int | None = None,
) -> BacktestResult:
    """Fold each partition's tenant log under `config` (the new policy) and compare
    its decisions with `recorded` (tenant, operation key -> first recorded decision).

    `tenant` and `since_ms` (record time) limit which decisions are compared;
    the whole log is folded regardless, since contexts start at offset zero.
    """
    seen: set[tuple[str, str]] = set()
    re_evaluated = undecided = 0
    changes: list[Change] = []
    for records in partitions:
        items = ((r, r.event) for r in records)
        for logged, _, folded in fold_log(items, config):
            for new in folded.derived:
                if not isinstance(new, PolicyDecided):
                    continue
                key = (new.tenant_id, new.operation_key)
                if key in seen:
                    continue
                seen.add(key)
                if tenant is not None and new.tenant_id != tenant:
                    continue
                if since_ms is not None and logged.timestamp_ms < since_ms:
                    continue
                old = recorded.get(key)
                if old is None:
                    undecided += 1
                    continue
                re_evaluated += 1
                if (old.decision, old.reason_code) != (new.decision, new.reason_code):
                    changes.append(
                        Change(
                            occurred_at=new.occurred_at,
                            tenant_id=new.tenant_id,
                            session_id=new.session_id,
                            operation_key=new.operation_key,
                            tool=new.tool,
                            action=new.action,
                            old_decision=old.decision,
                            old_reason_code=old.reason_code,
                            old_policy_version=old.policy_version,
                            new_decision=new.decision,
                            new_reason_code=new.reason_code,
                            new_rule_id=new.rule_id,
                        )
                    )
    changes.sort(key=lambda c: (c.occurred_at, c.session_id, c.operation_key))
    return BacktestResult(config.policy.version, re_evaluated, undecided, tuple(changes))
