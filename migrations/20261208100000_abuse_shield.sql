-- Issue #19, item 2: the card-testing shield. Owned by crate `contributions`
-- (`kopilka_contributions::shield`). Every key is a keyed HMAC (of a client's IP, IPv6 per
-- /64; of an address; of Stripe's card fingerprint), never the value itself. Rows are
-- deleted by the retention sweep once their window or block is over.

-- Who started each checkout, for as long as its payment may still fail: a failed payment
-- of that checkout counts against its client and address.
CREATE TABLE checkout_clients (
    contribution_id uuid PRIMARY KEY REFERENCES contributions (id) ON DELETE CASCADE,
    client_key text,
    address_key text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkout_clients_created_at ON checkout_clients (created_at);

-- One row per failed payment attempt (a charge, or a payment intent that failed without
-- one): `charge.failed` and `payment_intent.payment_failed` of one decline count once.
CREATE TABLE payment_failures (
    attempt text PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    client_key text,
    address_key text,
    card_key text
);
CREATE INDEX payment_failures_occurred_at ON payment_failures (occurred_at);
CREATE INDEX payment_failures_client ON payment_failures (client_key, occurred_at)
    WHERE client_key IS NOT NULL;
CREATE INDEX payment_failures_address ON payment_failures (address_key, occurred_at)
    WHERE address_key IS NOT NULL;
CREATE INDEX payment_failures_card ON payment_failures (card_key, occurred_at)
    WHERE card_key IS NOT NULL;

-- Clients and addresses refused at checkout until `until`. An unblock sets `until` to the
-- moment of the unblock (every instance's next refresh sees it).
CREATE TABLE abuse_blocks (
    kind text NOT NULL CHECK (kind IN ('client', 'address')),
    key text NOT NULL,
    until timestamptz NOT NULL,
    reason text NOT NULL CHECK (reason IN ('client_failures', 'address_failures', 'card_failures', 'operator')),
    failures integer NOT NULL DEFAULT 0,
    -- When an operator last lifted it: failures before this no longer count against it.
    cleared_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX abuse_blocks_until ON abuse_blocks (until);

-- The operator's steering of the under-attack state (one row): `forced_until` holds it on,
-- `calm_since` discounts every failure before it (the attack is declared over).
CREATE TABLE abuse_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    forced_until timestamptz,
    calm_since timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO abuse_state (id) VALUES (true);
