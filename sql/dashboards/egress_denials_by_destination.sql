-- panel: Egress denials by destination
-- unit: denials (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=destination_host,reason_code values=denials
--
-- Policy 'deny' decisions with an EGRESS_* reason code (EGRESS_NOT_ALLOWED,
-- EGRESS_INVALID_HOST, ...) and from <= decided_at < to, by the destination
-- host the decision names (decisions v2 carry it, so a denial made through the
-- admission API, which has no ToolCallProposed, has its host too), else the
-- proposed tool call's (tool_proposals, joined on tenant and operation key: v1
-- decisions), else '' and by reason.
-- Both tables read with FINAL: one row per (tenant, operation key).
SELECT
    coalesce(d.destination_host, p.destination_host, '') AS destination_host,
    toString(d.reason_code) AS reason_code,
    count() AS denials
FROM policy_decisions AS d FINAL
LEFT JOIN (
    SELECT tenant_id, operation_key, destination_host FROM tool_proposals FINAL
) AS p ON p.tenant_id = d.tenant_id AND p.operation_key = d.operation_key
WHERE d.decision = 'deny' AND startsWith(d.reason_code, 'EGRESS_')
  AND d.decided_at >= {from:DateTime64(6)} AND d.decided_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR d.tenant_id = {tenant:String})
GROUP BY destination_host, reason_code
ORDER BY denials DESC, destination_host, reason_code
