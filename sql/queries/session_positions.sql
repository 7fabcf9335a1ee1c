-- Where one session's derived records are in the log, for `govstream export
-- session` (with the tenant log, tenant_log_positions.sql): the archive mirrors
-- every record of the sink's topics with its Kafka position; the events
-- themselves are then read from Kafka at exactly these positions
-- (streams/log_reader.py read_positions), never from here.
-- FINAL: a record the at-least-once sink inserted twice is one position.
-- Parameters: session String, tenant String, topic String (the derived topic).
SELECT topic, partition, offset
FROM events_archive FINAL
WHERE session_id = {session:String} AND tenant_id = {tenant:String} AND topic = {topic:String}
ORDER BY partition, offset
