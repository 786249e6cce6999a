-- The outbox's dead rows, counted for /metrics every few seconds: a small partial index
-- instead of a scan of every row ever written.
CREATE INDEX outbox_dead ON outbox (id) WHERE dead_at IS NOT NULL;
