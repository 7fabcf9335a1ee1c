"""`govstream replay rebuild`: every memory projection again from offset zero, diffed with live.

The live tables (streams/memory.py) and this rebuild run the same pure folds
(projections/memory.py) over the same records, so their state must be equal
byte for byte. The rebuild:

1. reads the processors group's committed offsets on the memory agents'
   inputs (sessions, derived, tenants): the exact log prefix live state has
   folded, because under exactly_once the tables' changelog records commit in
   the same transaction as those offsets;
2. folds that prefix from offset zero into its own namespace (a directory of
   canonical JSON lines, `<home>/rebuild/<run>/` unless --out says where);
3. reads the live state from the tables' changelog topics (the last committed
   value per key);
4. reads the committed offsets again: if the worker committed meanwhile the
   snapshot is torn and the whole comparison is retried;
5. compares key by key, and also the ContextCompactionRequested events the
   live agent wrote against the ones the rebuild asks for.

Exit 0 when every key is byte-identical, 1 on any divergence (the first
differing key and the first differing field are printed), 2 on usage errors.
Records of types no stratum reads are skipped by their schema id, unread.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from events.codec import Codec
from events.models import (
    CheckpointCreated,
    ContextCompactionRequested,
    PolicyDecided,
    SessionEvent,
    TaskSummaryUpdated,
    TenantProfileUpdated,
    TurnCompleted,
)
from events.registry import registry_from_settings
from events.topics import Topics
from govstream.errors import GovstreamError
from govstream.settings import Settings
from projections.memory import MemoryConfig, canonical_json, session_step, tenant_step
from streams.admin import group_lag, partitions_of
from streams.ingest import Ingested, InputRules, ingest
from streams.log_reader import read_topics
from streams.memory import SESSION_TABLE, TENANT_TABLE, changelog_topic, memory_config

__all__ = [
    "Divergence",
    "LogFold",
    "RebuildReport",
    "first_difference",
    "fold_log",
    "rebuild",
]

SESSION_INPUTS = (TurnCompleted, TaskSummaryUpdated, CheckpointCreated, PolicyDecided)
COMPACTIONS = "compaction-requests"
ATTEMPTS = 5


@dataclass(frozen=True)
class Divergence:
    projection: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.projection}/{self.key}: {self.detail}"


@dataclass
class RebuildReport:
    records: int = 0  # log records read
    folded: int = 0  # records a stratum applied or checked
    keys: dict[str, int] = field(default_factory=dict)  # projection -> keys compared
    fold_seconds: float = 0.0
    divergences: list[Divergence] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def rate(self) -> float:
        return self.records / self.fold_seconds if self.fold_seconds > 0 else 0.0


def first_difference(live: Any, rebuilt: Any, path: str = "$") -> str:
    """Where two JSON values first differ, as a JSON path and both values."""
    if isinstance(live, dict) and isinstance(rebuilt, dict):
        for key in sorted(set(live) | set(rebuilt)):
            if key not in live:
                return f"{path}.{key} only in rebuilt"
            if key not in rebuilt:
                return f"{path}.{key} only in live"
            if live[key] != rebuilt[key]:
                return first_difference(live[key], rebuilt[key], f"{path}.{key}")
    elif isinstance(live, list) and isinstance(rebuilt, list):
        for index, (a, b) in enumerate(zip(live, rebuilt, strict=False)):
            if a != b:
                return first_difference(a, b, f"{path}[{index}]")
        if len(live) != len(rebuilt):
            return f"{path} has {len(live)} items live, {len(rebuilt)} rebuilt"
    if live == rebuilt:
        return f"{path}: same value, different bytes (not canonical JSON)"
    return f"{path}: live {json.dumps(live)[:120]} != rebuilt {json.dumps(rebuilt)[:120]}"


class LogFold:
    """The rebuild's own namespace: the folds' state, keyed as the live tables key it."""

    def __init__(self, codec: Codec, config: MemoryConfig, rules: InputRules) -> None:
        self.codec, self.config, self.rules = codec, config, rules
        self.sessions: dict[str, dict[str, Any]] = {}
        self.tenants: dict[str, dict[str, Any]] = {}
        self.requested: set[str] = set()  # compaction event ids the fold asks for
        self.written: set[str] = set()  # compaction event ids live wrote
        self.records = self.folded = 0
        # Schema ids worth decoding; any other id is skipped unread.
        wanted = (*SESSION_INPUTS, ContextCompactionRequested, TenantProfileUpdated)
        self._wanted_names = {m.__name__ for m in wanted}
        self._wanted_ids: dict[int, bool] = {}

    def result(self) -> FoldResult:
        return FoldResult(
            self.sessions, self.tenants, self.requested, self.written, self.records, self.folded
        )

    def _wanted(self, value: bytes) -> bool:
        if len(value) < 5 or value[0] != 0:
            return False
        schema_id = int.from_bytes(value[1:5], "big")
        known = self._wanted_ids.get(schema_id)
        if known is None:
            try:
                name = self.codec.registry.by_id(schema_id).record_name
            except Exception:  # unknown schema: the sink dead-letters it, no stratum reads it
                name = ""
            known = self._wanted_ids[schema_id] = name.rsplit(".", 1)[-1] in self._wanted_names
        return known

    def fold(self, batch: Iterable[Any]) -> None:
        sessions, config = self.sessions, self.config
        for record in batch:
            self.records += 1
            if not record.value or not self._wanted(record.value):
                continue
            item = ingest(self.codec, record, self.rules)
            if not isinstance(item, Ingested):
                continue  # the sink dead-letters it; no live table folded it either
            event = item.event
            self.folded += 1
            if isinstance(event, TenantProfileUpdated):
                state = tenant_step(self.tenants.get(event.tenant_id), event, config)
                if state is not None:
                    self.tenants[event.tenant_id] = state
            elif isinstance(event, ContextCompactionRequested):
                self.written.add(event.event_id)
            elif isinstance(event, SessionEvent):
                key = event.session_key
                state, out = session_step(sessions.get(key), event, config)
                if state is not None:
                    sessions[key] = state
                self.requested.update(e.event_id for e in out)


async def _committed(
    settings: Settings, bootstrap: str, topics: list[str]
) -> dict[TopicPartition, int]:
    rows = await group_lag(bootstrap, settings.consumer_group, topics)
    return {TopicPartition(r.topic, r.partition): max(r.committed, 0) for r in rows}


async def _live_table(bootstrap: str, topic: str) -> dict[str, bytes]:
    """The last committed value per key of a table's changelog (a tombstone removes it)."""
    state: dict[str, bytes] = {}
    try:
        async for batch in read_topics(bootstrap, [topic]):
            for record in batch:
                key = json.loads(record.key) if record.key else None
                if key is None:
                    continue
                if record.value:
                    state[str(key)] = record.value
                else:
                    state.pop(str(key), None)
    except GovstreamError:
        return {}  # no changelog yet: no live state
    return state


