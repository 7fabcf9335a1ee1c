-- One session's timeline for the console: every archived record of the session (its
-- own events and what the governor derived from them), by time; at one time, the
-- session's own record before what was derived from it (same occurred_at).
SELECT occurred_at, event_type, payload
FROM events_archive FINAL
WHERE tenant_id = {tenant:String} AND session_id = {session:String}
ORDER BY occurred_at, endsWith(topic, '.sessions') DESC, partition, offset
