"""Per-minute rollups: refreshed from the deduplicated tables, exact counts, drift-free views
(and the tenant profiles' view of the archive)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from govstream.settings import Settings
from sql.client import open_clickhouse
from sql.migrate import apply_migrations

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
TURN_COLUMNS = ["event_id", "occurred_at", "tenant_id", "session_id", "workflow_id",
                "environment", "model", "prompt_version", "input_tokens", "output_tokens",
                "cost_usd_micros", "first_token_ms", "latency_ms", "outcome", "error_class",
                "attempt", "idempotency_key"]  # fmt: skip


def _turns() -> list[tuple[Any, ...]]:
    rng = random.Random(7)
    rows = []
    for n in range(3_000):
        tenant = f"t-{n % 3}"
        at = NOW + timedelta(seconds=rng.randrange(0, 600))  # ten minutes
        outcome = rng.choice(["ok"] * 8 + ["error", "cancelled"])
        rows.append((f"e-{n}", at, tenant, f"s-{tenant}", None, "production",
                     rng.choice(["gpt-4o", "claude-haiku-4"]), "v1", rng.randrange(1, 900),
                     rng.randrange(1, 300), rng.randrange(10, 5000), rng.randrange(50, 900),
                     rng.randrange(100, 20000), outcome, None, 1, f"k-{n}"))  # fmt: skip
    return rows


def _refresh(ch: Any, view: str) -> None:
    ch.command(f"SYSTEM REFRESH VIEW {view}")
    ch.command(f"SYSTEM WAIT VIEW {view}")


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(home=tmp_path_factory.mktemp("rollups"), clickhouse_database="rollups")
    with open_clickhouse(settings, role="owner") as clickhouse:
        apply_migrations(clickhouse)
        clickhouse.insert(
            "sessions",
            [
                (
                    f"s-t-{i}",
                    f"t-{i}",
                    None,
                    "ABC"[i],
                    "team",
                    "u",
                    "v1",
                    "production",
                    NOW,
                    f"e-s-{i}",
                    1,
                )
                for i in range(3)
            ],
            [
                "session_id",
                "tenant_id",
                "workflow_id",
                "tier",
                "plan",
                "actor_id",
                "policy_version",
                "environment",
                "started_at",
                "event_id",
                "attempt",
            ],
        )
        clickhouse.insert("turns", _turns(), TURN_COLUMNS)
        _refresh(clickhouse, "turns_per_minute_refresh")
        yield clickhouse


def _rollup(ch: Any) -> dict[tuple[str, datetime], tuple[int, int, int, int]]:
    rows = ch.query(
        "SELECT tenant_id, minute, countMerge(turns), sumMerge(failed), sumMerge(cancelled),"
        " sumMerge(cost_usd_micros) FROM turns_per_minute GROUP BY tenant_id, minute"
    ).rows
    return {(t, m.replace(tzinfo=UTC)): (n, f, c, cost) for t, m, n, f, c, cost in rows}


def _expected() -> dict[tuple[str, datetime], tuple[int, int, int, int]]:
    acc: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in _turns():
        key = (row[2], row[1].replace(second=0))
        acc[key][0] += 1
        acc[key][1] += row[13] in ("error", "timeout")
        acc[key][2] += row[13] == "cancelled"
        acc[key][3] += row[10]
    return {k: tuple(v) for k, v in acc.items()}  # type: ignore[misc]


def test_counts_and_sums_per_tenant_minute_are_exact(ch: Any) -> None:
    assert _rollup(ch) == _expected()


def test_redelivered_rows_do_not_double_count(ch: Any) -> None:
    ch.insert("turns", _turns()[:1000], TURN_COLUMNS)  # the sink inserting a batch again
    _refresh(ch, "turns_per_minute_refresh")
    assert _rollup(ch) == _expected()


def test_latency_quantile_states_are_close_to_exact(ch: Any) -> None:
    rows = ch.query(
        "SELECT tenant_id, quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms)"
        " FROM turns_per_minute GROUP BY tenant_id ORDER BY tenant_id"
    ).rows
    for tenant, (p50, p95, p99) in rows:
        values = sorted(r[12] for r in _turns() if r[2] == tenant)
        exact = [values[int(q * len(values))] for q in (0.5, 0.95, 0.99)]
        # t-digest: documented as approximate; on 1,000 values it stays within 2% of the range.
        for got, want in zip((p50, p95, p99), exact, strict=True):
            assert abs(got - want) <= 0.02 * 20_000, (tenant, got, want)


def test_every_view_selects_exactly_its_target_columns(ch: Any) -> None:
    views = ch.query(
        "SELECT name, as_select FROM system.tables WHERE database = currentDatabase()"
        " AND engine = 'MaterializedView' ORDER BY name"
    ).rows
    targets = {
        "decisions_per_minute_refresh": "decisions_per_minute",
        "tenant_profiles_from_archive": "tenant_profiles",
        "turns_per_minute_refresh": "turns_per_minute",
    }
    assert [name for name, _ in views] == list(targets)
    for name, select in views:
        target = targets[name]
        selected = ch.query(f"DESCRIBE TABLE ({select})").rows
        columns = ch.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
            " AND table = {t:String} ORDER BY position",
            {"t": target},
        ).rows
        assert [(r[0], r[1]) for r in selected] == [tuple(c) for c in columns], name


def test_tenant_profiles_follow_the_archive_and_the_backfill_adds_only_what_is_missing(
    ch: Any,
) -> None:
    """0009: a profile inserted into the archive (twice, as a redelivery does) lands in
    tenant_profiles; the migration's backfill copies the archive's profiles that are
    not there yet and nothing twice; readers' argMax takes each tenant's latest."""
    from sql.migrate import load_migrations

    columns = ["topic", "partition", "offset", "event_id", "event_type", "schema_id",
               "tenant_id", "session_id", "occurred_at", "payload"]  # fmt: skip

    def profile(offset: int, tenant: str, minutes: int, limit: int) -> tuple[Any, ...]:
        payload = f'{{"budgets": {{"cost_per_day_usd_micros": {limit}}}}}'
        at = NOW + timedelta(minutes=minutes)
        return ("t.tenants", 0, offset, f"p-{offset}", "TenantProfileUpdated", 1, tenant, "",
                at, payload)  # fmt: skip

    older, newer = profile(1, "t-p", 0, 5_000_000), profile(2, "t-p", 5, 7_000_000)
    ch.insert("events_archive", [older, older], columns)  # a redelivered batch
    ch.command("TRUNCATE TABLE tenant_profiles")  # as before 0009: the archive only
    (backfill,) = [m for m in load_migrations() if m.name == "0009_tenant_profiles.sql"]
    for _ in range(2):  # a migration that failed half-way runs again from the start
        ch.command(backfill.statements[-1])
    ch.insert("events_archive", [newer, newer], columns)
    rows = ch.query(
        "SELECT event_id, count() FROM tenant_profiles WHERE tenant_id = 't-p'"
        " GROUP BY event_id ORDER BY event_id"
    ).rows
    # p-1 once although the backfill ran twice; p-2 from the view (a redelivered copy is
    # one row once merged, and changes no argMax meanwhile).
    assert [event for event, _ in rows] == ["p-1", "p-2"] and rows[0][1] == 1
    latest = ch.query(
        "SELECT JSONExtract(argMax(payload, occurred_at), 'budgets',"
        " 'cost_per_day_usd_micros', 'Int64') FROM tenant_profiles WHERE tenant_id = 't-p'"
    ).scalar()
    assert latest == 7_000_000
