-- Outcomes are most of the store: a row per written record per run. New rows spell a change
-- as [field id, before, after] with the field's name kept once here, and keep key_lc only when
-- folding changes the key (the search reads coalesce(key_lc, key)). Rows migrated from older
-- versions keep their {field, before, after} changes; the engine reads both.
CREATE TABLE field_names (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- SQLite cannot drop a NOT NULL constraint in place: the table is copied.
CREATE TABLE outcomes_compact (
    id            INTEGER PRIMARY KEY,
    run_id        BLOB NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    object        TEXT NOT NULL,
    key           TEXT NOT NULL,
    key_lc        TEXT,
    salesforce_id TEXT,
    action        TEXT NOT NULL,
    changes       TEXT NOT NULL,
    error_code    TEXT,
    message       TEXT
);
INSERT INTO outcomes_compact (id, run_id, object, key, key_lc, salesforce_id, action, changes, error_code, message)
    SELECT id, run_id, object, key, NULLIF(key_lc, key), salesforce_id, action, changes, error_code, message
    FROM outcomes;
DROP TABLE outcomes;
ALTER TABLE outcomes_compact RENAME TO outcomes;
-- One index: pages of a run in recording order (SQLite appends the rowid), and counts per
-- action read through it. The (run_id, action) index it replaces cost as much as the rows' keys.
CREATE INDEX outcomes_in_order ON outcomes (run_id);
