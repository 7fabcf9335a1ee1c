-- panel: Budget burn per tenant and scope
-- unit: events (count); peak_used, budget_limit in the scope's unit (tokens or USD micros)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id,scope values=peak_used_ratio limit=limit_ratio
--
-- BudgetWarning and BudgetExceeded events with from <= occurred_at < to, per
-- tenant and budget scope (session, workflow, tenant_day, tenant_month, ...):
-- how many of each, the highest threshold warned, the highest usage reported
-- and the limit of the latest event; peak_used_ratio = peak_used / budget_limit
-- (1.0 = the whole budget, limit_ratio). budget_events FINAL: one row per event.
SELECT
    tenant_id,
    toString(scope) AS scope,
    countIf(event_type = 'BudgetWarning') AS warnings,
    countIf(event_type = 'BudgetExceeded') AS exceeded,
    max(threshold_pct) AS max_threshold_pct,
    max(used) AS peak_used,
    argMax(budget_limit, (occurred_at, event_id)) AS budget_limit,
    if(budget_limit = 0, NULL, peak_used / budget_limit) AS peak_used_ratio,
    1.0 AS limit_ratio
FROM budget_events FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id, scope
ORDER BY tenant_id, scope
