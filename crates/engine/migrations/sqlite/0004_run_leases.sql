-- Runs hold a lease while they execute: the process holding it (host:pid), when it last renewed
-- it, and when it lapses unless renewed. A running run past its lease is marked abandoned by
-- the next claim or the daemon's sweep, so a dead process never leaves a run running forever.
ALTER TABLE runs ADD COLUMN holder TEXT;
ALTER TABLE runs ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;

-- Runs left running by versions that kept no lease cannot be told apart from dead ones: their
-- lease is taken to have lapsed when they started, so the first sweep marks them abandoned.
UPDATE runs SET lease_until = started_at WHERE state = 'running';

-- At most one leased run per workflow is running, whatever the processes sharing the store do:
-- a claim sweeps expired leases first, then inserts, and a second live claim conflicts here.
CREATE UNIQUE INDEX runs_one_live_per_workflow ON runs (workflow) WHERE state = 'running' AND holder IS NOT NULL;

-- Sweeps look only at running runs.
CREATE INDEX runs_running_by_lease ON runs (lease_until) WHERE state = 'running';
