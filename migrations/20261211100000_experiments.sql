-- Issue #21: ask experiments. Owned by crate `experiments`.
-- An experiment is its validated spec (JSON as the operator wrote it: targeting, schedule,
-- method, holdback, variants; no personal data), a random seed that assigns readers to
-- variants stably, and a lifecycle.
CREATE TABLE experiments (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'running', 'paused', 'stopped')),
    spec jsonb NOT NULL,
    seed bytea NOT NULL CHECK (length(seed) = 16),
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    stopped_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'stopped') = (stopped_at IS NOT NULL)),
    CHECK (status IN ('draft', 'stopped') OR started_at IS NOT NULL)
);
SELECT kopilka_manage_updated_at('experiments');
CREATE INDEX experiments_live ON experiments (status) WHERE status IN ('running', 'paused');
