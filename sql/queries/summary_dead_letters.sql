-- Demo summary: dead letters by reason code.
SELECT reason_code, count() AS records
FROM dead_letters FINAL
GROUP BY reason_code
ORDER BY reason_code
