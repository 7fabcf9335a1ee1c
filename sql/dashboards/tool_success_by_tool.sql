-- panel: Tool success rate by tool
-- unit: ratio 0..1 (success_rate = succeeded / completed), calls (count)
-- params: from DateTime64(6), to DateTime64(6), tenant String ('' = all tenants)
-- chart: bars label=tool values=success_rate
--
-- Tool calls proposed in from <= proposed_at < to (the tool_calls view: one
-- row per operation, proposals and completions read with FINAL, first
-- attempt). completed = calls with a ToolCallCompleted (any status:
-- succeeded, failed, timeout, rejected); succeeded = status 'succeeded'.
-- success_rate is NULL when no call completed.
SELECT
    tool,
    count() AS proposed,
    countIf(completed) AS completed,
    countIf(status = 'succeeded') AS succeeded,
    if(completed = 0, NULL, succeeded / completed) AS success_rate
FROM tool_calls
WHERE proposed_at >= {from:DateTime64(6)} AND proposed_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tool
ORDER BY tool
