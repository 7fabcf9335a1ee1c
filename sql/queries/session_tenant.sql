-- Which tenant, and where in the tenant log, one session is: the tenant and
-- partition of its records on the tenant log and the offset of its last one,
-- for `govstream replay session` and `govstream export session`.
-- Parameters: session String, topic String (the tenant log).
SELECT tenant_id, partition, max(offset) AS last_offset
FROM events_archive FINAL
WHERE session_id = {session:String} AND topic = {topic:String}
GROUP BY tenant_id, partition
ORDER BY tenant_id
