-- One processor budget for the whole deployment (engine/pipeline/budget.py): a token bucket per processor account
-- that every engine process draws from. UNLOGGED: the row changes dozens of times a second and is worth nothing
-- after a crash (it is truncated then and re-seeded full, as a restarted process's own bucket would be), so it
-- costs no WAL and no replication traffic. The level is refilled by the server's clock, the one clock all nodes
-- share.
CREATE UNLOGGED TABLE surge.processor_budgets (
    processor   text PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
