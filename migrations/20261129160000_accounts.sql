-- Owned by crate `accounts`: readers and everything that is theirs. `readers` is the only
-- table holding PII (email, name); every other table refers to the reader by id. Erasure
-- clears a reader's PII and deletes the rows below that describe them, and keeps the ledger.

CREATE TABLE readers (
    id uuid PRIMARY KEY,
    -- normalised (trimmed, lowercased) by the domain's Email; NULL once erased
    email text,
    name text CHECK (length(name) <= 200),
    locale text NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'ru')),
    -- the address was proven by an emailed link; only then does an account see what is linked
    verified_at timestamptz,
    -- reminders and other asks are not sent to this address (a hard bounce)
    mail_suppressed_at timestamptz,
    erased_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (email IS NOT NULL OR erased_at IS NOT NULL),
    CHECK (email IS NULL OR (email = lower(email) AND length(email) <= 254))
);
SELECT kopilka_manage_updated_at('readers');
CREATE UNIQUE INDEX readers_email ON readers (lower(email)) WHERE email IS NOT NULL;

-- Contributions name their reader (the accounts issue links them at checkout).
ALTER TABLE contributions
    ADD CONSTRAINT contributions_reader_fk FOREIGN KEY (reader_id) REFERENCES readers (id);
CREATE INDEX contributions_reader ON contributions (reader_id) WHERE reader_id IS NOT NULL;

-- A password, if the reader chose one. `confirmed_at`: the sign-up that set it was confirmed
-- through its emailed link (until then a session from it sees nothing linked).
CREATE TABLE credentials (
    reader_id uuid PRIMARY KEY REFERENCES readers (id) ON DELETE CASCADE,
    password_hash text NOT NULL,
    -- when the reader chose this password (a verification link confirms it only if issued after)
    set_at timestamptz NOT NULL,
    confirmed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('credentials');

-- Server-side sessions; the token itself is never stored, only its SHA-256.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    reader_id uuid NOT NULL REFERENCES readers (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    -- how the reader proved themselves: 'mailbox' (an emailed link) or 'password'
    proof text NOT NULL CHECK (proof IN ('mailbox', 'password')),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_reader ON sessions (reader_id);

-- Emailed links (sign-in, address verification). The token is derived from the row id
-- with the accounts secret; only its SHA-256 is stored. Single use.
CREATE TABLE email_links (
    id uuid PRIMARY KEY,
    reader_id uuid NOT NULL REFERENCES readers (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('sign_in', 'verify', 'already_registered')),
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_links_reader ON email_links (reader_id, created_at);

-- Failed-login counters, keyed by a keyed hash of the address (so unknown addresses are
-- throttled alike, and no address is stored) or by the client IP.
CREATE TABLE login_throttles (
    key text PRIMARY KEY,
    failures integer NOT NULL DEFAULT 0,
    blocked_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('login_throttles');

-- "Remind me later": one pending reminder per reader; a second request moves its date.
CREATE TABLE reminders (
    id uuid PRIMARY KEY,
    reader_id uuid NOT NULL REFERENCES readers (id) ON DELETE CASCADE,
    remind_on date NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'suppressed', 'unsubscribed')),
    -- why it was suppressed: 'gave', 'mail_suppressed'
    reason text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('reminders');
CREATE UNIQUE INDEX reminders_one_pending ON reminders (reader_id) WHERE status = 'pending';
CREATE INDEX reminders_due ON reminders (remind_on) WHERE status = 'pending';

-- The banner's state for a signed-in reader, the same on every device.
CREATE TABLE banner_states (
    reader_id uuid PRIMARY KEY REFERENCES readers (id) ON DELETE CASCADE,
    closed_at timestamptz,
    snoozed_until timestamptz,
    gave_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT kopilka_manage_updated_at('banner_states');

-- Every admin action on a reader: who, what, when. No PII in any column.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    reader_id uuid,
    detail jsonb NOT NULL DEFAULT '{}'
);
SELECT kopilka_make_append_only('audit_log');

-- The reader an event's PII named (the PII itself is removed before the event is stored).
ALTER TABLE stripe_events ADD COLUMN reader_id uuid REFERENCES readers (id);
