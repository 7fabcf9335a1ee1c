-- 0001 foundation: the raw event archive, sessions, turns, dead letters.
-- Frozen once shipped: change the schema with a new numbered file.
--
-- Idempotency (the sink is at-least-once): every table is a
-- ReplacingMergeTree whose sorting key identifies the row, so a record
-- delivered twice collapses to one row; read with FINAL (or GROUP BY the key)
-- for exact figures before background merges have run.

-- One row per Kafka record: the log mirrored with its position.
CREATE TABLE IF NOT EXISTS events_archive
(
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64,
    event_id     String,
    event_type   LowCardinality(String),
    schema_id    UInt32,
    tenant_id    LowCardinality(String),
    session_id   String,
    occurred_at  DateTime64(6, 'UTC'),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    payload      String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);

-- One row per session, from SessionStarted.
CREATE TABLE IF NOT EXISTS sessions
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
    event_id        String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, session_id);

-- One row per TurnCompleted event (deduplicated by event_id).
CREATE TABLE IF NOT EXISTS turns
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
    attempt          UInt16
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id);

-- Records the ingest step could not decode or validate.
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    reason_code       LowCardinality(String),
    reason            String,
    schema_id         Nullable(UInt32),
    raw_value         String,
    recorded_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset);
