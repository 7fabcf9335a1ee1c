-- Money budgets per tenant for `govstream slo`: the latest plan limits (from the
-- TenantProfileUpdated in tenant_profiles) against committed cost, UTC day and month.
-- Parameters: now DateTime64(6), window_seconds UInt32 (the spend-rate window).
WITH
    {now:DateTime64(6)} AS now_,
    {window_seconds:UInt32} AS window_,
    profiles AS (
        SELECT tenant_id, argMax(payload, occurred_at) AS profile
        FROM tenant_profiles
        WHERE occurred_at <= now_
        GROUP BY tenant_id
    ),
    spend AS (
        SELECT tenant_id,
               sumIf(cost_usd_micros, occurred_at >= toStartOfDay(now_)) AS used_day,
               sum(cost_usd_micros) AS used_month,
               sumIf(cost_usd_micros, occurred_at > now_ - toIntervalSecond(window_)) AS spent_window
        FROM turns FINAL
        WHERE occurred_at >= toStartOfMonth(now_) AND occurred_at <= now_
        GROUP BY tenant_id
    )
SELECT p.tenant_id AS tenant_id,
       JSONExtract(p.profile, 'budgets', 'cost_per_day_usd_micros', 'Nullable(Int64)') AS day_limit,
       JSONExtract(p.profile, 'budgets', 'cost_per_month_usd_micros', 'Nullable(Int64)') AS month_limit,
       ifNull(s.used_day, 0) AS used_day,
       ifNull(s.used_month, 0) AS used_month,
       ifNull(s.spent_window, 0) AS spent_window
FROM profiles AS p
LEFT JOIN spend AS s ON s.tenant_id = p.tenant_id
ORDER BY tenant_id
