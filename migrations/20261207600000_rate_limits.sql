-- Issue #19: counters of the limits on public writes, shared by every instance. Owned by
-- crate `store` (`kopilka_store::limits`). `key` is a keyed HMAC of the client or address
-- (or a route's global name), never an IP or an address; a row is deleted soon after its
-- window ends. UNLOGGED: after a crash the counters start again at zero, which is harmless.
CREATE UNLOGGED TABLE rate_limits (
    key text NOT NULL,
    window_start bigint NOT NULL,
    window_end bigint NOT NULL,
    hits bigint NOT NULL CHECK (hits >= 0),
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_window_end ON rate_limits (window_end);
