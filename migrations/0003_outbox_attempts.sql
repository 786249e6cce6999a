-- E-mail in batches: a row that fails to send counts its attempts; past the retry budget it
-- is dead (kept for inspection, never published again). last_error is the failure's kind
-- (an SMTP reply code or an exception class), never a message text that could hold a secret.
ALTER TABLE outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error text;
ALTER TABLE outbox ADD COLUMN dead_at timestamptz;
DROP INDEX outbox_unprocessed;
CREATE INDEX outbox_pending ON outbox (created_at) WHERE processed_at IS NULL AND dead_at IS NULL;