def _write_namespace(out_dir: Path, name: str, state: Mapping[str, Any]) -> None:
    with (out_dir / f"{name}.jsonl").open("wb") as fh:
        for key in sorted(state):
            fh.write(canonical_json({"key": key, "value": state[key]}) + b"\n")


def _compare(
    projection: str, live: Mapping[str, bytes], rebuilt: Mapping[str, Any], report: RebuildReport
) -> None:
    report.keys[projection] = len(set(live) | set(rebuilt))
    for key in sorted(set(live) | set(rebuilt)):
        if key not in live:
            report.divergences.append(Divergence(projection, key, "only in rebuilt state"))
            continue
        if key not in rebuilt:
            report.divergences.append(Divergence(projection, key, "only in live state"))
            continue
        expected = canonical_json(rebuilt[key])
        if live[key] != expected:
            detail = first_difference(json.loads(live[key]), rebuilt[key])
            report.divergences.append(Divergence(projection, key, detail))


def memory_inputs(settings: Settings) -> list[str]:
    topics = Topics(settings.topic_prefix)
    return [topics.sessions, topics.derived, topics.tenants]


@dataclass
class FoldResult:
    """What a fold of the log produced: the rebuilt namespace and its counts."""

    sessions: dict[str, dict[str, Any]]
    tenants: dict[str, dict[str, Any]]
    requested: set[str]  # compaction event ids the fold asks for
    written: set[str]  # compaction event ids live wrote
    records: int
    folded: int

    def merge(self, other: FoldResult) -> FoldResult:
        # Partitions are disjoint by key (a session, a tenant lives in one).
        return FoldResult(
            {**self.sessions, **other.sessions},
            {**self.tenants, **other.tenants},
            self.requested | other.requested,
            self.written | other.written,
            self.records + other.records,
            self.folded + other.folded,
        )


