-- Owned by recurring. A plan's state written from Stripe's answer to Kopilka's own call
-- (a reader's change, cancel or resume) is the newest Kopilka knows of within its second:
-- an event from that same second (Stripe's resolution) was sent before the answer and must
-- not overwrite it. A later second always wins.
ALTER TABLE recurring_plans ADD COLUMN stripe_state_answered boolean NOT NULL DEFAULT false;
