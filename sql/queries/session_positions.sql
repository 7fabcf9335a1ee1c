-- Where one session's records are in the log, for `govstream replay session`
-- and `govstream export session`: the archive mirrors every record of the
-- sink's topics (producer events and the processors' derived facts) with its
-- Kafka position; the events themselves are then read from Kafka at exactly
-- these positions (streams/log_reader.py read_positions), never from here.
-- FINAL: a record the at-least-once sink inserted twice is one position.
-- Parameters: session String.
SELECT topic, partition, offset
FROM events_archive FINAL
WHERE session_id = {session:String}
ORDER BY occurred_at, topic, partition, offset
