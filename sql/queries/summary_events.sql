-- Demo summary: records archived and distinct events, per topic.
SELECT
    topic,
    count() AS records,
    uniqExact(event_id) AS events
FROM events_archive FINAL
GROUP BY topic
ORDER BY topic
