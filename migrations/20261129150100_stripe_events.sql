-- Owned by crate `reconciliation`: every verified Stripe event, stored once before it is
-- acknowledged, with what applying it did.
CREATE TABLE stripe_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    created bigint NOT NULL,
    livemode boolean NOT NULL,
    api_version text,
    object_id text,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('stripe_events');
CREATE INDEX stripe_events_status ON stripe_events (status, created);
CREATE INDEX stripe_events_object ON stripe_events (object_id, created);
