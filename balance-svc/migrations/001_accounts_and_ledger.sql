-- Prepaid point accounts and their ledger. Every change to a balance writes a
-- ledger row, so balance = sum of the ledger (top-ups minus spends), always.
CREATE TABLE accounts (
    user_id     bigint PRIMARY KEY CHECK (user_id > 0),
    balance     bigint NOT NULL DEFAULT 0
                CHECK (balance >= 0 AND balance <= 1000000000000),
    -- The highest lock fence that wrote this row: a writer with an older fence
    -- lost its lock and is refused.
    last_fence  bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES accounts (user_id),
    kind            smallint NOT NULL CHECK (kind IN (1, 2)), -- 1 top-up, 2 spend
    amount          bigint NOT NULL CHECK (amount > 0 AND amount <= 100000000),
    balance_after   bigint NOT NULL CHECK (balance_after >= 0),
    idempotency_key text NOT NULL CHECK (octet_length(idempotency_key) BETWEEN 1 AND 128),
    reference       text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A repeated request finds its first answer here, and can never be applied twice.
    UNIQUE (user_id, idempotency_key)
);

CREATE INDEX ledger_user_newest ON ledger (user_id, id DESC);
