-- The engine's state store, SQLite flavour. Timestamps are INTEGER microseconds since the Unix
-- epoch (UTC) so that comparisons and ordering are numeric; days are TEXT 'YYYY-MM-DD'.

CREATE TABLE runs (
    id          BLOB PRIMARY KEY,
    workflow    TEXT NOT NULL,
    template    TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    trigger     TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    stats       TEXT NOT NULL DEFAULT '{}',
    error       TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC);
CREATE INDEX runs_by_workflow ON runs (workflow, started_at DESC);

CREATE TABLE outcomes (
    id            INTEGER PRIMARY KEY,
    run_id        BLOB NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    object        TEXT NOT NULL,
    key           TEXT NOT NULL,
    -- Unicode-lowercased key, computed by the engine: SQLite's lower() folds ASCII only.
    key_lc        TEXT NOT NULL,
    salesforce_id TEXT,
    action        TEXT NOT NULL,
    changes       TEXT NOT NULL,
    error_code    TEXT,
    message       TEXT
);
-- Counts per action.
CREATE INDEX outcomes_by_run ON outcomes (run_id, action);
-- Pages of one run in recording order: SQLite appends the rowid (id) to every index.
CREATE INDEX outcomes_in_order ON outcomes (run_id);

CREATE TABLE cursors (
    workflow   TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workflow, name)
) WITHOUT ROWID;

CREATE TABLE id_map (
    workflow      TEXT NOT NULL,
    pendo_id      TEXT NOT NULL,
    status        TEXT NOT NULL,
    salesforce_id TEXT,
    rule          TEXT,
    candidates    TEXT NOT NULL,
    pinned        INTEGER NOT NULL,
    checked_at    INTEGER NOT NULL,
    PRIMARY KEY (workflow, pendo_id)
) WITHOUT ROWID;

CREATE TABLE fingerprints (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    field       TEXT NOT NULL,
    fingerprint INTEGER NOT NULL,
    written_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key, field)
) WITHOUT ROWID;

CREATE TABLE failures (
    id             INTEGER PRIMARY KEY,
    workflow       TEXT NOT NULL,
    run_id         BLOB NOT NULL,
    object         TEXT NOT NULL,
    key            TEXT NOT NULL,
    salesforce_id  TEXT,
    payload        TEXT NOT NULL,
    error_code     TEXT NOT NULL,
    message        TEXT NOT NULL,
    fields         TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at INTEGER NOT NULL,
    leased_until   INTEGER,
    leased_by      TEXT,
    resolved_at    INTEGER
);
-- At most one open failure per record: a repeat failure updates it instead of duplicating.
CREATE UNIQUE INDEX failures_one_open ON failures (workflow, object, key) WHERE status = 'open';
CREATE INDEX failures_by_status ON failures (status, error_code);

CREATE TABLE budget_days (
    day      TEXT PRIMARY KEY,
    reserved INTEGER NOT NULL,
    spent    INTEGER NOT NULL
);
CREATE TABLE budget_workflows (
    day      TEXT NOT NULL,
    workflow TEXT NOT NULL,
    reserved INTEGER NOT NULL,
    spent    INTEGER NOT NULL,
    PRIMARY KEY (day, workflow)
) WITHOUT ROWID;
CREATE TABLE budget_spend (
    id       INTEGER PRIMARY KEY,
    day      TEXT NOT NULL,
    workflow TEXT NOT NULL,
    calls    INTEGER NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX budget_spend_by_day ON budget_spend (day);
CREATE TABLE budget_org (
    day         TEXT PRIMARY KEY,
    used        INTEGER NOT NULL,
    max         INTEGER NOT NULL,
    observed_at INTEGER NOT NULL
);

CREATE TABLE idempotency (
    key           TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    state         TEXT NOT NULL,
    salesforce_id TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