async def _fold_partitions(
    settings: Settings,
    bootstrap: str,
    stop_at: Mapping[TopicPartition, int] | None,
    partitions: Collection[int] | None,
    progress: Any = None,
) -> FoldResult:
    codec = Codec(registry_from_settings(settings.schema_registry_url))
    folder = LogFold(codec, memory_config(settings), InputRules.from_settings(settings))
    inputs = memory_inputs(settings)
    async for batch in read_topics(bootstrap, inputs, stop_at=stop_at, partitions=partitions):
        folder.fold(batch)
        if progress is not None:
            progress(folder.records)
    return folder.result()


def _fold_in_child(
    settings: Settings,
    bootstrap: str,
    stop_at: dict[TopicPartition, int] | None,
    partitions: list[int],
) -> FoldResult:
    return asyncio.run(_fold_partitions(settings, bootstrap, stop_at, partitions))


async def fold_log(
    settings: Settings,
    bootstrap: str,
    stop_at: Mapping[TopicPartition, int] | None = None,
    progress: Any = None,
    processes: int = 0,
) -> tuple[FoldResult, float]:
    """Fold the memory agents' inputs from offset zero to `stop_at` (default: the end).

    `processes` > 1 folds the partitions in that many processes (a partition
    holds whole sessions and tenants, so the folds are independent); 0 = one
    per core. Returns the fold and the wall seconds it took, start-up included.
    """
    started = time.perf_counter()
    processes = processes or os.cpu_count() or 1
    partitions = sorted(
        {tp.partition for tp in await partitions_of(bootstrap, memory_inputs(settings))}
    )
    if processes <= 1 or len(partitions) <= 1:
        result = await _fold_partitions(settings, bootstrap, stop_at, None, progress)
        return result, time.perf_counter() - started
    groups = [partitions[i::processes] for i in range(min(processes, len(partitions)))]
    loop = asyncio.get_running_loop()
    stops = dict(stop_at) if stop_at is not None else None
    # spawn: a forked child would inherit this process's running event loop.
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _fold_in_child, settings, bootstrap, stops, group)
                for group in groups
            )
        )
    result = parts[0]
    for part in parts[1:]:
        result = result.merge(part)
    if progress is not None:
        progress(result.records)
    return result, time.perf_counter() - started


async def rebuild(
    settings: Settings,
    bootstrap: str,
    *,
    out_dir: Path | None = None,
    progress: Any = None,
) -> RebuildReport:
    """Fold the committed log prefix into a fresh namespace and diff it with live state."""
    inputs = memory_inputs(settings)
    for _attempt in range(ATTEMPTS):
        before = await _committed(settings, bootstrap, inputs)
        folder, fold_seconds = await fold_log(settings, bootstrap, before, progress)
        live_sessions = await _live_table(bootstrap, changelog_topic(settings, SESSION_TABLE))
        live_tenants = await _live_table(bootstrap, changelog_topic(settings, TENANT_TABLE))
        after = await _committed(settings, bootstrap, inputs)
        if after == before:
            break
    else:
        raise GovstreamError(
            f"the worker kept committing during {ATTEMPTS} attempts; "
            "rebuild when the log is idle (govstream lag --group processors --wait-zero)"
        )
    report = RebuildReport(records=folder.records, folded=folder.folded, fold_seconds=fold_seconds)
    _compare(SESSION_TABLE, live_sessions, folder.sessions, report)
    _compare(TENANT_TABLE, live_tenants, folder.tenants, report)
    report.keys[COMPACTIONS] = len(folder.requested | folder.written)
    for event_id in sorted(folder.requested ^ folder.written):
        where = "rebuilt" if event_id in folder.requested else "live"
        report.divergences.append(Divergence(COMPACTIONS, event_id, f"only in {where}"))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_namespace(out_dir, SESSION_TABLE, folder.sessions)
        _write_namespace(out_dir, TENANT_TABLE, folder.tenants)
        report.out_dir = out_dir
    return report
