-- panel: Invalid transition rate per tenant
-- unit: ratio (rejected / applied; share rejected / attempted 0..1), transitions (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id values=rejected_share
--
-- session_transitions rows with from <= occurred_at < to, per tenant:
-- rejected = InvalidTransitionRejected rows (outcome 'rejected'); applied =
-- applied rows whose event_id is no rejected row's causation_id (a runtime
-- event the processor rejected has an applied-looking row too; migration
-- 0003). The rates are NULL when their denominator is 0. FINAL: one row per
-- (tenant, session, idempotency key), the first attempt.
WITH rejected_events AS (
    SELECT assumeNotNull(causation_id) AS event_id
    FROM session_transitions FINAL
    WHERE outcome = 'rejected' AND causation_id IS NOT NULL
)
SELECT
    tenant_id,
    countIf(outcome = 'rejected') AS rejected,
    countIf(outcome = 'applied' AND event_id NOT IN (SELECT event_id FROM rejected_events)) AS applied,
    if(applied = 0, NULL, rejected / applied) AS rejected_per_applied,
    if(applied + rejected = 0, NULL, rejected / (applied + rejected)) AS rejected_share
FROM session_transitions FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id
ORDER BY tenant_id
