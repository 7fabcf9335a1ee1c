-- panel: Cost per tenant per hour
-- unit: USD micro-dollars (integer; 1 USD = 1,000,000), turns (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), workflow String ('' = all), model String ('' = all)
-- chart: line time=hour series=tenant_id values=cost_usd_micros
--
-- Model cost of the turns with from <= occurred_at < to, per tenant and UTC
-- hour (hour = the start of the hour). turns FINAL: one row per (tenant,
-- idempotency key), the first attempt, so redeliveries and runtime retries
-- count once, at the original's occurred_at.
SELECT
    toStartOfHour(occurred_at) AS hour,
    tenant_id,
    count() AS turns,
    sum(cost_usd_micros) AS cost_usd_micros
FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND ({workflow:String} = '' OR workflow_id = {workflow:String})
  AND ({model:String} = '' OR model = {model:String})
GROUP BY hour, tenant_id
ORDER BY hour, tenant_id
