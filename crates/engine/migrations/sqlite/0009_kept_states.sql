-- State a workflow keeps between runs that is too large for a cursor: the engagement read per
-- account (megabytes at 100,000 accounts). Kept as bytes, not base64 text, and compared by
-- `version` rather than by its whole value, so a run holds no copy of the old state to write
-- the new one and the database compares one integer.
CREATE TABLE kept_states (
    workflow   TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (workflow, name)
) WITHOUT ROWID;

-- The engagement states older versions kept as base64 cursor text are dropped, not converted
-- (SQL cannot re-encode them): a workflow's next run finds no state and reads its window whole
-- once, as a first run does, and keeps its state here.
DELETE FROM cursors WHERE name = 'engagement';
