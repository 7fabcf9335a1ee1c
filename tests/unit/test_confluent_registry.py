"""ConfluentRegistry against a Confluent-API registry server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from events.codec import Codec, DecodeError
from events.registry import (
    ConfluentRegistry,
    RegistryUnavailable,
    SchemaNotFound,
    registry_from_settings,
    subject_for,
)
from tests.factories import session_started, turn
from tests.registry_server import RegistryServer


@pytest.fixture
def server() -> Iterator[RegistryServer]:
    with RegistryServer() as srv:
        yield srv


def test_settings_select_the_registry() -> None:
    assert isinstance(registry_from_settings("http://127.0.0.1:1"), ConfluentRegistry)


def test_encode_registers_under_the_record_name_and_decode_fetches_by_id(
    server: RegistryServer,
) -> None:
    producer = Codec(ConfluentRegistry(server.url))
    data = producer.encode(turn(input_tokens=31))
    schema_id = int.from_bytes(data[1:5], "big")
    assert server.state.subjects[subject_for("TurnCompleted")] == [schema_id]

    consumer = Codec(ConfluentRegistry(server.url))  # a different process, say
    assert consumer.decode(data).event.input_tokens == 31  # type: ignore[attr-defined]
    assert ("GET", f"/schemas/ids/{schema_id}") in server.state.requests


def test_ids_are_cached_after_the_first_call(server: RegistryServer) -> None:
    codec = Codec(ConfluentRegistry(server.url))
    for n in range(5):
        codec.encode(session_started(session_id=f"s-{n}"))
    posts = [r for r in server.state.requests if r[0] == "POST"]
    assert len(posts) == 1


def test_lookup_without_auto_register(server: RegistryServer) -> None:
    registry = ConfluentRegistry(server.url, auto_register=False)
    with pytest.raises(SchemaNotFound):
        Codec(registry).encode(turn())
    Codec(ConfluentRegistry(server.url)).encode(turn())  # someone registers it
    assert Codec(ConfluentRegistry(server.url, auto_register=False)).encode(turn())[0] == 0


def test_latest_version(server: RegistryServer) -> None:
    registry = ConfluentRegistry(server.url)
    Codec(registry).encode(turn())
    latest = registry.latest(subject_for("TurnCompleted"))
    assert latest.version == 1
    assert latest.record_name == "TurnCompleted"


def test_unknown_id_is_an_unknown_schema_dead_letter(server: RegistryServer) -> None:
    codec = Codec(ConfluentRegistry(server.url))
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\x00\x00\x00\x30\x39" + b"\x02x")
    assert info.value.code == "unknown_schema"


def test_unreachable_registry_is_a_clear_error() -> None:
    codec = Codec(ConfluentRegistry("http://127.0.0.1:9", timeout=0.5))
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        codec.encode(turn())


def test_an_outage_is_not_a_verdict_on_the_record(server: RegistryServer) -> None:
    data = Codec(ConfluentRegistry(server.url)).encode(turn())
    offline = Codec(ConfluentRegistry("http://127.0.0.1:9", timeout=0.5))
    with pytest.raises(RegistryUnavailable):  # not DecodeError: no dead letter
        offline.decode(data)
