"""Numbered ClickHouse migrations, each applied once and recorded.

Migrations are the package files ``sql/migrations/NNNN_name.sql``. Each
applied file is recorded in ``schema_migrations`` with the sha256 of its text;
an applied file whose text changed is refused (migrations are frozen: change
the schema with a new file). ClickHouse DDL is not transactional, so a file
that fails half-way is not recorded and runs again from its first statement
next time: write statements that can repeat (``IF NOT EXISTS``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from govstream.errors import GovstreamError
from sql.client import ClickHouse

MIGRATIONS_TABLE = "schema_migrations"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY version
"""


def checksum(text: str) -> str:
    """sha256 of the file text as read (universal newlines, so CRLF checkouts agree)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_foundation.sql"
    text: str

    @property
    def checksum(self) -> str:
        return checksum(self.text)

    @property
    def statements(self) -> list[str]:
        return split_statements(self.text)


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    checksum: str


def split_statements(text: str) -> list[str]:
    """Split SQL text on top-level ``;``, dropping comments and empty statements.

    A small scanner rather than ``text.split(";")``: a ``;`` or ``--`` inside a
    quoted string or identifier, or a ``;`` inside a comment, is not a separator.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):  # line comment: drop up to the newline
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        if ch == "/" and text.startswith("/*", i):  # block comment: drop, keep a space
            end = text.find("*/", i + 2)
            if end == -1:
                raise GovstreamError("unterminated /* comment in migration")
            current.append(" ")
            i = end + 2
            continue
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:  # doubled quote = escaped quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise GovstreamError(f"unterminated {ch} quote in migration")
            current.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    cleaned = ("\n".join(line.rstrip() for line in s.strip().splitlines()) for s in statements)
    return [s for s in cleaned if s]


def _migrations_dir() -> Traversable:
    return resources.files("sql") / "migrations"


def load_migrations(directory: Path | Traversable | None = None) -> list[Migration]:
    """The migration files in version order; bad names and duplicate versions are errors."""
    root = _migrations_dir() if directory is None else directory
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_RE.match(entry.name)
        if not match:
            raise GovstreamError(
                f"migration file {entry.name} is not named NNNN_lower_snake_name.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise GovstreamError(
                f"migrations {found[version].name} and {entry.name} share version {version:04d}"
            )
        # Text mode = universal newlines, so the checksum ignores CRLF checkouts.
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending(migrations: Iterable[Migration], applied: Iterable[Applied]) -> list[Migration]:
    """Which migrations still need to run; pure, raises if the history does not fit the files."""
    by_version = {m.version: m for m in migrations}
    done: dict[int, Applied] = {}
    for record in applied:
        done.setdefault(record.version, record)  # a duplicate record (racing runners) is harmless
    for version, record in sorted(done.items()):
        migration = by_version.get(version)
        if migration is None:
            raise GovstreamError(
                f"the database has migration {record.name} applied, which this version of "
                "govstream does not have; upgrade govstream"
            )
        if migration.checksum != record.checksum:
            raise GovstreamError(
                f"migration {migration.name} was changed after it was applied; "
                "migrations are frozen: add a new file"
            )
    return [m for v, m in sorted(by_version.items()) if v not in done]


def _for(cluster: str | None, statement: str) -> str:
    """The statement as this deployment runs it: as written, or for a cluster."""
    if cluster is None:
        return statement
    from sql.cluster import render_statement  # sql.cluster imports this module

    return render_statement(statement, cluster)


def applied_migrations(ch: ClickHouse, cluster: str | None = None) -> list[Applied]:
    ch.command(_for(cluster, _CREATE_TABLE))
    result = ch.query(
        f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version, applied_at"
    )
    return [Applied(int(v), str(name), str(sha)) for v, name, sha in result.rows]


def apply_migrations(
    ch: ClickHouse,
    directory: Path | Traversable | None = None,
    *,
    cluster: str | None = None,
) -> list[str]:
    """Apply every migration not yet applied, in order; the names applied ([] = up to date).

    With `cluster` (GOVSTREAM_CLICKHOUSE_CLUSTER) every statement runs ON
    CLUSTER with Replicated engines (sql/cluster.py), the bookkeeping table too.
    """
    migrations = load_migrations(directory)
    todo = pending(migrations, applied_migrations(ch, cluster))
    done: list[str] = []
    for migration in todo:
        statements = [_for(cluster, s) for s in migration.statements]
        for index, statement in enumerate(statements, start=1):
            try:
                ch.command(statement)
            except GovstreamError as exc:
                raise GovstreamError(
                    f"migration {migration.name} failed at statement {index} of "
                    f"{len(statements)}: {exc}"
                ) from None
        # Recorded only after every statement ran; values bound server side.
        ch.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "
            "SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3, 'UTC')",
            {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
        )
        done.append(migration.name)
    return done
