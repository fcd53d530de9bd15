-- Owned by crate `queue`: background jobs, claimed with FOR UPDATE SKIP LOCKED so several
-- workers never run one job at once. Payloads hold ids, never PII.
CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    -- a job with a key is enqueued at most once while it exists (e.g. one per event)
    dedup_key text UNIQUE,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 10 CHECK (max_attempts > 0),
    run_at timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('jobs');
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('queued', 'running');
