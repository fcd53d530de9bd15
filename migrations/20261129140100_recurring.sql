-- Owned by crate `recurring`: monthly and annual plans, mirroring Stripe subscriptions.

CREATE TABLE recurring_plans (
    id uuid PRIMARY KEY,
    contribution_id uuid NOT NULL UNIQUE REFERENCES contributions (id),
    stripe_subscription_id text NOT NULL UNIQUE,
    stripe_customer_id text,
    status text NOT NULL
        CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused')),
    interval text NOT NULL CHECK (interval IN ('month', 'year')),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    -- event.created of the newest subscription state applied: older states never overwrite it
    stripe_watermark bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('recurring_plans');
CREATE INDEX recurring_plans_status ON recurring_plans (status);

-- Renewal payments name their plan.
ALTER TABLE ledger_entries ADD COLUMN plan_id uuid REFERENCES recurring_plans (id);
CREATE INDEX ledger_entries_plan ON ledger_entries (plan_id);
