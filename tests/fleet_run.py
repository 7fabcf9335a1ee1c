"""A seeded fleet run through a real worker into ClickHouse, shared by tests.

:func:`fleet_run` starts one worker with all agents (sink and processors),
sends a simulated fleet, waits until both consumer groups are at zero lag and
the sink has committed all of the derived topic (partly written inside Kafka
transactions: its lag must be exactly zero, no transaction marker left
behind), reads the derived topic back and yields a :class:`Run` with a
ClickHouse client. Used by test_analytics_tables.py and test_dashboards.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord

from events.codec import Codec
from events.models import Event, SessionEvent
from events.registry import EmbeddedRegistry
from events.topics import Topics
from govstream.commands.lag import wait_for_zero_lag
from govstream.commands.simulate import run_simulation
from govstream.settings import Settings
from govstream.simulate import FleetConfig
from sql.client import ClickHouse, open_clickhouse
from streams.admin import group_lag
from tests.conftest import Backend, running_worker
from tests.kafka_io import read_topic


@dataclass
class Run:
    settings: Settings
    truth: dict[str, Any]
    ch: ClickHouse
    records: list[ConsumerRecord]  # the derived topic
    derived: list[SessionEvent]

    def of(self, kind: type[Event] | tuple[type[Event], ...]) -> dict[str, Any]:
        """Derived events of `kind` by event_id (redelivered records are one event)."""
        return {e.event_id: e for e in self.derived if isinstance(e, kind)}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.ch.query(sql).rows]


async def wait_for_sink_on_derived(settings: Settings, bootstrap: str, timeout: float) -> None:
    """`govstream lag` watches the sink on the producer topics; the derived topic too."""
    deadline = time.monotonic() + timeout
    topic = Topics(settings.topic_prefix).derived
    while True:
        rows = await group_lag(bootstrap, settings.sink_group, [topic])
        lag = sum(row.lag for row in rows)
        if lag == 0 and all(row.committed >= 0 for row in rows if row.end > 0):
            return
        assert time.monotonic() < deadline, f"sink lag on {topic} still {lag}: {rows}"
        await asyncio.sleep(0.5)


@contextmanager
def fleet_run(
    backend: Backend,
    brokers: Any,
    clickhouse_servers: Any,
    base: Path,
    fleet: FleetConfig,
    **overrides: object,
) -> Iterator[Run]:
    """Run `fleet` through a fresh worker (own topics, groups and database); `overrides`
    are settings (API keys, say)."""
    bootstrap = brokers.bootstrap(backend.kafka)
    # Backlog samples every second: the backlog panel has rows by the time the run is read.
    with running_worker(
        backend, brokers, clickhouse_servers, base, backlog_interval_seconds=1, **overrides
    ) as (settings, _):
        truth = asyncio.run(run_simulation(settings, fleet, progress=False))
        # Twice, with a pause: a forward between the processors can add lag back.
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=180, which="all"))
        time.sleep(2.0)
        asyncio.run(wait_for_zero_lag(settings, bootstrap, timeout=180, which="all"))
        asyncio.run(wait_for_sink_on_derived(settings, bootstrap, timeout=120))
        records = asyncio.run(read_topic(bootstrap, Topics(settings.topic_prefix).derived))
        codec = Codec(EmbeddedRegistry())
        derived = [codec.decode(r.value).event for r in records]
        assert all(isinstance(e, SessionEvent) for e in derived)
        ch = open_clickhouse(settings, role="client")
        try:
            yield Run(settings, truth, ch, records, derived)  # type: ignore[arg-type]
        finally:
            ch.close()
