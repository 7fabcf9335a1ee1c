-- panel: Duplicates suppressed by attempt lineage
-- unit: suppressed duplicates (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=original_attempt,duplicate_attempt,redelivery values=duplicates
--
-- DuplicateSuppressed events with from <= occurred_at < to, by retry lineage:
-- the attempt of the original that was applied and the attempt of the send
-- that repeated it (equal attempts: a redelivery of the same send; higher:
-- a runtime retry). duplicates_suppressed FINAL: one row per event_id.
SELECT
    original_attempt,
    duplicate_attempt,
    duplicate_attempt = original_attempt AS redelivery,
    count() AS duplicates
FROM duplicates_suppressed FINAL
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY original_attempt, duplicate_attempt
ORDER BY original_attempt, duplicate_attempt
