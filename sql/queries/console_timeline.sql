-- One session's timeline for the console: every archived record of the session (its
-- own events and what the governor derived from them), in log order per partition.
SELECT occurred_at, event_type, payload
FROM events_archive FINAL
WHERE tenant_id = {tenant:String} AND session_id = {session:String}
ORDER BY occurred_at, partition, offset
