"""`govstream replay rebuild`: the governor's whole state and every derived event again
from offset zero, compared with live byte for byte.

The live governor (streams/governor.py) and this rebuild run the same fold
(projections/governor/fold.py) over the same records of the tenant log, so
they must agree on every state key and every derived event, signatures
included. The rebuild:

1. reads the governor group's committed offsets on the tenant log: the exact
   prefix live state has folded (the changelog records and the derived events
   commit in the same transaction as those offsets);
2. folds each partition's prefix from offset zero into its own namespace (a
   directory of canonical JSON lines, `<home>/rebuild/<run>/` unless --out
   says where), one process per core over disjoint partitions;
3. reads the live state (the last changelog value per key) and the live
   derived events of each partition;
4. reads the committed offsets again: a worker that committed meanwhile tore
   the snapshot, and the whole comparison is retried;
5. compares every key and the derived events in log order.

Exit 0 when all of it is byte-identical, 1 on any divergence (the first
differing key and field, or the first differing derived event, is printed).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from events.codec import Codec
from events.registry import registry_from_settings
from events.topics import Topics
from govstream.errors import GovstreamError
from govstream.settings import Settings
from projections.governor.config import GovernorConfig
from projections.governor.fold import step
from projections.governor.state import PartitionState
from streams.admin import group_lag, partitions_of
from streams.ingest import Ingested, InputRules, ingest
from streams.log_reader import read_topics

__all__ = [
    "Divergence",
    "FoldResult",
    "RebuildReport",
    "first_difference",
    "fold_log",
    "fold_records",
    "rebuild",
]

DERIVED = "derived-events"
STATE = "governor-state"
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
    folded: int = 0  # records the fold applied
    keys: dict[str, int] = field(default_factory=dict)  # what was compared -> how many
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


@dataclass
class FoldResult:
    """What a fold of the log produced: the state and the derived events per partition."""

    state: dict[str, bytes]  # key -> canonical bytes
    derived: dict[int, list[bytes]]  # partition -> encoded derived events, in order
    records: int
    folded: int

    def merge(self, other: FoldResult) -> FoldResult:
        # Partitions are disjoint: a tenant lives in one.
        return FoldResult(
            {**self.state, **other.state},
            {**self.derived, **other.derived},
            self.records + other.records,
            self.folded + other.folded,
        )


def fold_records(
    number: int, records: Any, codec: Codec, rules: InputRules, config: GovernorConfig
) -> tuple[PartitionState, list[Any], int, int]:
    """The governor's fold over partition `number`'s records, as the live worker
    folds them: (state, derived events, records read, records folded)."""
    state = PartitionState(number)
    derived: list[Any] = []
    read = folded = 0
    for record in records:
        read += 1
        item = ingest(codec, record, rules)
        if not isinstance(item, Ingested):
            continue
        folded += 1
        derived.extend(step(state, item.event, record.timestamp_ms, config).derived)
    state.commit()
    return state, derived, read, folded


async def _fold_partitions(
    settings: Settings,
    config: GovernorConfig,
    bootstrap: str,
    stop_at: Mapping[TopicPartition, int] | None,
    partitions: list[int],
) -> FoldResult:
    codec = Codec(registry_from_settings(settings.schema_registry_url))
    rules = InputRules.from_settings(settings)
    topic = Topics(settings.topic_prefix).sessions
    result = FoldResult({}, {}, 0, 0)
    for number in partitions:
        records: list[Any] = []
        async for batch in read_topics(bootstrap, [topic], stop_at=stop_at, partitions=[number]):
            records.extend(batch)
        state, derived, read, folded = fold_records(number, records, codec, rules, config)
        part = FoldResult(
            state.snapshot(), {number: [codec.encode(e) for e in derived]}, read, folded
        )
        result = result.merge(part)
    return result


def _fold_in_child(
    settings: Settings,
    config: GovernorConfig,
    bootstrap: str,
    stop_at: dict[TopicPartition, int] | None,
    partitions: list[int],
) -> FoldResult:
    return asyncio.run(_fold_partitions(settings, config, bootstrap, stop_at, partitions))


async def fold_log(
    settings: Settings,
    config: GovernorConfig,
    bootstrap: str,
    stop_at: Mapping[TopicPartition, int] | None = None,
    processes: int = 0,
) -> tuple[FoldResult, float]:
    """Fold the tenant log from offset zero to `stop_at` (default: the end).

    `processes` > 1 folds the partitions in that many processes (a partition
    holds whole tenants, so the folds are independent); 0 = one per core.
    Returns the fold and the wall seconds it took, start-up included.
    """
    started = time.perf_counter()
    topic = Topics(settings.topic_prefix).sessions
    partitions = sorted({tp.partition for tp in await partitions_of(bootstrap, [topic])})
    processes = min(processes or os.cpu_count() or 1, len(partitions))
    stops = dict(stop_at) if stop_at is not None else None
    if processes <= 1:
        result = await _fold_partitions(settings, config, bootstrap, stops, partitions)
        return result, time.perf_counter() - started
    groups = [partitions[i::processes] for i in range(processes)]
    loop = asyncio.get_running_loop()
    # spawn: a forked child would inherit this process's running event loop.
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool, _fold_in_child, settings, config, bootstrap, stops, group
                )
                for group in groups
            )
        )
    result = parts[0]
    for part in parts[1:]:
        result = result.merge(part)
    return result, time.perf_counter() - started


async def _committed(settings: Settings, bootstrap: str) -> dict[TopicPartition, int]:
    topics = Topics(settings.topic_prefix)
    rows = await group_lag(bootstrap, settings.governor_group, [topics.sessions])
    return {TopicPartition(r.topic, r.partition): max(r.committed, 0) for r in rows}


async def live_state(bootstrap: str, topic: str) -> dict[str, bytes]:
    """The last committed value per key of the governor's changelog (a tombstone
    removes the key)."""
    state: dict[str, bytes] = {}
    try:
        async for batch in read_topics(bootstrap, [topic]):
            for record in batch:
                if record.key is None:
                    continue
                key = record.key.decode()
                if record.value:
                    state[key] = record.value
                else:
                    state.pop(key, None)
    except GovstreamError:
        return {}  # no changelog yet: no live state
    return state


async def live_derived(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    """Every committed derived event, per partition, in log order."""
    out: dict[int, list[bytes]] = {}
    try:
        async for batch in read_topics(bootstrap, [topic]):
            for record in batch:
                out.setdefault(record.partition, []).append(record.value or b"")
    except GovstreamError:
        return {}
    return out


def _compare_state(
    live: Mapping[str, bytes], rebuilt: Mapping[str, bytes], report: RebuildReport
) -> None:
    keys = sorted(set(live) | set(rebuilt))
    report.keys[STATE] = len(keys)
    for key in keys:
        if key not in live:
            report.divergences.append(Divergence(STATE, key, "only in rebuilt state"))
        elif key not in rebuilt:
            report.divergences.append(Divergence(STATE, key, "only in live state"))
        elif live[key] != rebuilt[key]:
            detail = first_difference(json.loads(live[key]), json.loads(rebuilt[key]))
            report.divergences.append(Divergence(STATE, key, detail))


def _compare_derived(
    live: Mapping[int, list[bytes]],
    rebuilt: Mapping[int, list[bytes]],
    codec: Codec,
    report: RebuildReport,
) -> None:
    report.keys[DERIVED] = sum(len(v) for v in rebuilt.values())
    for number in sorted(set(live) | set(rebuilt)):
        ours, theirs = rebuilt.get(number, []), live.get(number, [])
        for index, (a, b) in enumerate(zip(theirs, ours, strict=False)):
            if a != b:
                live_event, rebuilt_event = codec.decode(a).event, codec.decode(b).event
                detail = first_difference(
                    live_event.model_dump(mode="json"), rebuilt_event.model_dump(mode="json")
                )
                report.divergences.append(
                    Divergence(DERIVED, f"partition {number} #{index}", detail)
                )
                break
        else:
            if len(theirs) != len(ours):
                report.divergences.append(
                    Divergence(
                        DERIVED,
                        f"partition {number}",
                        f"{len(theirs)} derived events live, {len(ours)} rebuilt",
                    )
                )


def _write_namespace(out_dir: Path, result: FoldResult) -> None:
    with (out_dir / f"{STATE}.jsonl").open("wb") as fh:
        for key in sorted(result.state):
            fh.write(
                b'{"key":' + json.dumps(key).encode() + b',"value":' + result.state[key] + b"}\n"
            )


async def rebuild(
    settings: Settings,
    config: GovernorConfig,
    bootstrap: str,
    *,
    out_dir: Path | None = None,
) -> RebuildReport:
    """Fold the committed log prefix into a fresh namespace and diff it with live."""
    topics = Topics(settings.topic_prefix)
    changelog = topics.governor_changelog(settings.governor_group)
    for _attempt in range(ATTEMPTS):
        before = await _committed(settings, bootstrap)
        result, fold_seconds = await fold_log(settings, config, bootstrap, before)
        state = await live_state(bootstrap, changelog)
        derived = await live_derived(bootstrap, topics.derived)
        after = await _committed(settings, bootstrap)
        if after == before:
            break
    else:
        raise GovstreamError(
            f"the worker kept committing during {ATTEMPTS} attempts; "
            "rebuild when the log is idle (govstream lag --group governor --wait-zero)"
        )
    report = RebuildReport(records=result.records, folded=result.folded, fold_seconds=fold_seconds)
    codec = Codec(registry_from_settings(settings.schema_registry_url))
    _compare_state(state, result.state, report)
    _compare_derived(derived, result.derived, codec, report)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_namespace(out_dir, result)
        report.out_dir = out_dir
    return report
