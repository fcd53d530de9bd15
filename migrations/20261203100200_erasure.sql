-- Erasure ends everything, then forgets (issue #17, item 3).

-- The ledger keeps each contribution of an erased reader: amounts, currencies, dates and
-- Stripe ids stay, `reader_id` becomes NULL and this says when (the lead's migration adds
-- the same column; both are idempotent).
ALTER TABLE contributions ADD COLUMN IF NOT EXISTS reader_erased_at timestamptz;

-- The Stripe customers and subscriptions of erased readers (plain Stripe ids: the ledger
-- keeps them anyway, and alone they name nobody). An event about one of them never links
-- or creates a reader again.
CREATE TABLE IF NOT EXISTS erased_stripe_objects (
    stripe_id text PRIMARY KEY CHECK (stripe_id ~ '^(cus|sub)_[A-Za-z0-9]+$'),
    erased_at timestamptz NOT NULL
);

-- Supporter tokens of erased readers that may still be unexpired (by `sub`, the reader's
-- former id: no reader row is left to point at). Every API instance keeps the set in
-- memory, loaded at start and on NOTIFY `kopilka_revoked_supporters`, so the DB-free
-- `GET /v1/offer` refuses them at once. A row may go once `until` has passed.
CREATE TABLE IF NOT EXISTS revoked_supporters (
    reader_id uuid PRIMARY KEY,
    revoked_at timestamptz NOT NULL,
    until timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_supporters_until ON revoked_supporters (until);
