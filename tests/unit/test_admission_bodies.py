"""The admission API's request bodies and partitioning: pure, no Kafka."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.admission import Refusal, ToolBody, TurnBody, parse, partition_for

# --- admission: partitioning and request bodies -----------------------------------------------


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12, 50])
def test_partition_for_matches_the_default_partitioner(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    keys = [f"t-{n:03d}" for n in range(400)] + ["", "tenant/é", "租户", "a" * 200, "s-1"]
    got = [partition_for(key, partitions) for key in keys]
    assert got == [partitioner(key.encode(), every, every) for key in keys]
    assert set(got) == set(every)  # every partition is hit: not a constant


def _refusal(body_type: type[TurnBody | ToolBody], body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(Refusal) as caught:
        parse(body_type, raw)
    assert caught.value.status == 422
    return str(caught.value)


TURN = {"tenant": "t-001", "session": "s-1", "model": "gpt-4o", "estimated_tokens": 100}
TOOL = {"tenant": "t-001", "session": "s-1", "tool": "http_request", "action": "fetch",
        "operation_key": "op-1", "risk_level": "low"}  # fmt: skip


def test_valid_bodies_parse_with_defaults() -> None:
    body = parse(TurnBody, json.dumps(TURN).encode())
    assert body == TurnBody(**TURN)
    assert isinstance(body, TurnBody)
    assert (body.workflow, body.environment, body.estimated_tokens) == (None, "production", 100)
    tool = parse(ToolBody, json.dumps(TOOL).encode())
    assert isinstance(tool, ToolBody)
    assert (tool.method, tool.payload_bytes, tool.destination_host) == ("POST", 0, None)


@pytest.mark.parametrize(
    ("body_type", "body", "message"),
    [
        (TurnBody, {**TURN, "estimated_tokens": -1},
         "estimated_tokens: Input should be greater than or equal to 0"),
        (TurnBody, {**TURN, "estimated_tokens": 10_000_001},
         "estimated_tokens: Input should be less than or equal to 10000000"),
        (TurnBody, {**TURN, "priority": "high"}, "priority: Extra inputs are not permitted"),
        (TurnBody, {**TURN, "tenant": "t 001"}, "tenant: String should match pattern"),
        (TurnBody, {**TURN, "tenant": ""}, "tenant: String should have at least 1 character"),
        (TurnBody, {k: v for k, v in TURN.items() if k != "model"}, "model: Field required"),
        (TurnBody, b"{not json", "body: Invalid JSON"),
        (TurnBody, [TURN], "body: Input should be an object"),
        # Strict types: a number is a JSON number, not a string or a boolean.
        (TurnBody, {**TURN, "estimated_tokens": "100"}, "estimated_tokens: Input should be a"),
        (TurnBody, {**TURN, "estimated_tokens": True}, "estimated_tokens: Input should be a"),
        (TurnBody, {**TURN, "estimated_tokens": 1.5}, "estimated_tokens: Input should be a"),
        # Ids of the events' alphabet: never a path.
        (TurnBody, {**TURN, "session": "../../etc/passwd"}, "session: String should match"),
        (ToolBody, {**TOOL, "session": "s/../x"}, "session: String should match"),
        (ToolBody, {**TOOL, "risk_level": "extreme"}, "risk_level: Input should be 'low'"),
        (ToolBody, {**TOOL, "operation_key": "op 1"}, "operation_key: String should match"),
        (ToolBody, {**TOOL, "payload_bytes": -5}, "payload_bytes: Input should be greater"),
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_with_the_field_named(
    body_type: type[TurnBody | ToolBody], body: Any, message: str
) -> None:
    assert _refusal(body_type, body).startswith(message)


def test_parsed_bodies_are_frozen() -> None:
    body = TurnBody(**TURN)
    with pytest.raises(ValueError, match="frozen"):
        body.estimated_tokens = 5  # type: ignore[misc]
