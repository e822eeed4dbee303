-- Outcomes are most of the store: a row per written record per run. New rows spell a change
-- as [field id, before, after] with the field's name kept once here, and keep key_lc only when
-- folding changes the key (the search reads coalesce(key_lc, key)). Rows written by older
-- versions keep their {field, before, after} changes; the engine reads both.
CREATE TABLE field_names (
    id   serial PRIMARY KEY,
    name text NOT NULL UNIQUE
);
ALTER TABLE outcomes ALTER COLUMN key_lc DROP NOT NULL;
-- Counts per action read through outcomes_in_order (run_id, id); this index cost as much as
-- the rows' keys.
DROP INDEX outcomes_by_run;
