-- Refunds get the undecided donation's review: one the processor has not decided after the review bound (refund
-- worker attempts, or hours) is flagged for finance (engine/payments/refund_recovery.py); it stays unfinished and
-- keeps being looked up, so a late answer still settles it once.
ALTER TABLE surge.refunds
    ADD COLUMN needs_review_at timestamptz,
    -- A refund the processor reported failed after it had succeeded (the card could not take the money back, and
    -- the processor put it back in the balance): reversed by a new entry, the donation refundable again
    -- (engine/payments/refund_returns.py). Only a failed refund can have been returned.
    ADD COLUMN returned_at timestamptz,
    ADD CONSTRAINT refunds_returned_failed CHECK (returned_at IS NULL OR status = 'failed');

CREATE INDEX refunds_needing_review ON surge.refunds (needs_review_at)
    WHERE needs_review_at IS NOT NULL AND status IN ('refunding', 'pending');
CREATE INDEX refunds_returned ON surge.refunds (returned_at) WHERE returned_at IS NOT NULL;
