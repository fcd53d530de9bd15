-- Issue #18: what each money movement settled as in Stripe's balance. Owned by crate
-- `contributions`.
--
-- A ledger row is in the currency the donor paid in. Stripe settles a charge, refund or
-- dispute in a currency the account cannot pay out in by converting it to the account's
-- default currency: the balance transaction's `amount` and `currency` differ from the
-- charge's. One row per balance transaction that moved the ledger row `stripe_id`; a
-- ledger row without one settled as itself. `report totals` counts Stripe's fees and net
-- in the settlement currency from here.
CREATE TABLE ledger_settlements (
    balance_transaction text PRIMARY KEY,
    stripe_id text NOT NULL UNIQUE REFERENCES ledger_entries (stripe_id),
    amount_minor bigint NOT NULL,
    currency text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_make_append_only('ledger_settlements');
