-- The store stays small at 100,000 accounts (issue 17: ≤ 60 MB after 30 daily runs).
--
-- Fingerprints: one row per record and field still, but the scope and the field are numbers
-- (fingerprint_scopes, field_names) instead of text repeated on every row, the write time is
-- kept per scope (nothing reads it per row), and the fingerprint is NULL where it is the hash
-- of the value kept beside it (the engine derives it; rows converted here keep theirs).
CREATE TABLE fingerprint_scopes (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    written_at INTEGER NOT NULL
);
INSERT INTO fingerprint_scopes (name, written_at) SELECT scope, max(written_at) FROM fingerprints GROUP BY scope;
INSERT INTO field_names (name) SELECT DISTINCT field FROM fingerprints WHERE true ON CONFLICT (name) DO NOTHING;
CREATE TABLE fingerprints_by_id (
    scope_id    INTEGER NOT NULL,
    key         TEXT NOT NULL,
    field_id    INTEGER NOT NULL,
    fingerprint INTEGER,
    value       TEXT,
    PRIMARY KEY (scope_id, key, field_id)
) WITHOUT ROWID;
INSERT INTO fingerprints_by_id (scope_id, key, field_id, fingerprint, value)
    SELECT s.id, f.key, n.id, f.fingerprint, f.value
    FROM fingerprints f JOIN fingerprint_scopes s ON s.name = f.scope JOIN field_names n ON n.name = f.field;
DROP TABLE fingerprints;
ALTER TABLE fingerprints_by_id RENAME TO fingerprints;

-- Outcomes: a row per record per run cost about 230 bytes with its index. They are kept in
-- pages instead, a run's outcomes in recording order, up to a thousand per page, each page a
-- JSON array of [object, key, salesforce_id, action, changes, error_code, message] (changes as
-- outcomes held them), deflated (codec 1). Keys, field ids and the stamp repeat from record to
-- record and compress about sixfold. `actions` counts the page's outcomes per action, so
-- counts and filtered pages skip what they need not decode. Searches decode the run's pages.
--
-- Rows of older versions become one page per run, as plain JSON (codec 0): SQL cannot deflate.
CREATE TABLE outcome_pages (
    id      INTEGER PRIMARY KEY,
    run_id  BLOB NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    rows    INTEGER NOT NULL,
    actions TEXT NOT NULL,
    codec   INTEGER NOT NULL,
    body    BLOB NOT NULL
);
-- A run's pages in order: SQLite appends the rowid (id) to every index.
CREATE INDEX outcome_pages_by_run ON outcome_pages (run_id);
INSERT INTO outcome_pages (run_id, rows, actions, codec, body)
    SELECT o.run_id, count(*),
        (SELECT json_group_object(a.action, a.n)
         FROM (SELECT action, count(*) AS n FROM outcomes i WHERE i.run_id = o.run_id GROUP BY action) a),
        0,
        CAST(json_group_array(json_array(o.object, o.key, o.salesforce_id, o.action, json(o.changes), o.error_code,
            o.message) ORDER BY o.id) AS BLOB)
    FROM outcomes o GROUP BY o.run_id;
DROP TABLE outcomes;
