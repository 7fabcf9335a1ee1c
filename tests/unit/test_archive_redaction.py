"""Free text is redacted before the archive payload reaches ClickHouse."""

from __future__ import annotations

import orjson

from events.models import TaskSummaryUpdated
from streams.rows import archived_payload
from tests.factories import T0, turn

SECRETS = {
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
}


def _payload(event: object) -> dict:  # type: ignore[type-arg]
    return orjson.loads(orjson.dumps(archived_payload(event)))  # type: ignore[arg-type]


def test_turn_content_is_redacted_and_the_redaction_recorded() -> None:
    text = "Mail " + SECRETS["email"] + ", card " + SECRETS["card"] + ", key " + SECRETS["api_key"]
    payload = _payload(turn(content=text))
    raw = orjson.dumps(payload).decode()
    assert not any(secret in raw for secret in SECRETS.values())
    assert "[REDACTED:email]" in payload["content"] and "[REDACTED:card]" in payload["content"]
    assert payload["redaction"]["content"]["counts"] == {"api_key": 1, "card": 1, "email": 1}


def test_text_without_secrets_passes_unchanged() -> None:
    event = turn(content="The report is attached; 3 anomalies need review.")
    assert _payload(event) == orjson.loads(event.model_dump_json())
    assert "redaction" not in _payload(turn(content=None))


def test_task_summaries_are_redacted_field_by_field() -> None:
    event = TaskSummaryUpdated(
        event_id="e-1", occurred_at=T0, tenant_id="t-1", session_id="s-1", idempotency_key="k-1",
        objective="Refund " + SECRETS["email"], decisions=["call back"],
        facts=["card on file " + SECRETS["card"], "prefers mail"],
    )  # fmt: skip
    payload = _payload(event)
    raw = orjson.dumps(payload).decode()
    assert not any(secret in raw for secret in SECRETS.values())
    assert payload["decisions"] == ["call back"]
    assert payload["facts"][1] == "prefers mail"
    assert set(payload["redaction"]) == {"objective", "facts"}


def test_typed_rows_are_built_from_the_redacted_event() -> None:
    from events.codec import Codec
    from events.models import SessionSuspended, ToolCallCompleted
    from events.registry import EmbeddedRegistry
    from streams.ingest import ingest
    from streams.rows import TABLE_COLUMNS, build_batch
    from tests.factories import RULES, source

    codec = Codec(EmbeddedRegistry())
    env = {"occurred_at": T0, "tenant_id": "t-1", "session_id": "s-1"}
    events = [
        SessionSuspended(**env, event_id="e-1", idempotency_key="k-1",
                         reason=f"operator saw {SECRETS['email']}"),
        ToolCallCompleted(**env, event_id="e-2", idempotency_key="k-2", operation_key="op",
                          status="succeeded", latency_ms=1,
                          result_ref=f"https://x.example/r?key={SECRETS['api_key']}"),
    ]  # fmt: skip
    items = [ingest(codec, source(codec.encode(e), key=b"t-1"), RULES) for e in events]
    rows = build_batch(items).rows
    text = repr(rows)
    assert not any(secret in text for secret in SECRETS.values())
    (transition,) = rows["session_transitions"]
    reason = transition[TABLE_COLUMNS["session_transitions"].index("reason")]
    assert reason == "operator saw [REDACTED:email]"
