-- Keyed fingerprints only (issue 17, item 4).
--
-- Throttle keys are now `address:<hmac>` and `ip:<hmac>` (HMAC-SHA256 under the accounts
-- secret, purposes kopilka/address/v1 and kopilka/ip/v1). Rows keyed by a plain IP (or any
-- other shape) are deleted: they held client addresses with no expiry. Losing them resets
-- at most a few minutes of backoff.
DELETE FROM login_throttles WHERE key !~ '^(address|ip):[0-9a-f]{64}$';

-- `checkout_requests.request_hash` is now an HMAC of the body (purpose
-- kopilka/checkout-request/v1) instead of a bare SHA-256 of a body holding the reader's
-- address, which a dictionary of addresses reverses. The old fingerprints are deleted, not
-- kept: they only recognise a widget's retry of the same request within minutes, and a
-- retry that spans this migration at worst starts a second checkout page for the same gift
-- (the first one expires unpaid). Their contributions are untouched.
DELETE FROM checkout_requests;

COMMENT ON COLUMN login_throttles.key IS
    'address:<HMAC> or ip:<HMAC> under the accounts secret; never a plain address or IP';
COMMENT ON COLUMN checkout_requests.request_hash IS
    'HMAC-SHA256 of the request body under the accounts secret (purpose kopilka/checkout-request/v1)';
