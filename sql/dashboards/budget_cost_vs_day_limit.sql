-- panel: Daily budget used per tenant
-- unit: USD micro-dollars (integer); used_ratio = used / day_limit_usd_micros (Float64)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id,day values=used_ratio limit=limit_ratio
--
-- Per tenant and UTC day: the cost of the turns with from <= occurred_at < to
-- on that day, against the tenant's cost_per_day_usd_micros budget from its
-- latest TenantProfileUpdated (tenant_profiles) before to. day_limit_usd_micros and
-- used_ratio are NULL when the tenant has no daily money budget (or no
-- profile); limit_ratio is the whole budget (1.0). turns FINAL: the first
-- attempt of each (tenant, idempotency key).
WITH
    profiles AS (
        SELECT tenant_id, argMax(payload, occurred_at) AS profile
        FROM tenant_profiles
        WHERE occurred_at < {to:DateTime64(6)}
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
        GROUP BY tenant_id
    ),
    spend AS (
        SELECT tenant_id, toDate(occurred_at) AS day, sum(cost_usd_micros) AS used
        FROM turns FINAL
        WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
        GROUP BY tenant_id, day
    )
SELECT
    s.tenant_id AS tenant_id,
    s.day AS day,
    s.used AS used_usd_micros,
    JSONExtract(p.profile, 'budgets', 'cost_per_day_usd_micros', 'Nullable(Int64)') AS day_limit_usd_micros,
    if(day_limit_usd_micros IS NULL OR day_limit_usd_micros = 0, NULL,
       s.used / day_limit_usd_micros) AS used_ratio,
    1.0 AS limit_ratio
FROM spend AS s
LEFT JOIN profiles AS p ON p.tenant_id = s.tenant_id
ORDER BY tenant_id, day
