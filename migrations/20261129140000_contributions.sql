-- Owned by crate `contributions`: contributions, their checkout requests, and the payments
-- ledger. No PII here: readers are referenced by id (the accounts issue adds the table).

CREATE TABLE contributions (
    id uuid PRIMARY KEY,
    interval text NOT NULL CHECK (interval IN ('once', 'month', 'year')),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'paid', 'failed', 'abandoned', 'refunded', 'disputed')),
    reader_id uuid,
    stripe_checkout_session_id text UNIQUE,
    stripe_customer_id text,
    stripe_payment_intent_id text UNIQUE,
    stripe_subscription_id text UNIQUE,
    -- event.created of the newest fact applied to this row: older facts never overwrite it
    stripe_watermark bigint NOT NULL DEFAULT 0,
    paid_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('contributions');
CREATE INDEX contributions_status_created ON contributions (status, created_at);

-- POST /v1/checkout with an Idempotency-Key: the first request's hash and answer.
CREATE TABLE checkout_requests (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    contribution_id uuid NOT NULL REFERENCES contributions (id),
    response_status smallint,
    response_body jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every money movement, once, immutable. Payments are keyed by their payment intent
-- (pi_…), refunds by re_…, disputes by dp_…; amounts are signed minor units.
CREATE TABLE ledger_entries (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('payment', 'refund', 'dispute', 'dispute_reversal', 'fee')),
    stripe_id text NOT NULL UNIQUE,
    payment_intent_id text,
    contribution_id uuid REFERENCES contributions (id),
    amount_minor bigint NOT NULL,
    currency text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE WHEN kind IN ('payment', 'dispute_reversal') THEN amount_minor > 0 ELSE amount_minor < 0 END)
);
SELECT kopilka_make_append_only('ledger_entries');
CREATE INDEX ledger_entries_occurred ON ledger_entries (occurred_at);
CREATE INDEX ledger_entries_payment_intent ON ledger_entries (payment_intent_id);
CREATE INDEX ledger_entries_contribution ON ledger_entries (contribution_id);
