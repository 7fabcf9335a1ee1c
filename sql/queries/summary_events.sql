-- Demo summary: records archived and distinct events, per topic. An event is
-- one (tenant, idempotency key): a runtime's retry has a new event_id but is
-- not a new event, and a redelivered record is not either.
SELECT
    topic,
    count() AS records,
    uniqExact(tenant_id, JSONExtractString(payload, 'idempotency_key')) AS events
FROM events_archive FINAL
GROUP BY topic
ORDER BY topic
