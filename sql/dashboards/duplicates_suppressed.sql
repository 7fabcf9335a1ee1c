-- panel: Duplicates suppressed per tenant
-- unit: suppressed duplicates (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id,suppressed_by values=duplicates
--
-- DuplicateSuppressed events with from <= occurred_at < to, per tenant and
-- which component suppressed them. duplicates_suppressed FINAL: one row per
-- event_id (a redelivered record counts once).
SELECT
    tenant_id,
    toString(suppressed_by) AS suppressed_by,
    count() AS duplicates
FROM duplicates_suppressed FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id, suppressed_by
ORDER BY tenant_id, suppressed_by
