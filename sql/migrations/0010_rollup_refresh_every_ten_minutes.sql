-- 0010 the per-minute rollups (0005) are recomputed every ten minutes, not every
-- minute (issue 14). A refresh reads the whole deduplicated turns table (FINAL:
-- it is ordered by identity, so 35 days are every row) and builds two t-digest
-- states per (tenant, minute, tier, model): over the 10M-turn benchmark data it
-- took 16 to 18 s on an idle 2-core machine and up to 40 s on a busy one, so
-- refreshing every minute kept one of the two cores busy a quarter to two thirds
-- of the time, under the sink and the console's pages (a tenant's page took 0.44 s
-- instead of 0.23 s during a refresh). Every ten minutes that is a fifteenth at
-- most; the rollups stay exact as of their last refresh (system.view_refreshes
-- says when). The decisions' rollup refreshes in about 2 s there, and is kept in
-- step so both answer for the same minutes.
-- Frozen once shipped: change the schema with a new numbered file.
ALTER TABLE turns_per_minute_refresh MODIFY REFRESH EVERY 10 MINUTE;
ALTER TABLE decisions_per_minute_refresh MODIFY REFRESH EVERY 10 MINUTE;
