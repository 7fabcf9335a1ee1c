-- Demo summary: the ten most expensive tenants. Money is integer micro-dollars.
SELECT
    tenant_id,
    count() AS turns,
    sum(input_tokens + output_tokens) AS tokens,
    sum(cost_usd_micros) AS cost_usd_micros
FROM turns FINAL
GROUP BY tenant_id
ORDER BY cost_usd_micros DESC, tenant_id
LIMIT 10
