-- Refunds and two-phase funds (authorize, then capture or void).
-- Ledger kind 3 is a refund: balance = top-ups - spends + refunds, always.
-- refund_of names the spend a refund gives back; the refunds of one spend
-- never add up to more than it (checked under the account's row lock).
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (kind IN (1, 2, 3)); -- 3 refund
-- A capture spends a whole authorization, which may be up to 10^9.
ALTER TABLE ledger DROP CONSTRAINT ledger_amount_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_amount_check
    CHECK (amount > 0 AND amount <= 1000000000);
ALTER TABLE ledger ADD COLUMN refund_of bigint REFERENCES ledger (id);
ALTER TABLE ledger ADD CONSTRAINT ledger_refund_of_check
    CHECK ((kind = 3) = (refund_of IS NOT NULL));
CREATE INDEX ledger_refunds ON ledger (refund_of) WHERE refund_of IS NOT NULL;

-- Money held for a later capture. status: 1 pending, 2 captured, 3 voided
-- (by Void, or by itself once expires_at_ms passed). Only pending ones whose
-- expires_at_ms is still ahead count against the available balance.
-- Authorization keys and ledger keys share one namespace per user: a capture
-- writes its SPEND row under its authorization's key.
CREATE TABLE authorizations (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES accounts (user_id),
    amount          bigint NOT NULL CHECK (amount > 0 AND amount <= 1000000000),
    idempotency_key text NOT NULL CHECK (octet_length(idempotency_key) BETWEEN 1 AND 128),
    reference       text NOT NULL DEFAULT '',
    status          smallint NOT NULL DEFAULT 1 CHECK (status IN (1, 2, 3)),
    expires_at_ms   bigint NOT NULL,
    capture_txn_id  bigint NULL REFERENCES ledger (id), -- the SPEND row of its capture
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key),
    CHECK ((status = 2) = (capture_txn_id IS NOT NULL))
);

-- The live holds of an account, and the sweeper's walk over expired ones.
CREATE INDEX authorizations_pending ON authorizations (user_id, expires_at_ms) WHERE status = 1;
CREATE INDEX authorizations_expiry ON authorizations (expires_at_ms) WHERE status = 1;
