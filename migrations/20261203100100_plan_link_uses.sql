-- One-click plan links are single use: a use is recorded by a keyed HMAC of the link's
-- signed payload (never the token), kept until the link would have expired anyway, then
-- forgotten by the daily retention job (kopilka_accounts::plan_link::forget_expired_uses).
CREATE TABLE plan_link_uses (
    use_key text PRIMARY KEY,
    link_expires_at timestamptz NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_link_uses_expiry ON plan_link_uses (link_expires_at);
