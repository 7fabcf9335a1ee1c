-- panel: Consumer backlog age
-- unit: seconds (age of the oldest record not yet consumed), records (lag)
-- params: from DateTime64(6), to DateTime64(6)
-- chart: line time=minute series=consumer_group values=max_age_seconds
--
-- The worker's samples (streams/backlog.py, every GOVSTREAM_BACKLOG_INTERVAL_SECONDS)
-- with from <= recorded_at < to: per minute and consumer group, the worst
-- partition's age and the group's total lag. Not per tenant: a backlog is the
-- worker's, shared by every tenant on the partition.
SELECT
    toStartOfMinute(recorded_at) AS minute,
    consumer_group,
    max(ifNull(age_seconds, 0)) AS max_age_seconds,
    max(lag) AS max_partition_lag
FROM consumer_backlog
WHERE recorded_at >= {from:DateTime64(6)} AND recorded_at < {to:DateTime64(6)}
GROUP BY minute, consumer_group
ORDER BY minute, consumer_group
