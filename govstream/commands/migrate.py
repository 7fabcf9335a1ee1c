"""`govstream migrate`: apply pending ClickHouse migrations (sql/migrations/NNNN_*.sql)."""

from __future__ import annotations

import argparse
from typing import Any

from govstream.settings import load


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="apply pending ClickHouse migrations",
        description=(
            "Apply each migration file not yet recorded in schema_migrations, in order. "
            "With embedded ClickHouse this goes through the running worker when one owns "
            "the engine, and opens the engine directly otherwise."
        ),
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so `govstream --help` does not pay for clickhouse-connect/chDB.
    from sql.client import open_clickhouse
    from sql.migrate import apply_migrations, load_migrations
    from sql.retention import apply_retention

    settings = load()
    with open_clickhouse(settings, role="client") as ch:
        applied = apply_migrations(ch)
        retention = apply_retention(ch, settings.retention_days)
    for name in applied:
        print(f"applied {name}")
    for statement in retention:
        print(f"retention: {statement}")
    if not applied:
        count = len(load_migrations())
        print(f"schema up to date ({count} migration{'' if count == 1 else 's'})")
    return 0
