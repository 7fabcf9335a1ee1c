-- 0002 turns deduplicate by (tenant_id, idempotency_key), not by event_id.
-- Frozen once shipped: change the schema with a new numbered file.
--
-- A runtime that retries an operation sends the same idempotency_key with a
-- new event_id, a higher attempt and a later occurred_at. 0001 keyed turns by
-- (tenant_id, occurred_at, event_id), so a retried TurnCompleted counted its
-- tokens and cost twice. Now the sorting key is (tenant_id, idempotency_key):
-- every send of one operation collapses to one row, redeliveries and retries
-- alike. occurred_at is not in the key: a retry happens later.
--
-- Which row stays: ReplacingMergeTree keeps the highest version, and the
-- version is 65535 - attempt, so the lowest attempt wins: the original, the
-- same event the session processor applied (it suppresses the later ones).
-- Rows of one attempt (exact redeliveries) are identical.
--
-- idempotency_key defaults to event_id: rows copied from the 0001 table, and
-- rows from a writer that does not send the column, dedupe by event_id as
-- before.
--
-- The rebuild is one statement. CREATE OR REPLACE builds the new table under
-- a temporary name, fills it from the current turns, swaps the two with
-- EXCHANGE and drops the old one; if it fails, the old table is untouched and
-- the migration runs again from here (the runner records a file only after
-- all of it ran). Rerunning it over a rebuilt table gives the same rows: only
-- 0001 rows (key = event_id) exist until the migration is recorded, because
-- the worker migrates before its sink starts. With a ClickHouse server, do not
-- run it while another sink writes turns: rows inserted during the copy would
-- be lost with the old table. Needs an Atomic database (the default engine of
-- ClickHouse servers and of chDB).
CREATE OR REPLACE TABLE turns
(
    event_id         String,
    occurred_at      DateTime64(6, 'UTC'),
    tenant_id        LowCardinality(String),
    session_id       String,
    workflow_id      Nullable(String),
    environment      LowCardinality(String),
    model            LowCardinality(String),
    prompt_version   LowCardinality(String),
    input_tokens     UInt32,
    output_tokens    UInt32,
    cost_usd_micros  UInt64,
    first_token_ms   UInt32,
    latency_ms       UInt32,
    outcome          LowCardinality(String),
    error_class      Nullable(String),
    attempt          UInt16,
    idempotency_key  String DEFAULT event_id,
    first_attempt_version UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, idempotency_key)
AS SELECT
    event_id, occurred_at, tenant_id, session_id, workflow_id, environment, model,
    prompt_version, input_tokens, output_tokens, cost_usd_micros, first_token_ms,
    latency_ms, outcome, error_class, attempt,
    event_id AS idempotency_key
FROM turns;
