-- The engine's state store, PostgreSQL flavour. Same tables and columns as the SQLite one, with
-- native types: timestamptz, date, boolean, jsonb for documents a person may want to query.

CREATE TABLE runs (
    id          uuid PRIMARY KEY,
    workflow    text NOT NULL,
    template    text NOT NULL,
    dry_run     boolean NOT NULL,
    trigger     text NOT NULL,
    state       text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    stats       jsonb NOT NULL DEFAULT '{}',
    error       text
);
CREATE INDEX runs_by_start ON runs (started_at DESC);
CREATE INDEX runs_by_workflow ON runs (workflow, started_at DESC);

CREATE TABLE outcomes (
    id            bigserial PRIMARY KEY,
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    object        text NOT NULL,
    key           text NOT NULL,
    -- Lowercased by the engine, so both backends fold case the same way.
    key_lc        text NOT NULL,
    salesforce_id text,
    action        text NOT NULL,
    changes       text NOT NULL,
    error_code    text,
    message       text
);
-- Counts per action.
CREATE INDEX outcomes_by_run ON outcomes (run_id, action);
-- Pages of one run in recording order without sorting the whole run.
CREATE INDEX outcomes_in_order ON outcomes (run_id, id);

CREATE TABLE cursors (
    workflow   text NOT NULL,
    name       text NOT NULL,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (workflow, name)
);

CREATE TABLE id_map (
    workflow      text NOT NULL,
    pendo_id      text NOT NULL,
    status        text NOT NULL,
    salesforce_id text,
    rule          text,
    candidates    text NOT NULL,
    pinned        boolean NOT NULL,
    checked_at    timestamptz NOT NULL,
    PRIMARY KEY (workflow, pendo_id)
);

CREATE TABLE fingerprints (
    scope       text NOT NULL,
    key         text NOT NULL,
    field       text NOT NULL,
    fingerprint bigint NOT NULL,
    written_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, key, field)
);

CREATE TABLE failures (
    id              bigserial PRIMARY KEY,
    workflow        text NOT NULL,
    run_id          uuid NOT NULL,
    object          text NOT NULL,
    key             text NOT NULL,
    salesforce_id   text,
    payload         jsonb NOT NULL,
    error_code      text NOT NULL,
    message         text NOT NULL,
    fields          text NOT NULL,
    status          text NOT NULL,
    attempts        integer NOT NULL,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    leased_until    timestamptz,
    leased_by       text,
    resolved_at     timestamptz
);
-- At most one open failure per record: a repeat failure updates it instead of duplicating.
CREATE UNIQUE INDEX failures_one_open ON failures (workflow, object, key) WHERE status = 'open';
CREATE INDEX failures_by_status ON failures (status, error_code);

CREATE TABLE budget_days (
    day      date PRIMARY KEY,
    reserved bigint NOT NULL,
    spent    bigint NOT NULL
);
CREATE TABLE budget_workflows (
    day      date NOT NULL,
    workflow text NOT NULL,
    reserved bigint NOT NULL,
    spent    bigint NOT NULL,
    PRIMARY KEY (day, workflow)
);
CREATE TABLE budget_spend (
    id       bigserial PRIMARY KEY,
    day      date NOT NULL,
    workflow text NOT NULL,
    calls    bigint NOT NULL,
    at       timestamptz NOT NULL
);
CREATE INDEX budget_spend_by_day ON budget_spend (day);
CREATE TABLE budget_org (
    day         date PRIMARY KEY,
    used        bigint NOT NULL,
    max         bigint NOT NULL,
    observed_at timestamptz NOT NULL
);

CREATE TABLE idempotency (
    key           text PRIMARY KEY,
    workflow      text NOT NULL,
    state         text NOT NULL,
    salesforce_id text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
