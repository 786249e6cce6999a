-- Core schema: organizations, users (current state), the append-only event log, sessions,
-- personal access tokens, the transactional outbox, password history and policies.
-- IDs are text: Sonyflake-style decimal strings, or caller-chosen user IDs (1..200 chars).

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    domain      text NOT NULL UNIQUE,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX organizations_one_default ON organizations (is_default) WHERE is_default;

CREATE TABLE users (
    id                        text PRIMARY KEY,
    org_id                    text NOT NULL REFERENCES organizations (id),
    kind                      text NOT NULL CHECK (kind IN ('human', 'machine')),
    -- IAM_OWNER, ORG_OWNER, ORG_USER_MANAGER or NULL (acts only on itself).
    role                      text CHECK (role IN ('IAM_OWNER', 'ORG_OWNER', 'ORG_USER_MANAGER')),
    username                  text NOT NULL,
    given_name                text NOT NULL DEFAULT '',
    family_name               text NOT NULL DEFAULT '',
    display_name              text NOT NULL DEFAULT '',
    email                     text NOT NULL DEFAULT '',
    email_verified            boolean NOT NULL DEFAULT false,
    state                     text NOT NULL DEFAULT 'active'
                              CHECK (state IN ('active', 'inactive', 'locked')),
    password_hash             text,
    password_change_required  boolean NOT NULL DEFAULT false,
    password_changed_at       timestamptz,
    failed_password_attempts  integer NOT NULL DEFAULT 0,
    sequence                  bigint NOT NULL,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    deleted_at                timestamptz
);
CREATE UNIQUE INDEX users_username_per_org ON users (org_id, lower(username)) WHERE deleted_at IS NULL;
CREATE INDEX users_username ON users (lower(username)) WHERE deleted_at IS NULL;

-- Append-only: one row per state change of an aggregate (a user or a session).
CREATE TABLE events (
    aggregate_id    text NOT NULL,
    sequence        bigint NOT NULL,
    aggregate_type  text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    creator         text NOT NULL DEFAULT '',
    resource_owner  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_id, sequence)
);
CREATE INDEX events_type_time ON events (event_type, created_at);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TABLE sessions (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id),
    token_hash  bytea NOT NULL UNIQUE,
    sequence    bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz
);
CREATE INDEX sessions_user_live ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

CREATE TABLE personal_access_tokens (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id),
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);

-- Side effects written in the same transaction as the change they belong to.
-- task args carry only the id; payload never holds a secret in clear text.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    task            text NOT NULL,
    aggregate_id    text NOT NULL,
    event_sequence  bigint NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    publish_count   integer NOT NULL DEFAULT 0,
    processed_at    timestamptz
);
CREATE INDEX outbox_unprocessed ON outbox (created_at) WHERE processed_at IS NULL;

CREATE TABLE password_history (
    user_id        text NOT NULL REFERENCES users (id),
    sequence       bigint NOT NULL,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, sequence)
);

-- One row per organization that overrides instance defaults; absent keys use the defaults.
CREATE TABLE policies (
    org_id      text PRIMARY KEY REFERENCES organizations (id),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
