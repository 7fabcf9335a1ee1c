-- panel: Cost per workflow
-- unit: USD micro-dollars (integer), tokens and turns (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), workflow String ('' = all), model String ('' = all), top UInt32 (how many workflows)
-- chart: bars label=tenant_id,workflow_id values=cost_usd_micros
--
-- Model cost of the turns with from <= occurred_at < to that belong to a
-- workflow, per (tenant, workflow), the costliest first (ties by tenant and
-- workflow), at most top rows: a fleet has hundreds of thousands of workflows;
-- turns outside any workflow (workflow_id NULL, or '' as the sink may store it)
-- are left out.
-- sessions = distinct sessions with a turn in the range. turns FINAL: one row
-- per (tenant, idempotency key), the first attempt.
SELECT
    tenant_id,
    assumeNotNull(workflow_id) AS workflow_id,
    uniqExact(session_id) AS sessions,
    count() AS turns,
    sum(input_tokens + output_tokens) AS tokens,
    sum(cost_usd_micros) AS cost_usd_micros
FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND ({workflow:String} = '' OR workflow_id = {workflow:String})
  AND ({model:String} = '' OR model = {model:String})
  AND ifNull(workflow_id, '') != ''
GROUP BY tenant_id, workflow_id
ORDER BY cost_usd_micros DESC, tenant_id, workflow_id
LIMIT {top:UInt32}
