-- panel: Top policy denial reasons
-- unit: denials (count), share of denials 0..1
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants), top UInt32 (how many reasons)
-- chart: bars label=reason_code values=denials
--
-- The reason codes of the 'deny' decisions with from <= decided_at < to, the
-- most frequent first (ties by reason code), at most top rows. share =
-- denials / all denials in the range and tenant filter. policy_decisions
-- FINAL: one decision per (tenant, operation key).
WITH denied AS (
    SELECT reason_code
    FROM policy_decisions FINAL
    WHERE decision = 'deny'
      AND decided_at >= {from:DateTime64(6)} AND decided_at < {to:DateTime64(6)}
      AND ({tenant:String} = '' OR tenant_id = {tenant:String})
)
SELECT
    toString(reason_code) AS reason_code,
    count() AS denials,
    denials / (SELECT count() FROM denied) AS share
FROM denied
GROUP BY reason_code
ORDER BY denials DESC, reason_code
LIMIT {top:UInt32}
