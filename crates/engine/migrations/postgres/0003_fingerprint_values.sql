-- The value usagesync last wrote per record and field, so a run's history can show before → after.
ALTER TABLE fingerprints ADD COLUMN value TEXT;
