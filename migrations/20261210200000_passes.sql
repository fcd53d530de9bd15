-- Issue #20, items 4 and 5: supporter passes and pass codes (the crypto rail's recurring
-- support: crypto has no pull payments, so support for months is paid ahead).

-- Owned by crate `contributions`. A contribution may buy passes: `pass_months` each, as many
-- as it has `passes` rows.
ALTER TABLE contributions
    ADD COLUMN pass_months smallint CHECK (pass_months BETWEEN 1 AND 36),
    ADD CONSTRAINT contributions_pass_check CHECK (pass_months IS NULL OR interval = 'once');

-- Owned by crate `contributions`. One pass: `months` of support, for its holder.
--  - A pass for the buyer (signed in, or who gave an address) has a reader and no code; it
--    runs from settlement (or from the end of the holder's running pass: a renewal).
--  - A pass as a code (bought anonymously, or as gifts) has `code_hash`, a keyed HMAC of a
--    random code shown once to the buyer; it runs from its redemption, when it gets a holder:
--    a signed-in reader who attaches it, or an anonymous holder known only by the keyed hash
--    of a random holder token (`holder_hash`) kept in the holder's browser.
-- status: pending until its invoice settles; active once paid (a code: redeemable until
-- redeemed or `redeem_by`); void when its invoice expired or went invalid; revoked when its
-- buyer revoked the code before anyone redeemed it.
CREATE TABLE passes (
    id uuid PRIMARY KEY,
    contribution_id uuid NOT NULL REFERENCES contributions (id),
    months smallint NOT NULL CHECK (months BETWEEN 1 AND 36),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'active', 'void', 'revoked')),
    reader_id uuid REFERENCES readers (id),
    code_hash text UNIQUE,
    holder_hash text UNIQUE,
    redeem_by timestamptz,
    redeemed_at timestamptz,
    starts_at timestamptz,
    ends_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((starts_at IS NULL) = (ends_at IS NULL) AND (ends_at IS NULL OR ends_at > starts_at)),
    CHECK (code_hash IS NOT NULL OR redeemed_at IS NULL),
    CHECK (holder_hash IS NULL OR redeemed_at IS NOT NULL),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX passes_contribution ON passes (contribution_id);
CREATE INDEX passes_reader_end ON passes (reader_id, ends_at) WHERE reader_id IS NOT NULL;
CREATE INDEX passes_ends ON passes (ends_at) WHERE status = 'active';

-- A failed redemption counts in `login_throttles` like a failed password (keys `code:…`).
