-- The simulated payment processor's own record (adapters/simulated): what "the processor" did, kept apart from
-- Surge's ledger so that tests and audits can compare the two. Several engine processes share it; ``account`` is
-- the processor instance's name, the scope of idempotency keys as a Stripe account is.
CREATE SCHEMA IF NOT EXISTS simulator;

CREATE TABLE simulator.charges (
    id               text PRIMARY KEY,
    account          text NOT NULL,
    idempotency_key  text NOT NULL,
    donation_id      text NOT NULL,
    campaign         text NOT NULL,
    payment_method   text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    fee              bigint NOT NULL CHECK (fee >= 0),
    status           text NOT NULL CHECK (status IN ('succeeded', 'declined', 'requires_action')),
    decline_code     text,
    message          text,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- One charge per key: a replay finds this row instead of charging twice.
    UNIQUE (account, idempotency_key),
    CHECK ((status = 'declined') = (decline_code IS NOT NULL)),
    CHECK (status = 'succeeded' OR fee = 0)
);

CREATE TABLE simulator.refunds (
    id               text PRIMARY KEY,
    account          text NOT NULL,
    idempotency_key  text NOT NULL,
    refund_id        text NOT NULL,
    charge_id        text NOT NULL REFERENCES simulator.charges (id),
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         char(3) NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (account, idempotency_key)
);
CREATE INDEX refunds_charge ON simulator.refunds (charge_id);

CREATE TABLE simulator.disputes (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    charge_id   text NOT NULL UNIQUE REFERENCES simulator.charges (id),  -- one dispute per charge, as at Stripe
    amount      bigint NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    fee         bigint NOT NULL CHECK (fee >= 0),
    status      text NOT NULL CHECK (status IN ('needs_response', 'won', 'lost')),
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    CHECK ((status = 'needs_response') = (closed_at IS NULL))
);

CREATE TABLE simulator.payouts (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Every movement of the processor balance, signed (charges positive; refunds, dispute withdrawals and payouts
-- negative) with the fee taken on it: the unit of reconciliation. The available balance is sum(amount - fee).
CREATE TABLE simulator.balance_transactions (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    type        text NOT NULL CHECK (type IN ('charge', 'refund', 'dispute', 'payout')),
    amount      bigint NOT NULL,
    fee         bigint NOT NULL,
    currency    char(3) NOT NULL,
    source_id   text NOT NULL,  -- the charge, refund, dispute or payout
    charge_id   text REFERENCES simulator.charges (id),
    created_at  timestamptz NOT NULL
);
CREATE INDEX balance_transactions_account_created ON simulator.balance_transactions (account, created_at);

-- Webhook events as sent, so that a test can deliver one again (webhooks arrive more than once).
CREATE TABLE simulator.events (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    type        text NOT NULL,
    object_id   text NOT NULL,  -- the refund, dispute, payout or charge it is about
    payload     text NOT NULL,  -- the exact JSON that is signed
    created_at  timestamptz NOT NULL
);
CREATE INDEX events_account_created ON simulator.events (account, created_at);

-- Refunds never exceed their charge, whatever the code in front does: one pass over each inserted batch.
CREATE FUNCTION simulator.check_refund_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT c.id, c.amount, sum(r.amount) AS refunded INTO bad
      FROM simulator.charges c JOIN simulator.refunds r ON r.charge_id = c.id
     WHERE c.id IN (SELECT charge_id FROM new_refunds)
     GROUP BY c.id, c.amount
    HAVING sum(r.amount) > c.amount
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'charge % of % would be refunded %', bad.id, bad.amount, bad.refunded USING ERRCODE = 'SG101';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER refunds_within_charge AFTER INSERT ON simulator.refunds
    REFERENCING NEW TABLE AS new_refunds FOR EACH STATEMENT
    EXECUTE FUNCTION simulator.check_refund_totals();

-- Balance transactions are history: corrections are new transactions, as at a real processor.
CREATE FUNCTION simulator.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'simulator.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'SG102';
END $$;

CREATE TRIGGER balance_transactions_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON simulator.balance_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION simulator.reject_change();
