-- Inbox claims: every worker sharing the store takes batches of pending events under a lease
-- (claimed_by, lease_until in µs), renewed while it writes them; a worker that dies leaves its
-- batch claimable again once the lease lapses. The ordering keys are the answer's visitor and
-- Pendo account: while one worker holds a live claim on an event of a visitor or account, no
-- other worker claims that visitor's or account's events. (SQLite adds generated columns only
-- as VIRTUAL; they are computed from the body when read or indexed.)
ALTER TABLE inbox ADD COLUMN claimed_by TEXT;
ALTER TABLE inbox ADD COLUMN lease_until INTEGER;
ALTER TABLE inbox ADD COLUMN visitor_key TEXT GENERATED ALWAYS AS (json_extract(body, '$.visitorId')) VIRTUAL;
ALTER TABLE inbox ADD COLUMN account_key TEXT GENERATED ALWAYS AS (json_extract(body, '$.accountId')) VIRTUAL;
CREATE INDEX inbox_pending_visitor ON inbox (visitor_key) WHERE processed_at IS NULL;
CREATE INDEX inbox_pending_account ON inbox (account_key) WHERE processed_at IS NULL;
