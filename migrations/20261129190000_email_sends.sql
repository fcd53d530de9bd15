-- Emails sent once. Every logical email (a reminder, a receipt, a dunning notice…) has one
-- row, claimed (row-locked) by the job that sends it and marked in the transaction that
-- completes that job, so two workers never send it twice and a crash before the mark leaves
-- it to the retry. Owned by the `jobs` crate. No addresses here: ids only.
CREATE TABLE email_sends (
    -- e.g. reminder-<id>-<date>, receipt-<stripe id>
    logical_id text PRIMARY KEY,
    kind text NOT NULL,
    reader_id uuid REFERENCES readers (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts integer NOT NULL DEFAULT 0,
    -- the mail server's reply code or a short reason; never an address
    last_error text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('email_sends');
CREATE INDEX email_sends_reader ON email_sends (reader_id);

-- A due reminder is queued once (its job carries the date); moving the date unqueues it.
ALTER TABLE reminders ADD COLUMN queued_at timestamptz;
CREATE INDEX reminders_to_queue ON reminders (remind_on) WHERE status = 'pending' AND queued_at IS NULL;

-- The renewal period an annual plan's renewal notice was queued for (once per period).
ALTER TABLE recurring_plans ADD COLUMN renewal_notice_for timestamptz;
