"""Counters an agent keeps for /v1/health and the benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class AgentStats:
    processed: int = 0  # records applied
    skipped: int = 0  # records not for this agent (or undecodable)
    emitted: int = 0  # events sent (derived topic, signals, forwards)
    first_at: float | None = None  # monotonic clock at the first record
    last_at: float | None = None  # monotonic clock after the latest record

    def record(self, emitted: int = 0, *, skipped: bool = False) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        if skipped:
            self.skipped += 1
        else:
            self.processed += 1
        self.emitted += emitted

    def as_dict(self) -> dict[str, float]:
        active = 0.0
        if self.first_at is not None and self.last_at is not None:
            active = self.last_at - self.first_at
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "emitted": self.emitted,
            # first record -> latest record: the agent's busy span
            "active_seconds": round(active, 4),
            # the worker's monotonic clock, to line agents up against each other
            "first_at": self.first_at or 0.0,
            "last_at": self.last_at or 0.0,
        }
