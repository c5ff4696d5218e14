-- A refund booked from a charge.refunded that named no refund (origin 'processor_charge', no processor id) is money
-- of refunds made outside Surge whose own events had not come yet. Its attributed part is what such refunds, named
-- by their events since, have claimed of it; the rest is open. A named outside refund first claims the open parts
-- of its donation's unnamed rows and books only what they do not cover (engine/payments/refund_events.py).
ALTER TABLE surge.refunds ADD COLUMN attributed_minor bigint NOT NULL DEFAULT 0;
-- Unnamed rows that were given a refund's id before this migration were that refund, whole.
UPDATE surge.refunds SET attributed_minor = amount_minor
 WHERE origin = 'processor_charge' AND processor_reference IS NOT NULL;
ALTER TABLE surge.refunds ADD CONSTRAINT refunds_attributed_minor
    CHECK (attributed_minor BETWEEN 0 AND amount_minor);

-- Each claim: which processor refund took how much of which unnamed row. A processor refund found here is known,
-- so a later event about it books nothing.
CREATE TABLE surge.refund_attributions (
    refund_row_id        text NOT NULL REFERENCES surge.refunds (id),
    processor_refund_id  text NOT NULL,
    amount_minor         bigint NOT NULL CHECK (amount_minor > 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (processor_refund_id, refund_row_id)
);
