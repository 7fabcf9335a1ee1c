"""Sends to the internal topics (budget-input, session-signals) outside Faust's transactions.

Why not Faust's transactional send: Faust picks the transactional id from the
destination partition, so an agent that writes to another partition of a
co-partitioned topic (a session's event forwarded to its tenant's partition)
writes into a transaction that only that partition's commits close. On this
stack that left transactions open until the broker's transaction timeout and
fenced the producer (ProducerFenced on the table changelog, then "Can't send
messages while not in transaction"): measured with two agents, reproduced
every run.

So these records go through one idempotent producer (acks=all), and
`install` makes every Faust transaction commit flush it first: a record
forwarded while processing an event is on the broker before that event's
offset is committed. A crash between the two re-processes the event and
forwards it again. Each forward carries its source position (header
govstream-source: partition, offset, index), and the budget processor keeps
per source partition the highest position it applied: a re-forward is
recognised exactly, however many events ago it was first applied. The
receivers are idempotent besides (ledger keys, reservation and holder ids,
signal idempotency keys).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust
from mode import Service

from events.emitter import Emitter
from events.provenance import RecordSigner
from govstream.settings import Settings

SOURCE_HEADER = "govstream-source"


@dataclass(frozen=True, order=True)
class SourcePosition:
    """Where a forwarded record came from: source partition, offset, and its index
    among the records forwarded for that offset (an event and its decision)."""

    partition: int
    offset: int
    index: int = 0

    def encode(self) -> bytes:
        return f"{self.partition}:{self.offset}:{self.index}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> SourcePosition:
        partition, offset, index = (int(part) for part in raw.decode().split(":"))
        return cls(partition, offset, index)

    @classmethod
    def from_headers(cls, headers: Any) -> SourcePosition | None:
        items = headers.items() if isinstance(headers, dict) else (headers or ())
        for name, raw in items:
            if name == SOURCE_HEADER and raw is not None:
                return cls.decode(raw)
        return None


class Forwarder(Service):
    """Every record it sends carries the worker's signature (events/provenance.py)."""

    def __init__(self, bootstrap: str, settings: Settings, signer: RecordSigner) -> None:
        super().__init__()
        self.bootstrap, self.settings, self.signer = bootstrap, settings, signer
        self._emitter: Emitter | None = None
        self._start_lock: asyncio.Lock | None = None

    async def _ensure_emitter(self) -> Emitter:
        if self._emitter is None:
            # Created on first use: aiokafka binds to the running loop.
            self._start_lock = self._start_lock or asyncio.Lock()
            async with self._start_lock:
                if self._emitter is None:
                    emitter = Emitter(
                        self.bootstrap,
                        schema_registry_url=self.settings.schema_registry_url,
                        linger_ms=1,
                        client_id="govstream-forwarder",
                    )
                    await emitter.start()
                    self._emitter = emitter
        return self._emitter

    async def enqueue(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int | None = None,
        source: SourcePosition | None = None,
    ) -> Awaitable[Any]:
        """Hand a record over; delivered before the next transaction commit.

        `timestamp_ms` keeps the log time of the event forwarded (the profile
        join downstream is by log time); `source` its position in the source
        topic, so the receiver can drop a re-forward after a crash.
        """
        emitter = await self._ensure_emitter()
        headers = [self.signer.header(key, value)]
        if source is not None:
            headers.append((SOURCE_HEADER, source.encode()))
        return await emitter.enqueue(topic, value, key, timestamp_ms=timestamp_ms, headers=headers)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send and wait for the broker's ack."""
        await (await self.enqueue(topic, key, value))

    async def flush(self) -> None:
        if self._emitter is not None:
            await self._emitter.flush()

    async def on_stop(self) -> None:
        if self._emitter is not None:
            await self._emitter.stop()
            self._emitter = None

    def install(self, app: faust.App) -> None:
        """Flush before every offset commit, transactional or not.

        Under exactly_once Faust commits through producer.commit_transactions;
        under at_least_once it flushes its producer first, then commits.
        """
        producer = app.producer
        commit, flush = producer.commit_transactions, producer.flush

        async def flush_then_commit(*args: Any, **kwargs: Any) -> None:
            await self.flush()
            await commit(*args, **kwargs)

        async def flush_both() -> None:
            await self.flush()
            await flush()

        producer.commit_transactions = flush_then_commit  # type: ignore[method-assign]
        producer.flush = flush_both  # type: ignore[method-assign]
