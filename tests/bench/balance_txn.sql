-- balance_txn.sql: pgbench's twin of one balance-svc TopUp or Spend: the
-- statements balance_store.c (apply_tx, apply_one) runs for a batch of one
-- operation, in one transaction, with parameters (run pgbench -M prepared:
-- like svc_pg_exec, each statement is parsed once per connection).
-- Each client alternates top-up (kind 1, +10, opens the account first) and
-- spend (kind 2, -5), with a fresh random idempotency key per transaction.
-- Variables from balance_bench.sh (pgbench -D): kind=2 (so the first is a
-- top-up), first (the first account), n (accounts; 1 = one hot account),
-- fence, ref. The accounts are funded beforehand, so a spend never fails.
\set kind 3 - :kind
\if :kind = 1
\set amt 10
\set delta 10
\else
\set amt 5
\set delta -5
\endif
\set uid :first + random(0, :n - 1)
\set key random(1, 4611686018427387903)
BEGIN;
\if :kind = 1
INSERT INTO accounts (user_id) VALUES (:uid) ON CONFLICT DO NOTHING;
\endif
SELECT balance, last_fence FROM accounts WHERE user_id = :uid FOR UPDATE \gset
\set after :balance + :delta
INSERT INTO ledger (user_id, kind, amount, balance_after, idempotency_key, reference) VALUES (:uid, :kind, :amt, :after, :key, :ref) ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id;
UPDATE accounts SET balance = :after, last_fence = :fence, updated_at = now() WHERE user_id = :uid;
COMMIT;
