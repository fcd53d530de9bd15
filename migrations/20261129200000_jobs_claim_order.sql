-- Owned by crate `queue`. A claim takes the first due job by (run_at, id); with only run_at
-- indexed, every claim sorted all due jobs (10 000 reminders due at one instant: O(n) per
-- claim). The index now gives that order, so a claim reads from its front.
CREATE INDEX jobs_due_in_order ON jobs (run_at, id) WHERE status IN ('queued', 'running');
DROP INDEX jobs_due;
