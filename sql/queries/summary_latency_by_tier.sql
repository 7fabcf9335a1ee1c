-- Demo summary: exact p95 end-to-end and first-token latency per session tier.
SELECT
    s.tier AS tier,
    count() AS turns,
    quantileExact(0.95)(t.latency_ms) AS p95_latency_ms,
    quantileExact(0.95)(t.first_token_ms) AS p95_first_token_ms
FROM turns AS t FINAL
INNER JOIN sessions AS s FINAL ON t.session_id = s.session_id
GROUP BY tier
ORDER BY tier
