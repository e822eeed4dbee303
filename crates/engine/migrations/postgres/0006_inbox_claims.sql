-- Inbox claims: every worker sharing the store takes batches of pending events under a lease
-- (claimed_by, lease_until), renewed while it writes them; a worker that dies leaves its batch
-- claimable again once the lease lapses. The ordering keys are the answer's visitor and Pendo
-- account: while one worker holds a live claim on an event of a visitor or account, no other
-- worker claims that visitor's or account's events, so an older answer is never written after
-- a newer one by another worker.
ALTER TABLE inbox ADD COLUMN claimed_by TEXT;
ALTER TABLE inbox ADD COLUMN lease_until TIMESTAMPTZ;
ALTER TABLE inbox ADD COLUMN visitor_key TEXT GENERATED ALWAYS AS (body->>'visitorId') STORED;
ALTER TABLE inbox ADD COLUMN account_key TEXT GENERATED ALWAYS AS (body->>'accountId') STORED;
CREATE INDEX inbox_pending_visitor ON inbox (visitor_key) WHERE processed_at IS NULL;
CREATE INDEX inbox_pending_account ON inbox (account_key) WHERE processed_at IS NULL;
