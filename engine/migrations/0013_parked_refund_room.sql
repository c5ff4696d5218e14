-- A refund made outside Surge that finds no room on its donation (Surge's own refund still holds the amount the
-- processor has refused it, a dispute holds the rest) waits for room, parked, instead of being dropped with a log
-- line (engine/payments/refund_events.py).
ALTER TABLE surge.parked_events DROP CONSTRAINT parked_events_waiting_for_check;
ALTER TABLE surge.parked_events ADD CONSTRAINT parked_events_waiting_for_check
    CHECK (waiting_for IN ('donation_unknown', 'donation_not_final', 'dispute_not_opened', 'refund_room'));
