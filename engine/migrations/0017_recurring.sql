-- Recurring gifts and saved payment methods (engine/recurring/).
--
-- Surge keeps only the processor's references (customer, payment method) and what a donor needs to recognise a card
-- (brand, last four, expiry); the card itself stays at the processor.

-- A donor's identity for saved methods: an email address proven by a signed link (no passwords).
CREATE TABLE surge.donor_profiles (
    id           text PRIMARY KEY,
    email        text NOT NULL UNIQUE CHECK (email = lower(email)),
    verified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE surge.saved_payment_methods (
    id                        text PRIMARY KEY,
    profile_id                text REFERENCES surge.donor_profiles (id),
    processor                 text NOT NULL,
    customer_reference        text NOT NULL,
    payment_method_reference  text NOT NULL,
    brand                     text,
    last4                     text CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month                 integer CHECK (exp_month BETWEEN 1 AND 12),
    exp_year                  integer,
    -- The donor's name and address as validated when the method was saved: a Quick Donate gift reports them.
    donor                     jsonb NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    deleted_at                timestamptz,  -- detached at the donor's request: never charged again
    UNIQUE (processor, customer_reference, payment_method_reference)
);
CREATE INDEX saved_payment_methods_profile ON surge.saved_payment_methods (profile_id) WHERE deleted_at IS NULL;

-- A plan: an amount every week or month on a saved method, for a number of installments or until cancelled.
-- Period n is due at anchor_at + n intervals (computed from the anchor, so month ends do not drift).
CREATE TABLE surge.recurring_plans (
    id                 text PRIMARY KEY,
    campaign           text NOT NULL REFERENCES surge.campaigns (slug),
    saved_method_id    text NOT NULL REFERENCES surge.saved_payment_methods (id),
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           char(3) NOT NULL,
    interval           text NOT NULL CHECK (interval IN ('week', 'month')),
    installments_max   integer CHECK (installments_max > 0),  -- NULL: until cancelled
    donor              jsonb NOT NULL,
    donor_email        text NOT NULL,
    refcode            text CHECK (refcode ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- active: charged each period; past_due: a period is being retried (dunning); paused: by finance, nothing is
    -- materialised; cancelled and completed are final.
    status             text NOT NULL CHECK (status IN ('active', 'past_due', 'paused', 'cancelled', 'completed')),
    anchor_at          timestamptz NOT NULL,
    next_period        integer NOT NULL DEFAULT 0 CHECK (next_period >= 0),
    next_due_at        timestamptz,  -- NULL once every installment has been materialised
    cancel_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    cancelled_at       timestamptz,
    -- Creating a plan is idempotent per (key, Idempotency-Key), as a donation is.
    api_key_id         text REFERENCES surge.api_keys (id),
    idempotency_key    text,
    UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX recurring_plans_due ON surge.recurring_plans (next_due_at) WHERE status IN ('active', 'past_due');
CREATE INDEX recurring_plans_campaign ON surge.recurring_plans (campaign, status);

-- One row per (plan, period): the primary key is what makes a period exist once, whoever materialises it.
-- Each attempt at it is one donation through the pipeline, with the idempotency key recurring:<plan>:<period>:<n>
-- under the recurring key below, so a period's attempt n is one donation however many schedulers submit it.
CREATE TABLE surge.recurring_installments (
    plan_id          text NOT NULL REFERENCES surge.recurring_plans (id),
    period           integer NOT NULL CHECK (period >= 0),
    due_at           timestamptz NOT NULL,
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    -- due / retrying: waiting for next_attempt_at; charging: claimed (leased until next_attempt_at) or its
    -- donation not final yet; succeeded, failed, skipped: final.
    status           text NOT NULL CHECK (status IN ('due', 'retrying', 'charging', 'succeeded', 'failed', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    donation_id      text REFERENCES surge.donations (id),
    next_attempt_at  timestamptz NOT NULL,
    outcome_reason   text,  -- why skipped or failed (contribution_limit_exceeded, hard_decline:stolen_card, ...)
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, period)
);
CREATE INDEX recurring_installments_due ON surge.recurring_installments (next_attempt_at)
    WHERE status IN ('due', 'retrying', 'charging');

-- Every attempt and its outcome, for finance (and the audit: one succeeded attempt per period at most).
CREATE TABLE surge.recurring_attempts (
    plan_id      text NOT NULL,
    period       integer NOT NULL,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    donation_id  text REFERENCES surge.donations (id),
    outcome      text NOT NULL,  -- succeeded, declined, failed, skipped
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, period, attempt),
    FOREIGN KEY (plan_id, period) REFERENCES surge.recurring_installments (plan_id, period)
);
CREATE UNIQUE INDEX recurring_attempts_one_success ON surge.recurring_attempts (plan_id, period)
    WHERE outcome = 'succeeded';

-- Per-campaign recurring rules.
CREATE TABLE surge.recurring_campaign_settings (
    campaign                    text PRIMARY KEY REFERENCES surge.campaigns (slug),
    -- An installment past the donor's election limit is skipped; the plan then goes on or stops.
    on_limit                    text NOT NULL DEFAULT 'continue' CHECK (on_limit IN ('continue', 'stop')),
    -- Quick Donate links above this amount are confirmed by the donor on the page instead of charged at once.
    quick_donate_confirm_above_minor bigint NOT NULL DEFAULT 25000 CHECK (quick_donate_confirm_above_minor >= 0)
);

-- Notices to donors and campaigns (an installment skipped, a plan past due or cancelled), kept for finance and
-- sent by the recurring notifier.
CREATE TABLE surge.recurring_notices (
    id          bigserial PRIMARY KEY,
    plan_id     text NOT NULL REFERENCES surge.recurring_plans (id),
    period      integer,
    audience    text NOT NULL CHECK (audience IN ('donor', 'campaign')),
    kind        text NOT NULL,
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,  -- donor notices: emailed (with the plan's manage link) by the scheduler's notifier
    UNIQUE (plan_id, period, audience, kind)
);
CREATE INDEX recurring_notices_unsent ON surge.recurring_notices (id) WHERE audience = 'donor' AND sent_at IS NULL;

-- When period n of a plan is due: counted from the anchor, so a plan anchored on the 31st is due on the last day
-- of shorter months and back on the 31st after them (PostgreSQL's month arithmetic clamps to the month's end).
CREATE FUNCTION surge.recurring_period_due(interval_unit text, anchor timestamptz, period integer)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE interval_unit WHEN 'week' THEN anchor + make_interval(weeks => period)
                              ELSE anchor + make_interval(months => period) END
$$;

-- The key that signs donors' links (Quick Donate, manage a plan, donor profile) when SURGE_RECURRING_LINK_SECRET is
-- not set: made once, shared by every engine process, so a link made by one is honoured by all.
CREATE TABLE surge.link_signing_keys (
    id          integer PRIMARY KEY CHECK (id = 1),
    secret      bytea NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
