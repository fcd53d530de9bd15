-- Issue #18: money as Stripe really sends it.

-- Owned by crate `contributions`. A refund that fails after succeeding is a
-- `refund_reversal` row (positive, keyed `re_…:failed`); a fee row is negative when Stripe
-- charges it and positive when Stripe gives it back (a won dispute's fee, where it does).
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check,
    DROP CONSTRAINT ledger_entries_check;
ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ('payment', 'refund', 'refund_reversal', 'dispute', 'dispute_reversal', 'fee')),
    ADD CONSTRAINT ledger_entries_check
        CHECK (CASE WHEN kind IN ('payment', 'dispute_reversal', 'refund_reversal') THEN amount_minor > 0
                    WHEN kind = 'fee' THEN amount_minor <> 0
                    ELSE amount_minor < 0 END);

-- Owned by crate `recurring`. Each paid invoice of a plan (from `invoice.paid`): since the
-- 2025 "basil" API an invoice does not name its payment intent (its `payments` are
-- includable, absent from webhooks), so `invoice_payment.paid`, which names the payment
-- intent and the invoice, finds its plan here.
CREATE TABLE plan_invoices (
    invoice_id text PRIMARY KEY,
    plan_id uuid NOT NULL REFERENCES recurring_plans (id),
    paid_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_invoices_plan ON plan_invoices (plan_id);
