-- Wake the relay (`identity relay`, LISTEN identity_outbox) when outbox rows are committed:
-- one notification per inserting statement, delivered at commit. Its periodic sweep is the
-- safety net for a notification missed while it was not listening.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('identity_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
