-- The console's session list: the latest sessions started in [from, to) of a tenant
-- ('' = all) and workflow ('' = all), with their turns, tokens, cost and last
-- lifecycle step. At most `top` rows, newest first.
WITH
    picked AS (
        SELECT tenant_id, session_id, workflow_id, tier, started_at
        FROM sessions FINAL
        WHERE started_at >= {from:DateTime64(6)} AND started_at < {to:DateTime64(6)}
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
          AND ({workflow:String} = '' OR workflow_id = {workflow:String})
        ORDER BY started_at DESC, session_id
        LIMIT {top:UInt32}
    ),
    spent AS (
        SELECT tenant_id, session_id, count() AS turns,
               sum(input_tokens + output_tokens) AS tokens,
               sum(cost_usd_micros) AS cost_usd_micros
        FROM turns FINAL
        WHERE (tenant_id, session_id) IN (SELECT tenant_id, session_id FROM picked)
        GROUP BY tenant_id, session_id
    ),
    steps AS (
        SELECT tenant_id, session_id,
               argMax(event_type, occurred_at) AS last_step,
               countIf(outcome = 'rejected') AS refused
        FROM session_transitions FINAL
        WHERE (tenant_id, session_id) IN (SELECT tenant_id, session_id FROM picked)
        GROUP BY tenant_id, session_id
    )
SELECT p.tenant_id AS tenant_id, p.session_id AS session_id, p.workflow_id AS workflow_id,
       p.tier AS tier, p.started_at AS started_at, ifNull(s.turns, 0) AS turns,
       ifNull(s.tokens, 0) AS tokens, ifNull(s.cost_usd_micros, 0) AS cost_usd_micros,
       t.last_step AS last_step, ifNull(t.refused, 0) AS refused
FROM picked AS p
LEFT JOIN spent AS s ON s.tenant_id = p.tenant_id AND s.session_id = p.session_id
LEFT JOIN steps AS t ON t.tenant_id = p.tenant_id AND t.session_id = p.session_id
ORDER BY started_at DESC, session_id
