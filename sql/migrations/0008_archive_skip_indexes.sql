-- 0008 skip indexes on the archive (issue 14): it is ordered by log position
-- (topic, partition, offset), so the console's lookups by what a record is read
-- every part: the tenants' latest profiles (event_type = 'TenantProfileUpdated',
-- rare records) and one session's timeline (session_id). A set index on the
-- type and a bloom filter on the session let ClickHouse skip the granules that
-- hold neither. MATERIALIZE builds them for the parts written before this file.
-- Frozen once shipped: change the schema with a new numbered file.
ALTER TABLE events_archive ADD INDEX IF NOT EXISTS archive_event_type event_type TYPE set(256) GRANULARITY 4;
ALTER TABLE events_archive ADD INDEX IF NOT EXISTS archive_session session_id TYPE bloom_filter(0.01) GRANULARITY 4;
ALTER TABLE events_archive MATERIALIZE INDEX archive_event_type;
ALTER TABLE events_archive MATERIALIZE INDEX archive_session;
