-- Finance's reconciliation tables leave the ledger's schema for their own: the ledger holds the books and nothing
-- else, finance its runs, exceptions and adjustments (see engine/finance/reconcile/). SET SCHEMA moves each table
-- in place with its rows, identity sequence, indexes, constraints and triggers, so an existing database keeps its
-- history. The append-only guards move to finance's own function, so that their message names the right schema
-- (same SQLSTATE as the ledger's, SG002).
CREATE SCHEMA IF NOT EXISTS finance;

ALTER TABLE ledger.reconciliation_runs SET SCHEMA finance;
ALTER TABLE ledger.reconciliation_exceptions SET SCHEMA finance;
ALTER TABLE ledger.reconciliation_run_exceptions SET SCHEMA finance;
ALTER TABLE ledger.reconciliation_adjustments SET SCHEMA finance;

CREATE FUNCTION finance.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'finance.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'SG002';
END $$;

DROP TRIGGER reconciliation_runs_immutable ON finance.reconciliation_runs;
DROP TRIGGER reconciliation_run_exceptions_immutable ON finance.reconciliation_run_exceptions;
DROP TRIGGER reconciliation_adjustments_immutable ON finance.reconciliation_adjustments;
CREATE TRIGGER reconciliation_runs_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON finance.reconciliation_runs
    FOR EACH STATEMENT EXECUTE FUNCTION finance.reject_change();
CREATE TRIGGER reconciliation_run_exceptions_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON finance.reconciliation_run_exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION finance.reject_change();
CREATE TRIGGER reconciliation_adjustments_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON finance.reconciliation_adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION finance.reject_change();
