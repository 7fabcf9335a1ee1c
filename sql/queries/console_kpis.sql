-- The console's overview figures for one range and filter (tenant, workflow, model;
-- '' = all): turns, success, p95 latency and cost in [from, to); spend since the UTC
-- day and month of `now`; policy denials in the range. Budgets come from the tenants'
-- latest profiles (summed over the tenants shown; NULL when none has that limit).
WITH
    {now:DateTime64(6)} AS now_,
    profiles AS (
        SELECT tenant_id, argMax(payload, occurred_at) AS profile
        FROM tenant_profiles
        WHERE occurred_at <= now_
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
        GROUP BY tenant_id
    ),
    -- One pass over the turns for both the range and the spend since the month began.
    figures AS (
        SELECT countIf(in_range) AS turns,
               countIf(in_range AND outcome = 'ok') AS ok_turns,
               countIf(in_range AND outcome != 'cancelled') AS counted_turns,
               quantileExactIf(0.95)(latency_ms, in_range) AS range_p95_ms,
               sumIf(cost_usd_micros, in_range) AS range_usd_micros,
               sumIf(cost_usd_micros, in_month AND occurred_at >= toStartOfDay(now_))
                   AS today_usd_micros,
               sumIf(cost_usd_micros, in_month) AS month_usd_micros
        FROM (
            SELECT occurred_at, outcome, latency_ms, cost_usd_micros,
                   occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
                       AS in_range,
                   occurred_at >= toStartOfMonth(now_) AND occurred_at <= now_ AS in_month
            FROM turns FINAL
            WHERE (in_range OR in_month)
              AND ({tenant:String} = '' OR tenant_id = {tenant:String})
              AND ({workflow:String} = '' OR workflow_id = {workflow:String})
              AND ({model:String} = '' OR model = {model:String})
        )
    ),
    denied AS (
        SELECT countIf(decision = 'deny') AS denials
        FROM policy_decisions FINAL
        WHERE decided_at >= {from:DateTime64(6)} AND decided_at < {to:DateTime64(6)}
          AND ({tenant:String} = '' OR tenant_id = {tenant:String})
          AND ({workflow:String} = '' OR workflow_id = {workflow:String})
    ),
    limits AS (
        SELECT sum(JSONExtract(profile, 'budgets', 'cost_per_day_usd_micros',
                               'Nullable(Int64)')) AS day_limit_usd_micros,
               sum(JSONExtract(profile, 'budgets', 'cost_per_month_usd_micros',
                               'Nullable(Int64)')) AS month_limit_usd_micros
        FROM profiles
    )
SELECT f.turns AS turns,
       if(f.counted_turns = 0, NULL, f.ok_turns / f.counted_turns) AS success_rate,
       if(f.turns = 0, NULL, f.range_p95_ms) AS p95_latency_ms,
       f.range_usd_micros AS cost_usd_micros,
       f.today_usd_micros AS today_usd_micros,
       f.month_usd_micros AS month_usd_micros,
       l.day_limit_usd_micros AS day_limit_usd_micros,
       l.month_limit_usd_micros AS month_limit_usd_micros,
       d.denials AS denials
FROM figures AS f, denied AS d, limits AS l
