"""The migrations rendered for a ClickHouse cluster: ON CLUSTER, Replicated engines.

For users who outgrow one server. With GOVSTREAM_CLICKHOUSE_CLUSTER=NAME the
migration runner renders every statement this way; `govstream migrate --render-cluster NAME
--out DIR` writes every migration rewritten statement by statement:

- `CREATE TABLE|VIEW ... name` and `ALTER TABLE name` get `ON CLUSTER 'NAME'`;
- `ENGINE = XMergeTree(args)` becomes
  `ENGINE = ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/name', '{replica}', args)`
  (the {shard} and {replica} macros come from each server's configuration);
- `CREATE OR REPLACE TABLE` (migration 0002) keeps its meaning on every replica.

Apply the rendered files with clickhouse-client on any node, in order. Reads
then go to the replicated tables on each node; sharding across nodes
(Distributed tables over these) is a deployment choice left to the operator.
Rendering is pure text; a test parses every rendered statement with
ClickHouse's own parser (EXPLAIN SYNTAX), since no cluster runs here.
"""

from __future__ import annotations

import re

from sql.migrate import Migration, split_statements

_CREATE = re.compile(
    r"^(CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?)([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)
_ALTER = re.compile(r"^(ALTER\s+TABLE\s+)([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(\s*\(([^()]*)\))?", re.IGNORECASE)


def _cluster_name(cluster: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cluster):
        raise ValueError(f"cluster name {cluster!r}: letters, digits, '_', '.', '-' only")
    return cluster


def render_statement(statement: str, cluster: str) -> str:
    """One statement for the cluster (statements that name no table pass unchanged)."""
    cluster = _cluster_name(cluster)
    text = statement.strip()
    table = None
    if (match := _CREATE.match(text)) or (match := _ALTER.match(text)):
        table = match.group(2)
        text = f"{match.group(1)}{table} ON CLUSTER '{cluster}'{text[match.end() :]}"
    if table is None:
        return text

    def replicated(engine: re.Match[str]) -> str:
        name, args = engine.group(1), (engine.group(3) or "").strip()
        if name.lower().startswith("replicated"):
            return engine.group(0)
        path = f"'/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}'"
        return f"ENGINE = Replicated{name}({path}{', ' + args if args else ''})"

    return _ENGINE.sub(replicated, text)


def render_migration(migration: Migration, cluster: str) -> str:
    header = f"-- {migration.name} rendered for cluster '{cluster}' (sql/cluster.py)\n"
    body = ";\n\n".join(render_statement(s, cluster) for s in migration.statements)
    return header + body + ";\n"


def rendered_statements(text: str, cluster: str) -> list[str]:
    return [render_statement(s, cluster) for s in split_statements(text)]
