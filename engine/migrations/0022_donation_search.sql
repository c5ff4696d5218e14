-- Finance finds a donation by donor email, last name (prefix), postal code or date, newest first, over millions of
-- rows (engine/finance/search.py): each search reads one index in (created_at, id) order and stops at the page's
-- end. Four more indexes on the hottest table cost intake a little per donation; the search is the finance
-- team's daily tool, so they pay.
CREATE INDEX donations_created ON surge.donations (created_at DESC, id DESC);
CREATE INDEX donations_email ON surge.donations (lower(donor ->> 'email'), created_at DESC, id DESC);
CREATE INDEX donations_last_name ON surge.donations (lower(donor ->> 'last_name') text_pattern_ops);
CREATE INDEX donations_postal_code ON surge.donations ((donor ->> 'postal_code') text_pattern_ops);

-- A donation's page lists the processor events about it: each event keeps the donation id and the charge it
-- names (from the event itself), indexed.
ALTER TABLE surge.processor_events
    ADD COLUMN donation_id text,
    ADD COLUMN charge_reference text;
CREATE INDEX processor_events_donation ON surge.processor_events (donation_id) WHERE donation_id IS NOT NULL;
CREATE INDEX processor_events_charge ON surge.processor_events (charge_reference) WHERE charge_reference IS NOT NULL;
