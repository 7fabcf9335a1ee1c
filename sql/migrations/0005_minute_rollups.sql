-- 0005 per-minute rollups for the dashboards: AggregatingMergeTree tables with
-- quantile states, filled by refreshable materialized views.
-- Frozen once shipped: change the schema with a new numbered file.
--
-- Why refreshable views, not insert-triggered ones: an insert-triggered view
-- sees every inserted block, and the sink is at-least-once (a redelivered
-- batch, a runtime retry with a new event_id): it would count those twice. A
-- refreshable view recomputes its target from the deduplicated tables (FINAL)
-- and swaps it in atomically, every minute. Counts and sums in the rollups are
-- therefore exact as of the last refresh; latency quantiles are t-digest
-- states (quantilesTDigest), approximate by design (the raw tables keep the
-- exact values; the dashboards' exact panels read those).
--
-- The views cover the last 35 days, so a refresh reads at most that much.

CREATE TABLE IF NOT EXISTS turns_per_minute
(
    minute           DateTime('UTC'),
    tenant_id        LowCardinality(String),
    tier             LowCardinality(String),
    model            LowCardinality(String),
    turns            AggregateFunction(count),
    failed           AggregateFunction(sum, UInt64),
    cancelled        AggregateFunction(sum, UInt64),
    tokens           AggregateFunction(sum, UInt64),
    cost_usd_micros  AggregateFunction(sum, UInt64),
    latency_ms       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    first_token_ms   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, minute, tier, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS turns_per_minute_refresh
REFRESH EVERY 1 MINUTE
TO turns_per_minute
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
FROM turns AS t FINAL
LEFT JOIN (SELECT tenant_id, session_id, tier FROM sessions FINAL) AS s
    ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
WHERE t.occurred_at >= now() - INTERVAL 35 DAY
GROUP BY minute, tenant_id, tier, model;

CREATE TABLE IF NOT EXISTS decisions_per_minute
(
    minute         DateTime('UTC'),
    tenant_id      LowCardinality(String),
    decision       LowCardinality(String),
    reason_code    LowCardinality(String),
    decisions      AggregateFunction(count),
    evaluation_us  AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, minute, decision, reason_code);

CREATE MATERIALIZED VIEW IF NOT EXISTS decisions_per_minute_refresh
REFRESH EVERY 1 MINUTE
TO decisions_per_minute
AS SELECT
    toStartOfMinute(decided_at) AS minute,
    tenant_id,
    decision,
    reason_code,
    countState() AS decisions,
    quantilesTDigestState(0.5, 0.95, 0.99)(evaluation_us) AS evaluation_us
FROM policy_decisions FINAL
WHERE decided_at >= now() - INTERVAL 35 DAY
GROUP BY minute, tenant_id, decision, reason_code;
