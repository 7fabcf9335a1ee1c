-- panel: Turn success rate by tier
-- unit: ratio 0..1 (success_rate = ok / counted), turns (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), workflow String ('' = all), model String ('' = all)
-- chart: bars label=tier values=success_rate
--
-- Turns with from <= occurred_at < to, by the tier of their session. As in
-- projections/slo.py (the default SLO ignores 'cancelled'): cancelled turns
-- are not counted; counted = every other turn (ok, error, timeout); ok =
-- outcome 'ok'. success_rate is NULL when nothing was counted. turns FINAL:
-- the first attempt of each (tenant, idempotency key).
SELECT
    s.tier AS tier,
    countIf(t.outcome = 'ok') AS ok,
    countIf(t.outcome != 'cancelled') AS counted,
    countIf(t.outcome = 'cancelled') AS cancelled,
    if(counted = 0, NULL, ok / counted) AS success_rate
FROM turns AS t FINAL
INNER JOIN (SELECT tenant_id, session_id, tier FROM sessions FINAL) AS s
    ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
WHERE t.occurred_at >= {from:DateTime64(6)} AND t.occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR t.tenant_id = {tenant:String})
  AND ({workflow:String} = '' OR t.workflow_id = {workflow:String})
  AND ({model:String} = '' OR t.model = {model:String})
GROUP BY tier
ORDER BY tier
