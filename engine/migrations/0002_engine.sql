-- The engine's own state: campaigns, API keys, donations (intents, idempotency, the durable charge queue),
-- refunds, per-donor contribution aggregates and processed processor events.
CREATE SCHEMA IF NOT EXISTS surge;

CREATE TABLE surge.campaigns (
    slug                         text PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name                         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency                     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    election                     text NOT NULL CHECK (length(election) BETWEEN 1 AND 100),
    contribution_limit_minor     bigint NOT NULL CHECK (contribution_limit_minor > 0),
    itemization_threshold_minor  bigint NOT NULL DEFAULT 20000 CHECK (itemization_threshold_minor >= 0),
    require_attestation          boolean NOT NULL DEFAULT true,
    allowed_origins              text[] NOT NULL DEFAULT '{}',
    created_at                   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE surge.api_keys (
    id           text PRIMARY KEY,
    secret_hash  bytea NOT NULL UNIQUE,  -- sha256 of the whole key: keys are random, so no slow hash is needed
    role         text NOT NULL CHECK (role IN ('form', 'finance', 'admin')),
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Per donor and election, what is posted and what is held by donations not yet settled. The CHECK is the last
-- line of defence for the limit: whatever the code does, the database refuses to exceed it.
CREATE TABLE surge.contribution_aggregates (
    campaign       text NOT NULL REFERENCES surge.campaigns (slug),
    election       text NOT NULL,
    donor_key      text NOT NULL,
    limit_minor    bigint NOT NULL CHECK (limit_minor > 0),
    posted_minor   bigint NOT NULL DEFAULT 0 CHECK (posted_minor >= 0),
    held_minor     bigint NOT NULL DEFAULT 0 CHECK (held_minor >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, election, donor_key),
    CHECK (posted_minor + held_minor <= limit_minor)
);

CREATE TABLE surge.donations (
    id                   text PRIMARY KEY,
    api_key_id           text NOT NULL REFERENCES surge.api_keys (id),
    idempotency_key      text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint  bytea NOT NULL,
    campaign             text NOT NULL REFERENCES surge.campaigns (slug),
    election             text NOT NULL,
    donor_key            text NOT NULL,
    amount_minor         bigint NOT NULL CHECK (amount_minor > 0),
    currency             char(3) NOT NULL,
    payment_method       text NOT NULL,
    donor                jsonb NOT NULL,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- queued: accepted, waiting for processor capacity; charging: sent (or about to be) to the processor, leased
    -- until next_attempt_at; pending: the processor has not decided (requires action, unknown); then final states.
    status               text NOT NULL CHECK (status IN
                             ('queued', 'charging', 'pending', 'succeeded', 'declined', 'failed')),
    processor            text,
    processor_reference  text,
    decline_code         text,
    failure_message      text,
    fee_minor            bigint CHECK (fee_minor >= 0),
    refunded_minor       bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    refund_reserved_minor bigint NOT NULL DEFAULT 0 CHECK (refund_reserved_minor >= 0),
    disputed_minor       bigint NOT NULL DEFAULT 0 CHECK (disputed_minor >= 0),
    attempts             integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    client_ip            inet,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    settled_at           timestamptz,
    UNIQUE (api_key_id, idempotency_key),
    CHECK (refunded_minor + refund_reserved_minor + disputed_minor <= amount_minor)
);
-- The durable charge queue and the recovery scan both read "due, unfinished" donations in order.
CREATE INDEX donations_due ON surge.donations (next_attempt_at, created_at)
    WHERE status IN ('queued', 'charging', 'pending');
CREATE INDEX donations_campaign_created ON surge.donations (campaign, created_at);
CREATE INDEX donations_processor_reference ON surge.donations (processor_reference);
CREATE INDEX donations_donor ON surge.donations (campaign, election, donor_key);
-- Card-testing velocity: recent declines by source address and by donor.
CREATE INDEX donations_declines_by_ip ON surge.donations (client_ip, settled_at) WHERE status = 'declined';
CREATE INDEX donations_declines_by_donor ON surge.donations (campaign, donor_key, settled_at)
    WHERE status = 'declined';

CREATE TABLE surge.refunds (
    id                   text PRIMARY KEY,
    donation_id          text NOT NULL REFERENCES surge.donations (id),
    api_key_id           text REFERENCES surge.api_keys (id),
    idempotency_key      text,
    amount_minor         bigint NOT NULL CHECK (amount_minor > 0),
    currency             char(3) NOT NULL,
    status               text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    processor_reference  text,
    failure_message      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_key_id, idempotency_key)
);
CREATE UNIQUE INDEX refunds_processor_reference ON surge.refunds (processor_reference)
    WHERE processor_reference IS NOT NULL;

CREATE TABLE surge.processor_events (
    processor    text NOT NULL,
    event_id     text NOT NULL,
    type         text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (processor, event_id)
);
