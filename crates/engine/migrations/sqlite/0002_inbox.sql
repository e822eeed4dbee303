-- Webhook events, stored before the sender is answered and de-duplicated on the sender's id.
CREATE TABLE inbox (
    unique_id    TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    body         TEXT NOT NULL,
    processed_at INTEGER
);
CREATE INDEX inbox_pending ON inbox (received_at) WHERE processed_at IS NULL;
