-- panel: Turn latency by tier (p50 / p95 / p99)
-- unit: milliseconds (end-to-end latency_ms and first_token_ms), turns (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), workflow String ('' = all), model String ('' = all)
-- chart: bars label=tier values=p50_latency_ms,p95_latency_ms,p99_latency_ms
--
-- Exact percentiles of every turn with from <= occurred_at < to, by the tier
-- of its session (first_token_ms is 0 when no token arrived). quantileExact(q):
-- of the n values sorted ascending x[0..n-1], x[floor(q * n)] (q * n in double
-- precision; q >= 1 takes x[n-1]); no interpolation, always a value of the
-- column. govstream.simulate.quantile_exact is the same definition in Python.
-- No approximate quantile (quantileTDigest etc.) is used: figures are exact.
SELECT
    s.tier AS tier,
    count() AS turns,
    quantileExact(0.5)(t.latency_ms) AS p50_latency_ms,
    quantileExact(0.95)(t.latency_ms) AS p95_latency_ms,
    quantileExact(0.99)(t.latency_ms) AS p99_latency_ms,
    quantileExact(0.5)(t.first_token_ms) AS p50_first_token_ms,
    quantileExact(0.95)(t.first_token_ms) AS p95_first_token_ms,
    quantileExact(0.99)(t.first_token_ms) AS p99_first_token_ms
FROM turns AS t FINAL
INNER JOIN (SELECT tenant_id, session_id, tier FROM sessions FINAL) AS s
    ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
WHERE t.occurred_at >= {from:DateTime64(6)} AND t.occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR t.tenant_id = {tenant:String})
  AND ({workflow:String} = '' OR t.workflow_id = {workflow:String})
  AND ({model:String} = '' OR t.model = {model:String})
GROUP BY tier
ORDER BY tier
