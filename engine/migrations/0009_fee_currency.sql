-- Fees are money: a number and its currency. Stripe reports a charge's fee in the balance's (settlement) currency,
-- which can differ from the charge's, so the donation keeps the fee's currency beside its amount. Fees recorded
-- before this migration were booked in the charge's currency: that is what they were, so they keep it.
ALTER TABLE surge.donations ADD COLUMN fee_currency char(3) CHECK (fee_currency ~ '^[A-Z]{3}$');
UPDATE surge.donations SET fee_currency = currency WHERE fee_minor IS NOT NULL;
-- A fee is known whole (amount and currency) or not at all: NULL means "not reported yet" (a late fee), not zero.
ALTER TABLE surge.donations
    ADD CONSTRAINT donations_fee_has_currency CHECK ((fee_minor IS NULL) = (fee_currency IS NULL));
