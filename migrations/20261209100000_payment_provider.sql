-- Issue #20, item 1: the payment provider becomes a seam. Until now Stripe was the only
-- provider and the schema said so; BTCPay Server is the second. Every fact now says which
-- provider it came from (`stripe` or `btcpay`, the names of `kopilka_domain::Provider`), and
-- a provider's id is unique only within its provider. Rows written before this migration
-- are Stripe's: the columns' defaults say so, and exist only for them (the code always
-- names the provider).

-- Owned by crate `reconciliation`: the inbox holds every provider's verified events. A
-- BTCPay delivery id is unique only among BTCPay's, so the key is (provider, id); BTCPay
-- has no live mode, so `livemode` may be unknown.
ALTER TABLE stripe_events RENAME TO provider_events;
ALTER TABLE provider_events
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT provider_events_provider_check CHECK (provider IN ('stripe', 'btcpay')),
    ALTER COLUMN livemode DROP NOT NULL,
    DROP CONSTRAINT stripe_events_pkey,
    ADD CONSTRAINT provider_events_pkey PRIMARY KEY (provider, id);
ALTER TABLE provider_events RENAME CONSTRAINT stripe_events_status_check TO provider_events_status_check;
ALTER TABLE provider_events RENAME CONSTRAINT stripe_events_reader_id_fkey TO provider_events_reader_id_fkey;
ALTER INDEX stripe_events_status RENAME TO provider_events_status;
ALTER INDEX stripe_events_object RENAME TO provider_events_object;
ALTER INDEX stripe_events_to_project RENAME TO provider_events_to_project;

-- Owned by crate `contributions`: a ledger row is unique on (provider, the provider's id).
-- Settlements and payment aliases are Stripe's concepts (balance transactions, invoices
-- paid by a payment intent): they name Stripe ledger rows only, through the composite key.
ALTER TABLE ledger_settlements DROP CONSTRAINT ledger_settlements_stripe_id_fkey;
ALTER TABLE ledger_payment_aliases DROP CONSTRAINT ledger_payment_aliases_stripe_id_fkey;
ALTER TABLE ledger_entries RENAME COLUMN stripe_id TO provider_id;
ALTER TABLE ledger_entries
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT ledger_entries_provider_check CHECK (provider IN ('stripe', 'btcpay')),
    DROP CONSTRAINT ledger_entries_stripe_id_key,
    ADD CONSTRAINT ledger_entries_provider_provider_id_key UNIQUE (provider, provider_id);
ALTER TABLE ledger_settlements
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT ledger_settlements_provider_check CHECK (provider = 'stripe'),
    ADD CONSTRAINT ledger_settlements_ledger_fkey FOREIGN KEY (provider, stripe_id)
        REFERENCES ledger_entries (provider, provider_id);
ALTER TABLE ledger_payment_aliases
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT ledger_payment_aliases_provider_check CHECK (provider = 'stripe'),
    ADD CONSTRAINT ledger_payment_aliases_ledger_fkey FOREIGN KEY (provider, stripe_id)
        REFERENCES ledger_entries (provider, provider_id);

-- Owned by crate `contributions`: a contribution is paid through one provider, and carries
-- only that provider's ids.
ALTER TABLE contributions
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT contributions_provider_check CHECK (provider IN ('stripe', 'btcpay')),
    ADD COLUMN btcpay_invoice_id text CONSTRAINT contributions_btcpay_invoice_id_key UNIQUE,
    ADD CONSTRAINT contributions_provider_ids_check CHECK (
        CASE provider
            WHEN 'btcpay' THEN stripe_checkout_session_id IS NULL AND stripe_customer_id IS NULL
                               AND stripe_payment_intent_id IS NULL AND stripe_subscription_id IS NULL
            ELSE btcpay_invoice_id IS NULL
        END);

-- Owned by crate `recurring`: plans are Stripe subscriptions (a prepaid crypto pass will be
-- its own table).
ALTER TABLE recurring_plans
    ADD COLUMN provider text NOT NULL DEFAULT 'stripe'
        CONSTRAINT recurring_plans_provider_check CHECK (provider = 'stripe');
