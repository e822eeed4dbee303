-- A person may close a failure without replaying it ("the Account is being deleted", "known
-- data problem"): its status becomes 'dismissed' and the reason they gave is kept with it, so
-- history says who decided what and why. Dismissed rows are no longer open: not replayed, not
-- counted by metrics, the console or exit hints.
ALTER TABLE failures ADD COLUMN reason TEXT;
