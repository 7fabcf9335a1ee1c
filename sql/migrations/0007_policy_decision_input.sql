-- 0007 what a decision was about (issue 12, item 1): PolicyDecided v2 carries the
-- call as the policy read it (destination normalised, method, payload size, risk)
-- and the digest a tool adapter checks; rows written before this have NULLs / ''.
-- Frozen once shipped: change the schema with a new numbered file.
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS destination_host Nullable(String) AFTER action;
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS destination_port Nullable(UInt16) AFTER destination_host;
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS method LowCardinality(Nullable(String)) AFTER destination_port;
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS payload_bytes Nullable(UInt32) AFTER method;
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS risk_level LowCardinality(Nullable(String)) AFTER payload_bytes;
ALTER TABLE policy_decisions ADD COLUMN IF NOT EXISTS proposal_digest String AFTER risk_level;
