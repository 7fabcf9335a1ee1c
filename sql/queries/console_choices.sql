-- The values the console's selectors offer: tenants, workflows and models with turns
-- in [from, to), of one tenant ('' = all).
SELECT 'tenant' AS kind, tenant_id AS value FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY value
UNION ALL
SELECT 'workflow' AS kind, ifNull(workflow_id, '') AS value FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String}) AND workflow_id IS NOT NULL
GROUP BY value
UNION ALL
SELECT 'model' AS kind, model AS value FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY value
ORDER BY kind, value
