"""Migration runner: statement splitting, ordering, the frozen-checksum guard (no ClickHouse)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from govstream.errors import GovstreamError
from sql.client import QueryResult
from sql.migrate import (
    Applied,
    Migration,
    apply_migrations,
    checksum,
    load_migrations,
    pending,
    split_statements,
)
from tests.stubs import QueryOnlyClickHouse

# --------------------------------------------------------------------------- splitting


def test_split_two_statements_with_comment_lines() -> None:
    text = """-- header comment; with a semicolon
CREATE TABLE a (x UInt8) ENGINE = Memory;

-- between
CREATE TABLE b (y String) ENGINE = Memory;
"""
    assert split_statements(text) == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "CREATE TABLE b (y String) ENGINE = Memory",
    ]


def test_split_keeps_semicolons_and_dashes_inside_quotes() -> None:
    text = (
        "INSERT INTO t VALUES ('a;b', 'it''s -- not a comment', 'back\\';slash');\n"
        'SELECT `odd;name`, "x;y" FROM t;'
    )
    assert split_statements(text) == [
        "INSERT INTO t VALUES ('a;b', 'it''s -- not a comment', 'back\\';slash')",
        'SELECT `odd;name`, "x;y" FROM t',
    ]


def test_split_drops_inline_and_block_comments_and_empty_statements() -> None:
    text = "SELECT 1; -- trailing; comment\n;;\n/* block; comment */ SELECT 2\n-- only a comment;\n"
    assert split_statements(text) == ["SELECT 1", "SELECT 2"]


def test_split_last_statement_without_semicolon() -> None:
    assert split_statements("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_split_comment_only_file_is_empty() -> None:
    assert split_statements("-- nothing here;\n\n   \n-- still nothing\n") == []


def test_split_unterminated_quote_is_an_error() -> None:
    with pytest.raises(GovstreamError, match="unterminated"):
        split_statements("SELECT 'oops;\n")


def test_foundation_migration_splits_into_its_four_tables() -> None:
    (foundation,) = [m for m in load_migrations() if m.version == 1]
    assert foundation.name == "0001_foundation.sql"
    statements = foundation.statements
    created = [re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", s).group(1) for s in statements]  # type: ignore[union-attr]
    assert created == ["events_archive", "sessions", "turns", "dead_letters"]
    assert not any("--" in s for s in statements)
    assert all(s.rstrip().endswith(")") or "ORDER BY" in s for s in statements)


# --------------------------------------------------------------------------- files


def _write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_load_orders_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    _write(tmp_path, "0010_later.sql", "SELECT 10;")
    _write(tmp_path, "0002_second.sql", "SELECT 2;")
    _write(tmp_path, "README.md", "not a migration")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [
        (2, "0002_second.sql"),
        (10, "0010_later.sql"),
    ]


def test_load_rejects_bad_names_and_duplicate_versions(tmp_path: Path) -> None:
    _write(tmp_path, "1_short.sql", "SELECT 1;")
    with pytest.raises(GovstreamError, match="NNNN_lower_snake_name"):
        load_migrations(tmp_path)
    (tmp_path / "1_short.sql").unlink()
    _write(tmp_path, "0003_a.sql", "SELECT 1;")
    _write(tmp_path, "0003_b.sql", "SELECT 2;")
    with pytest.raises(GovstreamError, match="share version 0003"):
        load_migrations(tmp_path)


def test_checksum_is_sha256_of_text_and_crlf_reads_the_same(tmp_path: Path) -> None:
    text = "SELECT 1;\n"
    assert checksum(text) == hashlib.sha256(b"SELECT 1;\n").hexdigest()
    (tmp_path / "0001_x.sql").write_bytes(b"SELECT 1;\r\n")  # a CRLF checkout
    assert load_migrations(tmp_path)[0].checksum == checksum(text)


# --------------------------------------------------------------------------- plan


M1 = Migration(1, "0001_foundation.sql", "CREATE TABLE a (x UInt8) ENGINE = Memory;")
M2 = Migration(2, "0002_more.sql", "CREATE TABLE b (x UInt8) ENGINE = Memory;")


def test_pending_skips_applied_in_order() -> None:
    applied = [Applied(1, M1.name, M1.checksum)]
    assert pending([M2, M1], applied) == [M2]
    assert pending([M1, M2], []) == [M1, M2]
    assert pending([M1, M2], [*applied, Applied(2, M2.name, M2.checksum)]) == []


def test_pending_refuses_a_changed_applied_migration() -> None:
    with pytest.raises(GovstreamError) as info:
        pending([M1, M2], [Applied(1, M1.name, checksum("the old text"))])
    assert str(info.value) == (
        "migration 0001_foundation.sql was changed after it was applied; "
        "migrations are frozen: add a new file"
    )


def test_pending_refuses_an_applied_version_without_a_file() -> None:
    with pytest.raises(GovstreamError, match=r"0007_future\.sql applied"):
        pending([M1], [Applied(1, M1.name, M1.checksum), Applied(7, "0007_future.sql", "x")])


def test_pending_tolerates_a_duplicated_record() -> None:
    record = Applied(1, M1.name, M1.checksum)
    assert pending([M1, M2], [record, record]) == [M2]


# --------------------------------------------------------------------------- runner


class FakeClickHouse(QueryOnlyClickHouse):
    """Records statements; keeps schema_migrations rows in a list."""

    kind = "fake"
    target = "fake"

    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[str] = []
        self.records: list[tuple[int, str, str]] = []
        self.fail_on = fail_on

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        assert "FROM schema_migrations" in sql
        return QueryResult(
            ["version", "name", "checksum"], ["UInt32", "String", "String"], list(self.records)
        )

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        if self.fail_on and self.fail_on in sql:
            raise GovstreamError("ClickHouse: Code: 62. DB::Exception: Syntax error")
        if sql.startswith("INSERT INTO schema_migrations"):
            assert parameters is not None
            # The record is bound server side, never formatted into the SQL text.
            assert "{name:String}" in sql and parameters["name"] not in sql
            self.records.append((parameters["version"], parameters["name"], parameters["checksum"]))
        self.commands.append(sql)


def test_apply_runs_each_statement_once_and_records(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "0001_a.sql",
        "CREATE TABLE a (x UInt8) ENGINE = Memory;\nCREATE TABLE b (y UInt8) ENGINE = Memory;\n",
    )
    _write(tmp_path, "0002_b.sql", "-- one\nCREATE TABLE c (z UInt8) ENGINE = Memory;\n")
    ch = FakeClickHouse()
    assert apply_migrations(ch, tmp_path) == ["0001_a.sql", "0002_b.sql"]
    creates = [
        c for c in ch.commands if c.startswith("CREATE TABLE ") and "schema_migrations" not in c
    ]
    assert creates == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "CREATE TABLE b (y UInt8) ENGINE = Memory",
        "CREATE TABLE c (z UInt8) ENGINE = Memory",
    ]
    assert [r[:2] for r in ch.records] == [(1, "0001_a.sql"), (2, "0002_b.sql")]
    assert ch.records[1][2] == checksum("-- one\nCREATE TABLE c (z UInt8) ENGINE = Memory;\n")
    before = len(ch.commands)
    assert apply_migrations(ch, tmp_path) == []
    # Second run: only the idempotent CREATE TABLE IF NOT EXISTS schema_migrations.
    assert len(ch.commands) == before + 1


def test_apply_failure_names_file_and_statement_and_records_nothing(tmp_path: Path) -> None:
    _write(
        tmp_path, "0001_a.sql", "CREATE TABLE a (x UInt8) ENGINE = Memory;\nCREATE TABLE broken;\n"
    )
    ch = FakeClickHouse(fail_on="broken")
    with pytest.raises(GovstreamError, match=r"0001_a\.sql failed at statement 2 of 2: .*Syntax"):
        apply_migrations(ch, tmp_path)
    assert ch.records == []


def test_apply_refuses_edited_file(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "CREATE TABLE a (x UInt8) ENGINE = Memory;\n")
    ch = FakeClickHouse()
    apply_migrations(ch, tmp_path)
    _write(tmp_path, "0001_a.sql", "CREATE TABLE a (x UInt16) ENGINE = Memory;\n")
    with pytest.raises(GovstreamError, match=r"0001_a\.sql was changed after it was applied"):
        apply_migrations(ch, tmp_path)
