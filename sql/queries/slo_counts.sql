-- SLO counts per (tenant, workflow, tier) and window, for `govstream slo`.
-- One row per scope: the tenant as a whole (workflow NULL) and each workflow.
-- Window i of {windows} holds the turns with now - windows[i] < occurred_at <= now
-- (projections/slo.py tally_turns is the same count in Python).
-- Parameters: now DateTime64(6), windows Array(UInt32) seconds, bad and ignored
-- Array(String) outcomes, tiers Array(String) with thresholds Array(UInt32): the
-- latency threshold in ms of each tier.
WITH
    {now:DateTime64(6)} AS now_,
    {windows:Array(UInt32)} AS windows_,
    counted AS (
        SELECT t.tenant_id AS tenant_id, t.workflow_id AS workflow_id, s.tier AS tier,
               t.occurred_at AS occurred_at, t.outcome IN {bad:Array(String)} AS failed,
               t.latency_ms > transform(s.tier, {tiers:Array(String)}, {thresholds:Array(UInt32)}, toUInt32(0)) AS slow
        FROM turns AS t FINAL
        INNER JOIN (SELECT tenant_id, session_id, tier FROM sessions FINAL) AS s
            ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
        WHERE t.occurred_at <= now_
          AND t.occurred_at > now_ - toIntervalSecond(arrayMax(windows_))
          AND t.outcome NOT IN {ignored:Array(String)}
    )
SELECT tenant_id, CAST(NULL AS Nullable(String)) AS workflow, tier,
       sumForEach(arrayMap(w -> toUInt64(occurred_at > now_ - toIntervalSecond(w)), windows_)) AS total,
       sumForEach(arrayMap(w -> toUInt64(failed AND occurred_at > now_ - toIntervalSecond(w)), windows_)) AS failed,
       sumForEach(arrayMap(w -> toUInt64(slow AND occurred_at > now_ - toIntervalSecond(w)), windows_)) AS slow
FROM counted
GROUP BY tenant_id, tier
UNION ALL
SELECT tenant_id, workflow_id AS workflow, tier,
       sumForEach(arrayMap(w -> toUInt64(occurred_at > now_ - toIntervalSecond(w)), windows_)) AS total,
       sumForEach(arrayMap(w -> toUInt64(failed AND occurred_at > now_ - toIntervalSecond(w)), windows_)) AS failed,
       sumForEach(arrayMap(w -> toUInt64(slow AND occurred_at > now_ - toIntervalSecond(w)), windows_)) AS slow
FROM counted
WHERE workflow_id IS NOT NULL
GROUP BY tenant_id, workflow_id, tier
ORDER BY tenant_id, workflow NULLS FIRST, tier
