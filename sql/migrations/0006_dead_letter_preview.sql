-- 0006 dead letters without raw bytes (issue 10, item 6): a dead letter's raw
-- record can hold anything a producer sent, secrets included. The dead-letter
-- topic keeps the raw bytes (nothing is lost); ClickHouse keeps a redacted,
-- printable preview, the sha256 and size of the raw value, and the source
-- position (topic, partition, offset) to fetch the raw record from.
-- Frozen once shipped: change the schema with a new numbered file.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_preview String AFTER schema_id;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_sha256 String AFTER raw_preview;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_bytes UInt32 AFTER raw_sha256;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS raw_value;
