-- Refunds get the donation's discipline: the refund row is committed as 'refunding' (its amount reserved on the
-- donation) before the processor is called, so a crash or a timeout leaves a row that the refund worker resolves
-- by looking the refund up at the processor (lookup_refund) and, when the processor has none, sending it again with
-- the same idempotency key. 'pending' refunds (accepted, outcome later) are settled by refund events or lookups.
ALTER TABLE surge.refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE surge.refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('refunding', 'pending', 'succeeded', 'failed'));
ALTER TABLE surge.refunds
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN settled_at timestamptz;

-- Refunds made before this migration were answered 'pending' and never resolved: the worker now finds them.
UPDATE surge.refunds SET status = 'refunding' WHERE status = 'pending' AND processor_reference IS NULL;

-- The worker's scan: due, unfinished refunds in order.
CREATE INDEX refunds_due ON surge.refunds (next_attempt_at) WHERE status IN ('refunding', 'pending');

-- A processor refund is booked at most once: it is recognised by its id (refunds_processor_reference, unique) or by
-- the Surge refund id it carries in its metadata (the primary key). A refund booked from a processor event is
-- recorded with the processor's refund id, so the unique index stops a second booking of it; the only refunds
-- allowed to succeed without one are those booked from a charge.refunded event that named no refund (the
-- processor's refunded total grew by more than Surge knows of), and a later event naming the refund attaches its
-- id to that row instead of booking again.
ALTER TABLE surge.refunds ADD COLUMN origin text NOT NULL DEFAULT 'api'
    CHECK (origin IN ('api', 'processor_refund', 'processor_charge'));
UPDATE surge.refunds
   SET origin = CASE WHEN processor_reference IS NULL THEN 'processor_charge' ELSE 'processor_refund' END
 WHERE api_key_id IS NULL;
-- NOT VALID: enforced on every row written from now on; rows written before are not re-checked, so that a database
-- holding an old anomaly still migrates (reconciliation shows such a refund).
ALTER TABLE surge.refunds ADD CONSTRAINT refunds_booked_with_reference
    CHECK (status <> 'succeeded' OR processor_reference IS NOT NULL OR origin = 'processor_charge') NOT VALID;
