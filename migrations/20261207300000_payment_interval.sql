-- #18 item 7: MRR counts each plan payment for the interval it paid for (its invoice's
-- period), not the plan's current interval. The invoice's interval is remembered with the
-- invoice, and the payment intent that paid it once known. Rows of earlier versions have
-- neither: MRR falls back to the plan's interval for them.
ALTER TABLE plan_invoices
    ADD COLUMN interval text CHECK (interval IN ('month', 'year')),
    ADD COLUMN payment_intent text;
CREATE INDEX plan_invoices_payment_intent ON plan_invoices (payment_intent);
