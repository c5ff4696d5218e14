-- The double-entry ledger. See ledger/__init__.py for the accounting model and a worked example.
CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 200),
    type        text NOT NULL CHECK (type IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    campaign    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Target of the postings' (account_id, currency) foreign key: a posting can only be in its account's currency.
    UNIQUE (id, currency)
);

CREATE TABLE ledger.entries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference        text NOT NULL UNIQUE CHECK (length(reference) BETWEEN 1 AND 255),
    kind             text NOT NULL CHECK (kind IN ('transfer', 'hold', 'hold_post', 'hold_void', 'reversal')),
    -- The hold a hold_post/hold_void resolves, or the entry a reversal reverses. UNIQUE: a hold is resolved once,
    -- an entry is reversed once.
    parent_entry_id  bigint UNIQUE REFERENCES ledger.entries (id),
    effective_at     timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    memo             text,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Digest of the entry's content, so that a replay of the same reference can be told identical or different.
    fingerprint      bytea NOT NULL,
    CHECK ((kind IN ('transfer', 'hold')) = (parent_entry_id IS NULL))
);

CREATE TABLE ledger.postings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id    bigint NOT NULL REFERENCES ledger.entries (id),
    account_id  bigint NOT NULL,
    -- Signed minor units: positive debits, negative credits.
    amount      bigint NOT NULL CHECK (amount <> 0),
    currency    char(3) NOT NULL,
    -- Pending postings belong to holds (and their release); they move the pending balance, not the posted one.
    pending     boolean NOT NULL DEFAULT false,
    FOREIGN KEY (account_id, currency) REFERENCES ledger.accounts (id, currency)
);
CREATE INDEX postings_account_entry ON ledger.postings (account_id, entry_id);
CREATE INDEX postings_entry ON ledger.postings (entry_id);
CREATE INDEX entries_effective_at ON ledger.entries (effective_at);

CREATE TABLE ledger.balances (
    account_id  bigint PRIMARY KEY REFERENCES ledger.accounts (id),
    posted      bigint NOT NULL DEFAULT 0,
    pending     bigint NOT NULL DEFAULT 0,
    version     bigint NOT NULL DEFAULT 0
);

-- Every entry balances: per entry, currency and pending flag the postings sum to zero. One pass over the whole
-- inserted batch (transition table), not a per-row trigger.
CREATE FUNCTION ledger.check_postings_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT entry_id, currency, pending, sum(amount) AS total INTO bad
      FROM new_postings
     GROUP BY entry_id, currency, pending
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % does not balance: % % postings (pending=%) sum to %',
              bad.entry_id, bad.currency, CASE WHEN bad.pending THEN 'pending' ELSE 'posted' END,
              bad.pending, bad.total
              USING ERRCODE = 'SG001';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_balance AFTER INSERT ON ledger.postings
    REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT
    EXECUTE FUNCTION ledger.check_postings_balance();

-- Entries and postings are immutable: corrections are new (reversing) entries.
CREATE FUNCTION ledger.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % is not allowed (post a reversing entry instead)',
          TG_TABLE_NAME, TG_OP USING ERRCODE = 'SG002';
END $$;

CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_change();
