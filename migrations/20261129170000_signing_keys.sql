-- Owned by crate `accounts`: the ids of the supporter-token signing keys and when each
-- retires. No key material: each key is derived from KOPILKA__PAYWALL__SIGNING_SECRET and its
-- id (crate `paywall`).
CREATE TABLE signing_keys (
    kid text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- from then on it no longer verifies (NULL: live)
    retires_at timestamptz
);
