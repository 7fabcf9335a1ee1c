CREATE TABLE admission_decisions
(
    `tenant_id` LowCardinality(String),
    `decided_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `request_kind` LowCardinality(String),
    `decision` LowCardinality(String),
    `reason_code` LowCardinality(String),
    `model` LowCardinality(Nullable(String)),
    `estimated_tokens` UInt32,
    `remaining_tokens` Nullable(Int64),
    `reservation_id` Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, decided_at, event_id)
SETTINGS index_granularity = 8192;

CREATE TABLE budget_events
(
    `tenant_id` LowCardinality(String),
    `occurred_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `event_type` LowCardinality(String),
    `scope` LowCardinality(String),
    `scope_key` String,
    `budget_limit` UInt64,
    `used` UInt64,
    `threshold_pct` Nullable(UInt16),
    `action` LowCardinality(Nullable(String)),
    `fallback_model` LowCardinality(Nullable(String))
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS index_granularity = 8192;

CREATE TABLE consumer_backlog
(
    `recorded_at` DateTime64(3, 'UTC'),
    `consumer_group` LowCardinality(String),
    `topic` LowCardinality(String),
    `partition` UInt32,
    `committed` Int64,
    `end_offset` UInt64,
    `lag` UInt64,
    `oldest_unprocessed_at` Nullable(DateTime64(3, 'UTC')),
    `age_seconds` Nullable(Float64)
)
ENGINE = MergeTree
ORDER BY (consumer_group, topic, partition, recorded_at)
TTL toDateTime(recorded_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192;

CREATE TABLE dead_letters
(
    `source_topic` LowCardinality(String),
    `source_partition` UInt32,
    `source_offset` UInt64,
    `reason_code` LowCardinality(String),
    `reason` String,
    `schema_id` Nullable(UInt32),
    `raw_preview` String,
    `raw_sha256` String,
    `raw_bytes` UInt32,
    `recorded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS index_granularity = 8192;

CREATE TABLE decisions_per_minute
(
    `minute` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `decision` LowCardinality(String),
    `reason_code` LowCardinality(String),
    `decisions` AggregateFunction(count),
    `evaluation_us` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, minute, decision, reason_code)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW decisions_per_minute_refresh
REFRESH EVERY 10 MINUTE TO decisions_per_minute
(
    `minute` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `decision` LowCardinality(String),
    `reason_code` LowCardinality(String),
    `decisions` AggregateFunction(count),
    `evaluation_us` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
DEFINER = default SQL SECURITY DEFINER
AS SELECT
    toStartOfMinute(decided_at) AS minute,
    tenant_id,
    decision,
    reason_code,
    countState() AS decisions,
    quantilesTDigestState(0.5, 0.95, 0.99)(evaluation_us) AS evaluation_us
FROM policy_decisions
FINAL
WHERE decided_at >= (now() - toIntervalDay(35))
GROUP BY
    minute,
    tenant_id,
    decision,
    reason_code;

CREATE TABLE duplicates_suppressed
(
    `tenant_id` LowCardinality(String),
    `occurred_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `duplicate_event_id` String,
    `original_event_id` String,
    `duplicate_attempt` UInt16,
    `original_attempt` UInt16,
    `suppressed_by` LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS index_granularity = 8192;

CREATE TABLE events_archive
(
    `topic` LowCardinality(String),
    `partition` UInt32,
    `offset` UInt64,
    `event_id` String,
    `event_type` LowCardinality(String),
    `schema_id` UInt32,
    `tenant_id` LowCardinality(String),
    `session_id` String,
    `occurred_at` DateTime64(6, 'UTC'),
    `ingested_at` DateTime64(3, 'UTC') DEFAULT now64(3),
    `payload` String CODEC(ZSTD(3)),
    INDEX archive_event_type event_type TYPE set(256) GRANULARITY 4,
    INDEX archive_session session_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
SETTINGS index_granularity = 8192;

CREATE TABLE policy_decisions
(
    `tenant_id` LowCardinality(String),
    `operation_key` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `event_id` String,
    `decided_at` DateTime64(6, 'UTC'),
    `tool` LowCardinality(String),
    `action` LowCardinality(String),
    `destination_host` Nullable(String),
    `destination_port` Nullable(UInt16),
    `method` LowCardinality(Nullable(String)),
    `payload_bytes` Nullable(UInt32),
    `risk_level` LowCardinality(Nullable(String)),
    `proposal_digest` String,
    `decision` LowCardinality(String),
    `reason_code` LowCardinality(String),
    `rule_id` LowCardinality(String),
    `policy_version` LowCardinality(String),
    `evaluation_us` UInt32,
    `key_id` LowCardinality(String),
    `expires_at` DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, operation_key)
SETTINGS index_granularity = 8192;

CREATE TABLE session_transitions
(
    `tenant_id` LowCardinality(String),
    `session_id` String,
    `idempotency_key` String,
    `event_id` String,
    `occurred_at` DateTime64(6, 'UTC'),
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `event_type` LowCardinality(String),
    `outcome` LowCardinality(String),
    `source` LowCardinality(String),
    `from_state` LowCardinality(String),
    `reason` String,
    `error_class` Nullable(String),
    `causation_id` Nullable(String),
    `attempt` UInt16,
    `first_attempt_version` UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, session_id, idempotency_key)
SETTINGS index_granularity = 8192;

CREATE TABLE sessions
(
    `session_id` String,
    `tenant_id` LowCardinality(String),
    `workflow_id` Nullable(String),
    `tier` LowCardinality(String),
    `plan` LowCardinality(String),
    `actor_id` String,
    `policy_version` String,
    `environment` LowCardinality(String),
    `started_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `attempt` UInt16 DEFAULT 1,
    `first_attempt_version` UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, session_id)
SETTINGS index_granularity = 8192;

CREATE TABLE tenant_profiles
(
    `tenant_id` LowCardinality(String),
    `occurred_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `payload` String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW tenant_profiles_from_archive TO tenant_profiles
(
    `tenant_id` LowCardinality(String),
    `occurred_at` DateTime64(6, 'UTC'),
    `event_id` String,
    `payload` String
)
AS SELECT
    tenant_id,
    occurred_at,
    event_id,
    payload
FROM events_archive
WHERE event_type = 'TenantProfileUpdated';

CREATE VIEW tool_calls
(
    `tenant_id` LowCardinality(String),
    `operation_key` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `tool` LowCardinality(String),
    `action` LowCardinality(String),
    `destination_host` Nullable(String),
    `method` LowCardinality(String),
    `payload_bytes` UInt32,
    `risk_level` LowCardinality(String),
    `proposed_at` DateTime64(6, 'UTC'),
    `completed` LowCardinality(UInt8),
    `status` LowCardinality(String),
    `latency_ms` UInt32,
    `completed_at` DateTime64(6, 'UTC')
)
AS SELECT
    p.tenant_id AS tenant_id,
    p.operation_key AS operation_key,
    p.session_id AS session_id,
    p.workflow_id AS workflow_id,
    p.environment AS environment,
    p.tool AS tool,
    p.action AS action,
    p.destination_host AS destination_host,
    p.method AS method,
    p.payload_bytes AS payload_bytes,
    p.risk_level AS risk_level,
    p.proposed_at AS proposed_at,
    c.status != '' AS completed,
    c.status AS status,
    c.latency_ms AS latency_ms,
    c.completed_at AS completed_at
FROM tool_proposals AS p
FINAL
LEFT JOIN tool_completions AS c
FINAL ON (p.tenant_id = c.tenant_id) AND (p.operation_key = c.operation_key);

CREATE TABLE tool_completions
(
    `tenant_id` LowCardinality(String),
    `operation_key` String,
    `session_id` String,
    `event_id` String,
    `completed_at` DateTime64(6, 'UTC'),
    `status` LowCardinality(String),
    `latency_ms` UInt32,
    `result_ref` Nullable(String),
    `attempt` UInt16,
    `first_attempt_version` UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, operation_key)
SETTINGS index_granularity = 8192;

CREATE TABLE tool_proposals
(
    `tenant_id` LowCardinality(String),
    `operation_key` String,
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `event_id` String,
    `proposed_at` DateTime64(6, 'UTC'),
    `tool` LowCardinality(String),
    `action` LowCardinality(String),
    `destination_host` Nullable(String),
    `method` LowCardinality(String),
    `payload_bytes` UInt32,
    `risk_level` LowCardinality(String),
    `attempt` UInt16,
    `first_attempt_version` UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, operation_key)
SETTINGS index_granularity = 8192;

CREATE TABLE turns
(
    `event_id` String,
    `occurred_at` DateTime64(6, 'UTC'),
    `tenant_id` LowCardinality(String),
    `session_id` String,
    `workflow_id` Nullable(String),
    `environment` LowCardinality(String),
    `model` LowCardinality(String),
    `prompt_version` LowCardinality(String),
    `input_tokens` UInt32,
    `output_tokens` UInt32,
    `cost_usd_micros` UInt64,
    `first_token_ms` UInt32,
    `latency_ms` UInt32,
    `outcome` LowCardinality(String),
    `error_class` Nullable(String),
    `attempt` UInt16,
    `idempotency_key` String DEFAULT event_id,
    `first_attempt_version` UInt16 MATERIALIZED 65535 - attempt
)
ENGINE = ReplacingMergeTree(first_attempt_version)
ORDER BY (tenant_id, idempotency_key)
SETTINGS index_granularity = 8192;

CREATE TABLE turns_per_minute
(
    `minute` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `tier` LowCardinality(String),
    `model` LowCardinality(String),
    `turns` AggregateFunction(count),
    `failed` AggregateFunction(sum, UInt64),
    `cancelled` AggregateFunction(sum, UInt64),
    `tokens` AggregateFunction(sum, UInt64),
    `cost_usd_micros` AggregateFunction(sum, UInt64),
    `latency_ms` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    `first_token_ms` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, minute, tier, model)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW turns_per_minute_refresh
REFRESH EVERY 10 MINUTE TO turns_per_minute
(
    `minute` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `tier` LowCardinality(String),
    `model` LowCardinality(String),
    `turns` AggregateFunction(count),
    `failed` AggregateFunction(sum, UInt64),
    `cancelled` AggregateFunction(sum, UInt64),
    `tokens` AggregateFunction(sum, UInt64),
    `cost_usd_micros` AggregateFunction(sum, UInt64),
    `latency_ms` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    `first_token_ms` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
DEFINER = default SQL SECURITY DEFINER
AS SELECT
    toStartOfMinute(t.occurred_at) AS minute,
    t.tenant_id AS tenant_id,
    s.tier AS tier,
    t.model AS model,
    countState() AS turns,
    sumState(toUInt64(t.outcome IN ('error', 'timeout'))) AS failed,
    sumState(toUInt64(t.outcome = 'cancelled')) AS cancelled,
    sumState(toUInt64(t.input_tokens) + t.output_tokens) AS tokens,
    sumState(t.cost_usd_micros) AS cost_usd_micros,
    quantilesTDigestState(0.5, 0.95, 0.99)(t.latency_ms) AS latency_ms,
    quantilesTDigestState(0.5, 0.95, 0.99)(t.first_token_ms) AS first_token_ms
FROM turns AS t
FINAL
LEFT JOIN
(
    SELECT
        tenant_id,
        session_id,
        tier
    FROM sessions
    FINAL
) AS s ON (s.tenant_id = t.tenant_id) AND (s.session_id = t.session_id)
WHERE t.occurred_at >= (now() - toIntervalDay(35))
GROUP BY
    minute,
    tenant_id,
    tier,
    model;
