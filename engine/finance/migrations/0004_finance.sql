-- Finance: reconciliation of the ledger against each processor's record, the exceptions it finds, the adjusting
-- entries that resolve them (who, when, why), and the finance dashboard's sessions. See ledger/reconcile.py.
--
-- A run is history: once recorded it never changes. An exception is one specific discrepancy (its kind, subject and
-- amounts make its key), so re-running a window finds the same row again instead of adding one; each run lists
-- the exceptions it saw. An adjustment is the ledger entry that resolved an exception, with its author and memo.

CREATE TABLE ledger.reconciliation_runs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    processor        text NOT NULL CHECK (length(processor) BETWEEN 1 AND 100),
    window_from      timestamptz NOT NULL,
    window_to        timestamptz NOT NULL,
    slack_s          integer NOT NULL CHECK (slack_s >= 0),
    requested_by     text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    matched          integer NOT NULL CHECK (matched >= 0),
    exception_count  integer NOT NULL CHECK (exception_count >= 0),
    -- Per currency, both sides' totals for the window (charges, fees, refunds, disputes, payouts, net movement).
    summary          jsonb NOT NULL,
    -- Digest of the result (matched subjects and exception keys): two runs with one digest found the same thing.
    result_digest    bytea NOT NULL,
    CHECK (window_from < window_to)
);
CREATE INDEX reconciliation_runs_processor ON ledger.reconciliation_runs (processor, id DESC);

CREATE TABLE ledger.reconciliation_exceptions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    processor         text NOT NULL,
    key               text NOT NULL CHECK (length(key) BETWEEN 1 AND 600),
    kind              text NOT NULL CHECK (kind IN ('missing_in_ledger', 'missing_at_processor', 'amount_mismatch',
                                                     'currency_mismatch', 'fee_mismatch', 'payout_balance_mismatch')),
    subject           text NOT NULL,  -- what both sides are about: charge:don_…, refund:don_…, dispute:…, payout:…
    currency          char(3),
    processor_amount  bigint,  -- minor units, signed as the processor's balance moves (fees positive)
    ledger_amount     bigint,
    occurred_at       timestamptz NOT NULL,  -- the processor's time for the subject (the ledger's when it has none)
    detail            jsonb NOT NULL,  -- ids on both sides, the donation, the proposed adjustment
    first_run_id      bigint NOT NULL REFERENCES ledger.reconciliation_runs (id),
    last_run_id       bigint NOT NULL REFERENCES ledger.reconciliation_runs (id),
    -- A later run over its time no longer found it (the late webhook arrived, or an adjustment matched it).
    cleared_run_id    bigint REFERENCES ledger.reconciliation_runs (id),
    UNIQUE (processor, key)
);
CREATE INDEX reconciliation_exceptions_open ON ledger.reconciliation_exceptions (processor, occurred_at)
    WHERE cleared_run_id IS NULL;

CREATE TABLE ledger.reconciliation_run_exceptions (
    run_id        bigint NOT NULL REFERENCES ledger.reconciliation_runs (id),
    exception_id  bigint NOT NULL REFERENCES ledger.reconciliation_exceptions (id),
    PRIMARY KEY (run_id, exception_id)
);
CREATE INDEX reconciliation_run_exceptions_exception ON ledger.reconciliation_run_exceptions (exception_id);

CREATE TABLE ledger.reconciliation_adjustments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exception_id  bigint NOT NULL UNIQUE REFERENCES ledger.reconciliation_exceptions (id),
    entry_id      bigint NOT NULL UNIQUE REFERENCES ledger.entries (id),
    resolved_by   text NOT NULL CHECK (length(resolved_by) BETWEEN 1 AND 200),
    resolved_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    memo          text NOT NULL CHECK (length(btrim(memo)) BETWEEN 1 AND 2000)
);

-- History is not rewritten: runs, what each run saw, and adjustments are append-only (exceptions are not: a
-- re-run moves their last and cleared runs).
CREATE TRIGGER reconciliation_runs_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.reconciliation_runs
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER reconciliation_run_exceptions_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.reconciliation_run_exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER reconciliation_adjustments_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.reconciliation_adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();

-- Reports read the ledger by day and by campaign.
CREATE INDEX accounts_campaign ON ledger.accounts (campaign) WHERE campaign IS NOT NULL;
CREATE INDEX donations_settled ON surge.donations (campaign, election, settled_at) WHERE status = 'succeeded';

-- The finance dashboard's browser sessions: a random token in an HttpOnly cookie, only its SHA-256 here.
CREATE TABLE surge.dashboard_sessions (
    token_hash   bytea PRIMARY KEY,
    api_key_id   text NOT NULL REFERENCES surge.api_keys (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX dashboard_sessions_expires ON surge.dashboard_sessions (expires_at);
