-- Donation receipts by email through a transactional outbox (engine/receipts/): a receipt row is inserted in the
-- same transaction that settles a donation as succeeded or books a refund, so a receipt exists exactly when the
-- money moved; the relay in every engine process sends due rows and marks them sent, or failed with the error.

-- The card that paid, as the processor reported it with the charge (never the donor's input), for the receipt.
ALTER TABLE surge.donations
    ADD COLUMN card_brand text CHECK (length(card_brand) BETWEEN 1 AND 40),
    ADD COLUMN card_last4 text CHECK (card_last4 ~ '^[0-9]{4}$');

-- What a campaign's receipts say: political contributions are not tax deductible; a nonprofit's receipt is the
-- written acknowledgment a donor needs for a gift of $250 or more (the campaign's kind is its page settings' kind,
-- migration 0016). Optional overrides: the legal text, and whole Jinja2 templates (plain text and HTML) rendered in
-- a sandbox.
ALTER TABLE surge.campaigns
    ADD COLUMN receipt_legal_text text CHECK (length(receipt_legal_text) BETWEEN 1 AND 4000),
    ADD COLUMN receipt_text_template text CHECK (length(receipt_text_template) BETWEEN 1 AND 20000),
    ADD COLUMN receipt_html_template text CHECK (length(receipt_html_template) BETWEEN 1 AND 50000);

CREATE TABLE surge.receipts (
    id               text PRIMARY KEY,  -- rcpt_<donation id> or rcpt_<refund id>: a second insert is a no-op
    donation_id      text NOT NULL REFERENCES surge.donations (id),
    kind             text NOT NULL CHECK (kind IN ('donation', 'refund')),
    refund_id        text REFERENCES surge.refunds (id),
    recipient        text NOT NULL CHECK (length(recipient) BETWEEN 3 AND 320),
    -- pending: to send (next_attempt_at is also the lease of the relay sending it); sent; failed: gave up, see
    -- last_error. A relay that dies mid-send leaves it pending, and it is sent again with the same message_id.
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    message_id       text,  -- fixed at the first claim, then reused by every resend
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    UNIQUE NULLS NOT DISTINCT (donation_id, kind, refund_id),
    CHECK ((kind = 'refund') = (refund_id IS NOT NULL))
);
CREATE INDEX receipts_due ON surge.receipts (next_attempt_at) WHERE status = 'pending';
