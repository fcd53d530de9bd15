-- Issue #18, upgrading: a plan payment booked by a Kopilka before #18 is a `payment` row
-- keyed by its invoice (`in_…`), while refunds, disputes, fees and early fraud warnings name
-- the payment intent (`pi_…`). The ledger is append-only, so the row stays as it is and
-- this table says which row is the payment of a payment intent. Owned by crate
-- `contributions`; filled by `admin reconcile --apply` (after asking Stripe which payment
-- paid the invoice) or by the invoice's `invoice_payment.paid`. Append-only too: an alias,
-- once known, is a fact.
CREATE TABLE ledger_payment_aliases (
    payment_intent text PRIMARY KEY,
    stripe_id text NOT NULL REFERENCES ledger_entries (stripe_id),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_payment_aliases_stripe_id ON ledger_payment_aliases (stripe_id);
SELECT kopilka_make_append_only('ledger_payment_aliases');

-- The key of the payment row of payment intent `pi`: its alias's row when it has one, else
-- `pi` itself. Every lookup of "the payment of pi_…" goes through it.
CREATE FUNCTION kopilka_payment_key(pi text) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce((SELECT stripe_id FROM ledger_payment_aliases WHERE payment_intent = pi), pi) $$;
