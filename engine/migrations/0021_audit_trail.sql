-- Who did what: every action a person takes (a refund, resolving a reconciliation exception, a key created or
-- revoked, a campaign created or changed, a dashboard sign-in) is one row, written in the action's own transaction
-- where it has one (engine/audit.py). Append-only like the ledger: a correction is a new row.
CREATE TABLE surge.audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),  -- key:<id>, or cli:<user> at a terminal
    address     inet,  -- the client's address (after trusted proxy hops); NULL at the command line
    action      text NOT NULL CHECK (action ~ '^[a-z_]{1,60}$'),
    subject     text CHECK (length(subject) <= 200),  -- what it acted on: a donation, a key, a campaign, an exception
    changes     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_subject ON surge.audit_events (subject, id) WHERE subject IS NOT NULL;
CREATE INDEX audit_events_action ON surge.audit_events (action, id);

CREATE FUNCTION surge.audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'surge.audit_events is append-only: % is not allowed', TG_OP;
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON surge.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION surge.audit_events_append_only();
