-- Issue #20, item 2: BTCPay invoices applied to contributions and the ledger.

-- Owned by crate `contributions`. A contribution paid through BTCPay keeps, beside the fiat
-- amount its ledger row books, what the reader paid in crypto and at what rate: the amount
-- as an integer of the crypto's smallest unit shown (`crypto_exponent` decimals, 8 for BTC
-- on-chain: satoshis), the rate (fiat per one crypto unit) as BTCPay gave it, an exact
-- decimal. Never the payment's transaction id or address: they would tie a reader to the
-- chain.
--
-- `attention` is an invoice that ended somewhere the operator must look: paid partly and
-- expired, paid after it expired, paid more than asked, marked settled with less paid
-- than asked, marked invalid after it had settled. `paid_minor` is what BTCPay says was
-- paid, in the contribution's currency, when it differs from the amount.
ALTER TABLE contributions
    ADD COLUMN crypto_currency text,
    ADD COLUMN crypto_amount_minor bigint,
    ADD COLUMN crypto_exponent smallint CHECK (crypto_exponent BETWEEN 0 AND 18),
    ADD COLUMN crypto_rate numeric CHECK (crypto_rate > 0),
    ADD COLUMN attention text CHECK (attention IN (
        'partial_payment', 'late_payment', 'overpayment', 'marked_settled_short',
        'invalid_after_settlement')),
    ADD COLUMN attention_at timestamptz,
    ADD COLUMN paid_minor bigint,
    ADD CONSTRAINT contributions_crypto_check CHECK (
        (crypto_currency IS NULL OR provider = 'btcpay')
        AND (crypto_amount_minor IS NULL) = (crypto_currency IS NULL)
        AND (crypto_exponent IS NULL) = (crypto_currency IS NULL)),
    ADD CONSTRAINT contributions_attention_at_check CHECK ((attention IS NULL) = (attention_at IS NULL));
CREATE INDEX contributions_attention ON contributions (attention_at) WHERE attention IS NOT NULL;

-- A settled payment taken back by its provider (BTCPay: a settled invoice marked invalid)
-- is a `reversal` row (negative, keyed `<invoice>:invalid`).
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check,
    DROP CONSTRAINT ledger_entries_check;
ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ('payment', 'refund', 'refund_reversal', 'dispute', 'dispute_reversal',
                        'fee', 'reversal')),
    ADD CONSTRAINT ledger_entries_check
        CHECK (CASE WHEN kind IN ('payment', 'dispute_reversal', 'refund_reversal') THEN amount_minor > 0
                    WHEN kind = 'fee' THEN amount_minor <> 0
                    ELSE amount_minor < 0 END);
