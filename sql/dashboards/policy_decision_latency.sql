-- panel: Policy decision latency (p50 / p95 / p99)
-- unit: microseconds (evaluation_us), decisions (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=decision values=p50_evaluation_us,p95_evaluation_us,p99_evaluation_us
--
-- Exact percentiles of the policy engine's evaluation time of the decisions
-- with from <= decided_at < to: one row per decision kind and a row 'all'.
-- quantileExact(q) = x[floor(q * n)] of the n sorted values (see
-- latency_by_tier.sql); no approximate quantile is used. policy_decisions
-- FINAL: one decision per (tenant, operation key).
WITH decided AS (
    SELECT decision, evaluation_us
    FROM policy_decisions FINAL
    WHERE decided_at >= {from:DateTime64(6)} AND decided_at < {to:DateTime64(6)}
      AND ({tenant:String} = '' OR tenant_id = {tenant:String})
)
SELECT * FROM (
    SELECT
        toString(decision) AS decision,
        count() AS decisions,
        quantileExact(0.5)(evaluation_us) AS p50_evaluation_us,
        quantileExact(0.95)(evaluation_us) AS p95_evaluation_us,
        quantileExact(0.99)(evaluation_us) AS p99_evaluation_us
    FROM decided
    GROUP BY decision
    UNION ALL
    SELECT
        'all' AS decision,
        count() AS decisions,
        quantileExact(0.5)(evaluation_us) AS p50_evaluation_us,
        quantileExact(0.95)(evaluation_us) AS p95_evaluation_us,
        quantileExact(0.99)(evaluation_us) AS p99_evaluation_us
    FROM decided
    HAVING decisions > 0
)
ORDER BY decision
