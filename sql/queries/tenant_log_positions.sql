-- The tenant's records on its partition of the tenant log up to one offset:
-- the input the governor folded for a session, replayed by `govstream replay
-- session` (the relayed profiles, the admission requests and every session of
-- the tenant decide a session's budgets). The events are then read from Kafka
-- at exactly these positions (streams/log_reader.py read_positions).
-- Parameters: tenant String, topic String, partition UInt32, last UInt64.
SELECT topic, partition, offset
FROM events_archive FINAL
WHERE tenant_id = {tenant:String} AND topic = {topic:String}
  AND partition = {partition:UInt32} AND offset <= {last:UInt64}
ORDER BY offset
