-- Revocation inside the password change. A user's credentials version moves with every
-- password change; a session is valid only while it carries its user's current version, so
-- a login that checked the old password can never leave a working session behind, however
-- it interleaves with the change. The change ends the user's other sessions itself (no
-- revocation task any more), keeping the session that made it at the new version.
ALTER TABLE users ADD COLUMN credentials_version bigint NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN credentials_version bigint NOT NULL DEFAULT 1;

-- Revocations still waiting for the retired task are carried out here, once.
UPDATE sessions s
SET revoked_at = o.created_at, sequence = s.sequence + 1
FROM outbox o
WHERE o.task = 'identity.revoke_sessions' AND o.processed_at IS NULL
  AND s.user_id = o.aggregate_id AND s.revoked_at IS NULL AND s.created_at < o.created_at
  AND s.id IS DISTINCT FROM o.payload->>'exceptSessionId';
UPDATE outbox SET processed_at = clock_timestamp()
WHERE task = 'identity.revoke_sessions' AND processed_at IS NULL;
