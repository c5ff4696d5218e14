-- Postings reference their entry and their account (in the account's currency) through one set-based check per
-- statement instead of two foreign keys. A foreign key checks each inserted row on its own (a query per row and per
-- key); at 2,000 postings a batch those checks were about half of PostgreSQL's cost of posting a transfer
-- (benchmarks/ledger.py). What the foreign keys also guaranteed — a referenced row never goes away nor changes its
-- key — now holds because entries are append-only (0001) and accounts become so below.
ALTER TABLE ledger.postings DROP CONSTRAINT postings_entry_id_fkey;
ALTER TABLE ledger.postings DROP CONSTRAINT postings_account_id_currency_fkey;

-- Index probes per posting, never a hash of the whole entries table: the batch is small and the table large, and
-- the planner has no statistics on a transition table to tell. The error code is the foreign keys' own, so callers
-- that catch ForeignKeyViolationError still do.
CREATE FUNCTION ledger.check_postings_references() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.entry_id, p.account_id, p.currency INTO bad
      FROM new_postings p
      LEFT JOIN ledger.entries e ON e.id = p.entry_id
      LEFT JOIN ledger.accounts a ON a.id = p.account_id AND a.currency = p.currency
     WHERE e.id IS NULL OR a.id IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting on entry % and account % in % references no such entry, or no such account in that currency',
              bad.entry_id, bad.account_id, bad.currency
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_references AFTER INSERT ON ledger.postings
    REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT
    EXECUTE FUNCTION ledger.check_postings_references();

-- Accounts are never changed once created (ledger/accounts.py caches them for the life of a process): their id,
-- code and currency cannot change and they cannot be deleted. Type and campaign stay editable.
CREATE FUNCTION ledger.reject_account_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.accounts: % of an account''s id, code or currency is not allowed (accounts are permanent)',
          TG_OP USING ERRCODE = 'SG002';
END $$;

CREATE TRIGGER accounts_permanent BEFORE UPDATE OF id, code, currency OR DELETE OR TRUNCATE ON ledger.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_account_change();
