"""`govstream migrate`: apply pending ClickHouse migrations (sql/migrations/NNNN_*.sql)."""

from __future__ import annotations

import argparse
from pathlib import Path
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
    parser.add_argument(
        "--render-cluster",
        metavar="NAME",
        help="write the migrations rendered for cluster NAME (ON CLUSTER, Replicated) to --out",
    )
    parser.add_argument("--out", type=Path, help="directory for --render-cluster")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so `govstream --help` does not pay for clickhouse-connect/chDB.
    from sql.client import OwnerProxy, open_clickhouse
    from sql.migrate import apply_migrations, load_migrations
    from sql.retention import apply_retention

    if args.render_cluster is not None:
        return _render(args.render_cluster, args.out)
    settings = load()
    with open_clickhouse(settings, role="client") as ch:
        if isinstance(ch, OwnerProxy):  # the worker applies its own migration files
            applied, retention = ch.migrate()
        else:
            applied = apply_migrations(ch, cluster=settings.clickhouse_cluster)
            retention = apply_retention(ch, settings.retention_days, settings.clickhouse_cluster)
    for name in applied:
        print(f"applied {name}")
    for statement in retention:
        print(f"retention: {statement}")
    if not applied:
        count = len(load_migrations())
        print(f"schema up to date ({count} migration{'' if count == 1 else 's'})")
    return 0


def _render(cluster: str, out: Path | None) -> int:
    from govstream.errors import UsageError
    from sql.cluster import render_migration
    from sql.migrate import load_migrations

    if out is None:
        raise UsageError("--render-cluster needs --out DIR")
    out.mkdir(parents=True, exist_ok=True)
    for migration in load_migrations():
        try:
            text = render_migration(migration, cluster)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        (out / migration.name).write_text(text, encoding="utf-8")
        print(f"wrote {out / migration.name}")
    return 0
