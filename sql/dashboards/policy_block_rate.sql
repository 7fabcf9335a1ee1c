-- panel: Policy block rate per tenant
-- unit: ratio 0..1 (block_rate = denied / decisions), decisions (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id values=block_rate
--
-- Policy decisions with from <= decided_at < to, per tenant: a block is a
-- 'deny'; 'require_approval' is counted apart (held for a human, not
-- blocked). policy_decisions FINAL: one decision per (tenant, operation key).
SELECT
    tenant_id,
    count() AS decisions,
    countIf(decision = 'allow') AS allowed,
    countIf(decision = 'deny') AS denied,
    countIf(decision = 'require_approval') AS require_approval,
    denied / decisions AS block_rate
FROM policy_decisions FINAL
WHERE decided_at >= {from:DateTime64(6)} AND decided_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id
ORDER BY tenant_id
