-- 0004 consumer backlog: the worker's lag and the age of its oldest
-- unprocessed record, per consumer group and partition, recorded every
-- GOVSTREAM_BACKLOG_INTERVAL_SECONDS (streams/backlog.py).
-- Frozen once shipped: change the schema with a new numbered file.
--
-- A plain MergeTree: every row is a sample at its own time, nothing to
-- deduplicate. Samples are kept 30 days.
CREATE TABLE IF NOT EXISTS consumer_backlog
(
    recorded_at            DateTime64(3, 'UTC'),
    consumer_group         LowCardinality(String),
    topic                  LowCardinality(String),
    partition              UInt32,
    committed              Int64,            -- -1: the group has committed nothing yet
    end_offset             UInt64,
    lag                    UInt64,
    oldest_unprocessed_at  Nullable(DateTime64(3, 'UTC')),  -- NULL when lag = 0
    age_seconds            Nullable(Float64)                -- recorded_at - oldest_unprocessed_at
)
ENGINE = MergeTree
ORDER BY (consumer_group, topic, partition, recorded_at)
TTL toDateTime(recorded_at) + INTERVAL 30 DAY;
