-- panel: Cost per model
-- unit: USD micro-dollars (integer), tokens and turns (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), workflow String ('' = all), model String ('' = all)
-- chart: bars label=model values=cost_usd_micros
--
-- Model cost and tokens of the turns with from <= occurred_at < to, per model.
-- turns FINAL: one row per (tenant, idempotency key), the first attempt.
SELECT
    model,
    count() AS turns,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd_micros) AS cost_usd_micros
FROM turns FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND ({workflow:String} = '' OR workflow_id = {workflow:String})
  AND ({model:String} = '' OR model = {model:String})
GROUP BY model
ORDER BY cost_usd_micros DESC, model
