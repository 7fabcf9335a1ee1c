-- 0009 tenant profiles apart from the archive (issue 14): the console, the budget
-- panel and `govstream slo` read each tenant's latest TenantProfileUpdated on
-- every page. Found in the archive (ordered by log position, millions of rows)
-- that costs a scan of the event-type index, about 40 ms of a page at 2M
-- records; this table holds the profiles only, a few rows per tenant.
--
-- Filled on insert into the archive by a materialized view: the sink is
-- at-least-once, so a redelivered profile is inserted twice, and the key
-- (tenant_id, occurred_at, event_id) makes the copies one row on merge; readers
-- take argMax(payload, occurred_at), which two identical copies do not change,
-- so no FINAL is needed. No TTL: the archive's retention may drop a tenant's only
-- profile record, yet its budgets still hold. The INSERT copies the profiles
-- archived before this file (ClickHouse runs a view on new inserts only).
-- Frozen once shipped: change the schema with a new numbered file.
CREATE TABLE IF NOT EXISTS tenant_profiles
(
    tenant_id    LowCardinality(String),
    occurred_at  DateTime64(6, 'UTC'),
    event_id     String,
    payload      String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, occurred_at, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS tenant_profiles_from_archive
TO tenant_profiles
AS SELECT tenant_id, occurred_at, event_id, payload
FROM events_archive
WHERE event_type = 'TenantProfileUpdated';

INSERT INTO tenant_profiles (tenant_id, occurred_at, event_id, payload)
SELECT tenant_id, occurred_at, event_id, payload
FROM events_archive FINAL
WHERE event_type = 'TenantProfileUpdated'
  AND (tenant_id, occurred_at, event_id) NOT IN
      (SELECT tenant_id, occurred_at, event_id FROM tenant_profiles);
