-- A parked event is applied later from its parsed content: the refund fields an event carries (its refund's state,
-- Surge's refund id, the charge's cumulative refunded amount) are kept with it, or a parked refund event would
-- come back without them and change nothing.
ALTER TABLE surge.parked_events
    ADD COLUMN refund_status             text,
    ADD COLUMN refund_id                 text,
    ADD COLUMN amount_refunded_minor     bigint,
    ADD COLUMN amount_refunded_currency  char(3),
    ADD CHECK ((amount_refunded_minor IS NULL) = (amount_refunded_currency IS NULL));
