-- Owned by crate `reconciliation`: stored events are allowlisted projections (issue #17).
-- `payload` now holds `{"object": {…kept fields…}}` for a handled type and `{}` for any
-- other; `projection_version` says which rules made it. Rows stored before (version 0, the
-- whole event) are projected again by `kopilka migrate` (and `serve --migrate`, `dev`) and,
-- until then, whenever they are applied.
ALTER TABLE stripe_events ADD COLUMN projection_version smallint NOT NULL DEFAULT 0;
CREATE INDEX stripe_events_to_project ON stripe_events (projection_version);

-- Owned by crate `contributions`: set when the contribution's reader was erased; no later
-- event may link or create a reader for it.
ALTER TABLE contributions ADD COLUMN IF NOT EXISTS reader_erased_at timestamptz;
