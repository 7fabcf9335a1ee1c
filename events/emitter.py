"""The emitter SDK agent runtimes import to append events to the log.

    async with Emitter("127.0.0.1:9092") as emitter:
        await emitter.emit(TurnCompleted(...))

Events are validated (they are pydantic models, or dicts validated on the way
in) and encoded before anything is sent. The producer is idempotent with
acks=all, so a retry inside the client never duplicates a record; each event
goes to its topic keyed by session_id (tenant_id for tenant profiles), which
keeps one tenant's events in order on one partition.

Tenant profiles are admin records. An emitter given the deployment's record
signer (`signer=`, what the admin tools pass) writes them signed into the
tenant's log, where the governor folds them at that position; without one
they go to the tenants topic and the governor relays them into the tenant's
log when it reads them (DESIGN "The governor").

`SyncEmitter` wraps it for code without an event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from events import kafka_security
from events.codec import Codec
from events.jsonl import parse_event
from events.kafka_security import KafkaSecurity
from events.models import TenantProfileUpdated
from events.provenance import RecordSigner
from events.registry import SchemaRegistry, registry_from_settings
from events.topics import Topics

Header = tuple[str, bytes]


class Emitter:
    def __init__(
        self,
        bootstrap: str,
        *,
        topics: Topics | None = None,
        registry: SchemaRegistry | None = None,
        schema_registry_url: str | None = None,
        codec: Codec | None = None,
        linger_ms: int = 5,
        client_id: str = "govstream-emitter",
        signer: RecordSigner | None = None,
        security: KafkaSecurity | None = None,
        **producer_options: Any,
    ) -> None:
        self.topics = topics or Topics()
        self.signer = signer
        self.codec = codec or Codec(registry or registry_from_settings(schema_registry_url))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **(security or kafka_security.current()).client_options(),
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            **producer_options,
        )
        self.sent = 0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Emitter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def prepare(
        self, event: BaseModel | dict[str, Any]
    ) -> tuple[str, bytes, bytes, list[Header] | None]:
        """Validate, route and encode: (topic, key, value, headers) ready to enqueue."""
        if isinstance(event, dict):
            event = parse_event(event)
        topic, key = self.topics.route(event)
        value = self.codec.encode(event)
        if isinstance(event, TenantProfileUpdated) and self.signer is not None:
            # Signed straight into the tenant's log: folded where the admin put it.
            return (
                self.topics.sessions,
                key.encode(),
                value,
                [self.signer.header(key.encode(), value)],
            )
        return topic, key.encode(), value, None

    async def emit(self, event: BaseModel | dict[str, Any]) -> None:
        """Send one event and wait until the broker has it (acks=all)."""
        topic, key, value, headers = self.prepare(event)
        await (await self._producer.send(topic, value=value, key=key, headers=headers))
        self.sent += 1

    async def emit_many(
        self,
        events: Iterable[BaseModel | dict[str, Any]],
        *,
        on_progress: Callable[[int], None] | None = None,
        window: int = 5000,
    ) -> int:
        """Send events pipelined (at most `window` unacknowledged); return how many.

        Everything is validated and encoded before the first send, so an
        invalid event raises and nothing of the batch reaches Kafka.
        """
        prepared = [self.prepare(e) for e in events]
        pending: list[Awaitable[Any]] = []
        for topic, key, value, headers in prepared:
            pending.append(await self._producer.send(topic, value=value, key=key, headers=headers))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                self.sent += len(pending)
                pending.clear()
                if on_progress:
                    on_progress(self.sent)
        if pending:
            await asyncio.gather(*pending)
            self.sent += len(pending)
            if on_progress:
                on_progress(self.sent)
        return len(prepared)

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        *,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Hand a record to the producer without waiting; returns its delivery future.

        Records handed over in order keep that order per partition (the
        idempotent producer never reorders), so callers can pipeline.
        """
        return await self._producer.send(
            topic, value=value, key=key, timestamp_ms=timestamp_ms, headers=headers
        )

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are (tests and drills that need malformed records)."""
        await (await self._producer.send(topic, value=value, key=key))

    async def flush(self) -> None:
        await self._producer.flush()


class SyncEmitter:
    """A blocking facade: the Emitter runs on an event loop in a daemon thread."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._emitter: Emitter = self._call(self._make(bootstrap, options))
        self._call(self._emitter.start())

    @staticmethod
    async def _make(bootstrap: str, options: dict[str, Any]) -> Emitter:
        return Emitter(bootstrap, **options)  # built on the loop that will run it

    def _call(self, coro: Awaitable[Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result()

    def emit(self, event: BaseModel | dict[str, Any]) -> None:
        self._call(self._emitter.emit(event))

    def emit_many(self, events: Iterable[BaseModel | dict[str, Any]]) -> int:
        return self._call(self._emitter.emit_many(list(events)))

    def close(self) -> None:
        try:
            self._call(self._emitter.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> SyncEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
