-- The store stays small at 100,000 accounts (issue 17: ≤ 60 MB after 30 daily runs).
--
-- Fingerprints: one row per record and field still, but the scope and the field are numbers
-- (fingerprint_scopes, field_names) instead of text repeated on every row, the write time is
-- kept per scope (nothing reads it per row), and the fingerprint is NULL where it is the hash
-- of the value kept beside it (the engine derives it; rows converted here keep theirs).
CREATE TABLE fingerprint_scopes (
    id         serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    written_at timestamptz NOT NULL
);
INSERT INTO fingerprint_scopes (name, written_at) SELECT scope, max(written_at) FROM fingerprints GROUP BY scope;
INSERT INTO field_names (name) SELECT DISTINCT field FROM fingerprints ON CONFLICT (name) DO NOTHING;
CREATE TABLE fingerprints_by_id (
    scope_id    integer NOT NULL,
    key         text NOT NULL,
    field_id    integer NOT NULL,
    fingerprint bigint,
    value       text,
    PRIMARY KEY (scope_id, key, field_id)
);
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
    id      bigserial PRIMARY KEY,
    run_id  uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    rows    integer NOT NULL,
    actions text NOT NULL,
    codec   integer NOT NULL,
    body    bytea NOT NULL
);
CREATE INDEX outcome_pages_by_run ON outcome_pages (run_id, id);
INSERT INTO outcome_pages (run_id, rows, actions, codec, body)
    SELECT o.run_id, count(*),
        (SELECT CAST(json_object_agg(a.action, a.n) AS text)
         FROM (SELECT action, count(*) AS n FROM outcomes i WHERE i.run_id = o.run_id GROUP BY action) a),
        0,
        convert_to(CAST(json_agg(json_build_array(o.object, o.key, o.salesforce_id, o.action, CAST(o.changes AS json),
            o.error_code, o.message) ORDER BY o.id) AS text), 'UTF8')
    FROM outcomes o GROUP BY o.run_id;
DROP TABLE outcomes;
