-- The values the console's selectors offer: the tenants, workflows and models with
-- turns in [from, to), of one tenant ('' = all), in one scan. Without FINAL: a
-- selector lists values, and a duplicate row repeats a value it already has.
SELECT arraySort(groupUniqArray(tenant_id)) AS tenants,
       arraySort(groupUniqArrayIf(assumeNotNull(workflow_id), ifNull(workflow_id, '') != ''))
           AS workflows,
       arraySort(groupUniqArray(model)) AS models
FROM turns
WHERE occurred_at >= {from:DateTime64(6)} AND occurred_at < {to:DateTime64(6)}
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
