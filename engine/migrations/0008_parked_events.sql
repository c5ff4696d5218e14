-- Processor events arrive in any order. What an event did on arrival is recorded on it (applied, parked,
-- duplicate, not applicable and why); an event that cannot apply yet is parked here, with its parsed content, until
-- what it waits for has happened, and is then applied exactly once (or found never applicable) and marked resolved.
-- Rows are kept after resolution: they are the record of what waited, for how long and how it ended.
-- object_id (the refund, dispute or payout the event is about) tells a second event about the same thing, under
-- another event id, from a new one: a dispute closed twice is closed once.
ALTER TABLE surge.processor_events
    ADD COLUMN object_id       text,
    ADD COLUMN outcome         text CHECK (outcome IN ('applied', 'parked', 'duplicate', 'not_applicable')),
    ADD COLUMN outcome_reason  text;
CREATE INDEX processor_events_object ON surge.processor_events (object_id) WHERE object_id IS NOT NULL;

CREATE TABLE surge.parked_events (
    processor            text NOT NULL,
    event_id             text NOT NULL,
    type                 text NOT NULL,
    created              timestamptz NOT NULL,  -- when the processor created the event: the order to apply them in
    donation_id          text,
    processor_reference  text,
    object_id            text,
    amount_minor         bigint,
    amount_currency      char(3),
    fee_minor            bigint,
    fee_currency         char(3),
    decline_code         text,
    waiting_for          text NOT NULL CHECK (waiting_for IN ('donation_unknown', 'donation_not_final',
                                                              'dispute_not_opened')),
    parked_at            timestamptz NOT NULL DEFAULT now(),
    attempts             integer NOT NULL DEFAULT 0,
    overdue_reported_at  timestamptz,
    resolved_at          timestamptz,
    resolution           text CHECK (resolution IN ('applied', 'duplicate', 'not_applicable')),
    resolution_reason    text,
    PRIMARY KEY (processor, event_id),
    FOREIGN KEY (processor, event_id) REFERENCES surge.processor_events (processor, event_id),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL)),
    CHECK ((amount_minor IS NULL) = (amount_currency IS NULL)),
    CHECK ((fee_minor IS NULL) = (fee_currency IS NULL))
);

-- Only waiting rows are ever searched: the indexes stay as small as the backlog.
CREATE INDEX parked_events_waiting ON surge.parked_events (created, parked_at) WHERE resolved_at IS NULL;
CREATE INDEX parked_events_waiting_donation ON surge.parked_events (donation_id) WHERE resolved_at IS NULL;
CREATE INDEX parked_events_waiting_reference ON surge.parked_events (processor_reference) WHERE resolved_at IS NULL;
