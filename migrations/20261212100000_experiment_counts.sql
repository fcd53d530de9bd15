-- Issue #21: what experiments measure.
-- * `experiment_counts` (owned by crate `experiments`): views and clicks per experiment,
--   variant and day, counted in memory by each instance and added here in one statement per
--   flush. `variant` is '' for the holdback. No reader is named: counts only.
-- * `experiments.shares` (owned by crate `experiments`): the bandit's current traffic shares
--   (variant key -> basis points of the non-held-back views), written by the worker.
-- * `contributions.experiment_id`/`experiment_variant` (owned by crate `contributions`):
--   which experiment and variant the checkout came from ('' for the holdback), so
--   attribution is exact and in the ledger.
ALTER TABLE experiments
    ADD COLUMN shares jsonb,
    ADD COLUMN shares_at timestamptz;

CREATE TABLE experiment_counts (
    experiment_id uuid NOT NULL REFERENCES experiments (id),
    variant text NOT NULL CHECK (variant ~ '^([a-z0-9][a-z0-9_-]{0,39})?$'),
    day date NOT NULL,
    views bigint NOT NULL DEFAULT 0 CHECK (views >= 0),
    clicks bigint NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    PRIMARY KEY (experiment_id, variant, day)
);

ALTER TABLE contributions
    ADD COLUMN experiment_id uuid REFERENCES experiments (id),
    ADD COLUMN experiment_variant text
        CHECK (experiment_variant ~ '^([a-z0-9][a-z0-9_-]{0,39})?$'),
    ADD CONSTRAINT contributions_experiment_pair
        CHECK ((experiment_id IS NULL) = (experiment_variant IS NULL));
CREATE INDEX contributions_experiment ON contributions (experiment_id)
    WHERE experiment_id IS NOT NULL;
