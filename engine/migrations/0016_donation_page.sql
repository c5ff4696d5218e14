-- The embeddable donation page (/donate/{campaign}): its settings per campaign, the publishable key it posts with,
-- and the refcode (attribution) of each donation it sends.

-- Presets, texts, attestations, the notice kind (political / nonprofit), Stripe's publishable key and the challenge
-- mode, as one document validated by engine.campaigns.PageSettings: the page's own settings, named apart from the
-- campaign's accounting columns.
ALTER TABLE surge.campaigns ADD COLUMN page_settings jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The form (publishable) key the page of a campaign posts /v1/donations with. It is public by nature — it is
-- written into every page served — so its secret is kept here in clear, next to the key's hash in api_keys.
CREATE TABLE surge.donation_page_keys (
    campaign    text PRIMARY KEY REFERENCES surge.campaigns (slug),
    api_key_id  text NOT NULL REFERENCES surge.api_keys (id),
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Attribution: ?refcode= of the page (or the API's refcode field), reported per campaign and refcode.
ALTER TABLE surge.donations ADD COLUMN refcode text CHECK (refcode ~ '^[A-Za-z0-9_.-]{1,64}$');
CREATE INDEX donations_campaign_refcode ON surge.donations (campaign, refcode) WHERE refcode IS NOT NULL;
