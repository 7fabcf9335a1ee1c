-- 0002 first attempt wins: turns deduplicate by (tenant_id, idempotency_key),
-- not by event_id, and sessions keep the first SessionStarted, not the last.
-- Frozen once shipped: change the schema with a new numbered file.
--
-- Turns.
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
-- Sessions.
--
-- sessions keeps its key (tenant_id, session_id), one row per session. 0001
-- gave it no version, so of two SessionStarted of one session the row
-- inserted last stayed: in a retry storm the retry (new event_id, later
-- started_at), not the original the session processor applied. Now sessions
-- carries the attempt and the same version, 65535 - attempt: the lowest
-- attempt wins whatever order the sends arrive in, and every send of one
-- session leaves the row of its original.
--
-- Rows copied from 0001 are the rows 0001 shows (read with FINAL: unmerged
-- parts of a storm hold different rows for one key) and get attempt 1, as
-- 0001 did not store it. So a copied row stays against any later retry, and
-- a later send of the original (attempt 1 too, inserted later) replaces it.
-- A writer that does not send the column writes attempt 1.
--
-- The rebuild.
--
-- Each table is rebuilt by one statement. CREATE OR REPLACE builds the new
-- table under a temporary name, fills it from the current one, swaps the two
-- with EXCHANGE and drops the old one; if it fails, the old table is
-- untouched and the migration runs again from its first statement (the
-- runner records a file only after all of it ran). Rerunning it over rebuilt
-- tables gives the same rows: only copied rows (turns keyed by event_id,
-- sessions of attempt 1) exist until the migration is recorded, because the
-- worker migrates before its sink starts. With a ClickHouse server, do not
-- run it while another sink writes turns or sessions: rows inserted during
-- the copy would be lost with the old table. Needs an Atomic database (the
-- default engine of ClickHouse servers and of chDB).
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

CREATE OR REPLACE TABLE sessions
(
    session_id      String,
    tenant_id       LowCardinality(String),
    workflow_id     Nullable(String),
    tier            LowCardinality(String),
    plan            LowCardinality(String),
    actor_id        String,
    policy_version  String,
    environment     LowCardinality(String),
    started_at      DateTime64(6, 'UTC'),
    event_id        String,
    attempt         UInt16 DEFAULT 1,
    first_attempt_version UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, session_id)
AS SELECT
    session_id, tenant_id, workflow_id, tier, plan, actor_id, policy_version, environment,
    started_at, event_id,
    toUInt16(1) AS attempt
FROM sessions FINAL;
