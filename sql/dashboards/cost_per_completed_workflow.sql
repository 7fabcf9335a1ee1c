-- panel: Cost per completed workflow
-- unit: USD micro-dollars (cost integer, cost per workflow Float64 mean), workflows (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tenant_id values=cost_per_workflow_usd_micros
--
-- Per tenant: the workflows with a turn in from <= occurred_at < to whose
-- sessions all completed, their cost in the range, and the mean cost per
-- such workflow. A session completed when its SessionClosed was applied: a
-- session_transitions row SessionClosed / applied whose event_id is no
-- rejected row's causation_id (a closed session, not a failed or quarantined
-- one). Completion is read as of now, whatever the range. A workflow_id
-- NULL or '' is no workflow. Sessions and
-- transitions are read with FINAL (first attempt of each key); a rejection and
-- its cause are of one tenant, so one tenant's view reads its own rows only.
WITH
    closed AS (
        SELECT tenant_id, session_id
        FROM session_transitions FINAL
        WHERE event_type = 'SessionClosed' AND outcome = 'applied'
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
          AND event_id NOT IN (
              SELECT assumeNotNull(causation_id) FROM session_transitions FINAL
              WHERE outcome = 'rejected' AND causation_id IS NOT NULL
                AND ({tenant:String} = '' OR tenant_id = {tenant:String})
          )
    ),
    completed AS (
        SELECT tenant_id, assumeNotNull(workflow_id) AS workflow_id
        FROM sessions FINAL
        WHERE ifNull(workflow_id, '') != ''
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
        GROUP BY tenant_id, workflow_id
        HAVING countIf((tenant_id, session_id) IN (SELECT tenant_id, session_id FROM closed)) = count()
    ),
    cost AS (
        SELECT tenant_id, assumeNotNull(workflow_id) AS workflow_id,
               sum(cost_usd_micros) AS cost_usd_micros
        FROM turns FINAL
        WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
          AND ifNull(workflow_id, '') != ''
        GROUP BY tenant_id, workflow_id
    )
SELECT
    c.tenant_id AS tenant_id,
    count() AS completed_workflows,
    sum(c.cost_usd_micros) AS cost_usd_micros,
    sum(c.cost_usd_micros) / count() AS cost_per_workflow_usd_micros
FROM cost AS c
INNER JOIN completed AS w ON w.tenant_id = c.tenant_id AND w.workflow_id = c.workflow_id
GROUP BY tenant_id
ORDER BY tenant_id
