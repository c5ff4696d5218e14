-- Donations the processor never answered, surfaced for finance; card-testing velocity by decline ratio.

-- A donation still pending after a bounded number of lookups or hours is flagged for review: it keeps its status
-- (a late answer from the processor still settles it the usual way) and the flag records when it was raised.
ALTER TABLE surge.donations ADD COLUMN needs_review_at timestamptz;
CREATE INDEX donations_needing_review ON surge.donations (needs_review_at)
    WHERE needs_review_at IS NOT NULL AND status IN ('queued', 'charging', 'pending');

-- Velocity weighs declines against attempts from one address (the most recent ones in the window), so it reads
-- every recent donation of the address, not only the declined ones.
CREATE INDEX donations_by_ip_created ON surge.donations (client_ip, created_at) WHERE client_ip IS NOT NULL;
DROP INDEX surge.donations_declines_by_ip;
