-- Transfers and holds, nearly every entry, have no parent (0001's CHECK), yet the UNIQUE constraint's index held a
-- NULL key for each: an index insert per entry, never read. A partial unique index enforces the same rule (a hold
-- is resolved once, an entry reversed once) and serves every lookup, all of which name a parent (parent_entry_id =
-- …, which implies IS NOT NULL).
ALTER TABLE ledger.entries DROP CONSTRAINT entries_parent_entry_id_key;
CREATE UNIQUE INDEX entries_parent_entry_id_key ON ledger.entries (parent_entry_id) WHERE parent_entry_id IS NOT NULL;
