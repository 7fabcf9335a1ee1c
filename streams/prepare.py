"""The sink's CPU-bound stage: records -> validated events -> JSON row blocks.

`prepare_batch` is a plain function so the sink can run it in a process pool
(the GIL would otherwise serialize decoding with everything else in the
worker) or in-process. It does no I/O: it decodes and validates each record,
turns failures into dead letters, and serializes the rows of each table as
JSONCompactEachRow, which ClickHouse parses in C++.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import orjson

from events.codec import Codec
from events.registry import registry_from_settings
from projections.redaction import Redactor
from streams.ingest import InputRules, Rejected, SourceRecord, ingest
from streams.rows import build_batch, use_redactor

# SourceRecord's fields in order (topic, partition, offset, timestamp_ms, value,
# key, headers) as a plain tuple: cheap to pickle to the decoder processes.
RawRecord = tuple[str, int, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]

# Tables whose rows travel as JSON; dead_letters carry raw bytes, which JSON
# cannot hold, so their rows go through the driver's binary insert. The sink
# inserts them in this order: the archive, the record of what has been sunk,
# last.
JSON_TABLES = (
    "turns",
    "sessions",
    "tool_proposals",
    "tool_completions",
    "policy_decisions",
    "admission_decisions",
    "session_transitions",
    "budget_events",
    "duplicates_suppressed",
    "events_archive",
)


@dataclass
class PreparedBatch:
    records: int
    bodies: dict[str, bytes]  # table -> JSONCompactEachRow block
    rows: dict[str, int]  # table -> row count
    dead_letter_rows: list[tuple[object, ...]]
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # key, value
    dead_letter_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


_codec: Codec | None = None
_rules: InputRules | None = None


def _exit_with_parent() -> None:
    """A decoder must not outlive its worker, even one killed with SIGKILL."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        # Linux: the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG = 1).
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)

    def watch() -> None:  # elsewhere, or if the parent died before prctl
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_process(
    schema_registry_url: str | None,
    max_record_bytes: int,
    rules: InputRules,
    redaction_patterns: dict[str, str] | None = None,
) -> None:
    """Pool initializer: one codec (and schema cache) per process, the input and
    redaction rules."""
    global _codec, _rules
    _exit_with_parent()
    _codec = Codec(registry_from_settings(schema_registry_url), max_record_bytes=max_record_bytes)
    _rules = rules
    use_redactor(Redactor.build(redaction_patterns))


def prepare_batch(
    records: list[RawRecord], codec: Codec | None = None, rules: InputRules | None = None
) -> PreparedBatch:
    started = time.perf_counter()
    codec = codec or _codec
    rules = rules or _rules
    if codec is None or rules is None:
        raise RuntimeError("prepare_batch needs init_process or a codec and rules")
    items = [ingest(codec, SourceRecord(*r), rules) for r in records]
    batch = build_batch(items)
    prepared = PreparedBatch(
        records=len(records),
        bodies={t: b"\n".join(map(orjson.dumps, batch.rows[t])) for t in JSON_TABLES},
        rows={t: len(r) for t, r in batch.rows.items()},
        dead_letter_rows=batch.rows["dead_letters"],
    )
    for item in items:
        if isinstance(item, Rejected):
            letter = item.dead_letter
            prepared.dead_letters.append((item.source.key, codec.encode(letter)))
            prepared.dead_letter_reasons.append(
                f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}: "
                f"{letter.reason_code}: {letter.reason}"
            )
    prepared.seconds = time.perf_counter() - started
    return prepared
