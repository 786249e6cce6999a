-- A lock made by the lockout (too many wrong passwords) may end by itself: the organization's
-- policy key lockout_duration_seconds (0, the default: until an administrator unlocks).
-- NULL: no timed end (an administrator's lock, or a lockout of unlimited duration).
ALTER TABLE users ADD COLUMN locked_until timestamptz;
