"""The sink's prepare stage (pure): rows as JSON blocks, dead letters encoded."""

from __future__ import annotations

import json

from events.codec import Codec
from events.models import RecordDeadLettered
from events.registry import EmbeddedRegistry
from streams.prepare import RawRecord, prepare_batch
from streams.rows import TABLE_COLUMNS
from tests.factories import RULES, T0_MS, session_started, tenant_profile, turn

CODEC = Codec(EmbeddedRegistry())


def _raw(
    value: bytes | None, offset: int, topic: str = "gs.sessions", key: bytes = b"t-001"
) -> RawRecord:
    return (topic, 1, offset, T0_MS, value, key, ())


def test_prepare_serializes_each_table_and_encodes_dead_letters() -> None:
    records = [
        _raw(CODEC.encode(session_started(attempt=2)), 0),
        _raw(CODEC.encode(turn(input_tokens=7)), 1),
        _raw(CODEC.encode(turn(input_tokens=8)), 2),
        _raw(CODEC.encode(tenant_profile()), 3, "gs.tenants", b"t-001"),
        _raw(b"junk", 4),
    ]
    batch = prepare_batch(records, CODEC, RULES)
    assert batch.records == 5
    assert {t: n for t, n in batch.rows.items() if n} == {
        "events_archive": 4, "sessions": 1, "session_transitions": 1, "turns": 2,
        "dead_letters": 1,
    }  # fmt: skip
    turns = [json.loads(line) for line in batch.bodies["turns"].splitlines()]
    columns = TABLE_COLUMNS["turns"]
    assert [dict(zip(columns, row, strict=True))["input_tokens"] for row in turns] == [7, 8]
    (session,) = [json.loads(line) for line in batch.bodies["sessions"].splitlines()]
    session_row = dict(zip(TABLE_COLUMNS["sessions"], session, strict=True))
    assert (session_row["session_id"], session_row["attempt"]) == ("s-1", 2)  # first attempt wins
    archive = [json.loads(line) for line in batch.bodies["events_archive"].splitlines()]
    payload = archive[1][TABLE_COLUMNS["events_archive"].index("payload")]
    assert payload["input_tokens"] == 7  # a JSON document, not a string escaped twice
    ((key, value),) = batch.dead_letters
    letter = CODEC.decode(value).event
    assert isinstance(letter, RecordDeadLettered)
    assert (key, letter.source_offset, letter.reason_code) == (b"t-001", 4, "bad_framing")
    assert "gs.sessions/1/4: bad_framing" in batch.dead_letter_reasons[0]


def test_an_empty_batch_prepares_to_nothing() -> None:
    batch = prepare_batch([], CODEC, RULES)
    assert batch.records == 0
    assert all(body == b"" for body in batch.bodies.values())
