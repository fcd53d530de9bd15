-- Owned by crate `accounts`: a password session remembers which password began it, so it
-- gains access to what is linked to the address only if that very password was confirmed
-- (a later confirmation of someone else's password must not unlock an earlier session).
ALTER TABLE sessions ADD COLUMN credential_set_at timestamptz;
