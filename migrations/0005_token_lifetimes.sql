-- Session lifetimes (docs/DECISIONS.md, "Session and token lifetimes (issue 10)"): a session
-- is refused once unused for longer than IDENTITY_SESSION_IDLE_TIMEOUT_S or older than
-- IDENTITY_SESSION_MAX_AGE_S. Its last use is written by the principal lookup, at most once
-- per refresh interval, never on every request.
--
-- Added without a default first, so existing rows are not rewritten: their NULL reads as
-- their creation time (coalesce(last_used_at, created_at)). New sessions start at their
-- creation.
ALTER TABLE sessions ADD COLUMN last_used_at timestamptz;
ALTER TABLE sessions ALTER COLUMN last_used_at SET DEFAULT clock_timestamp();
