-- Payments become two-phase (balance-svc Authorize, then Capture or Void)
-- and a confirmed reservation can be cancelled and refunded. payments.status:
-- 1 pending, 2 charged, 3 failed, 4 capturing (confirmed, capture to do),
-- 5 voiding (lost its hold while pending), 6 refunding, 7 refunded.
-- A payment no longer keeps its hold alive: holds expire on time, always.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status BETWEEN 1 AND 7);
ALTER TABLE payments ADD COLUMN authorization_id bigint;
ALTER TABLE payments ADD COLUMN refund_txn_id bigint;
-- The recovery pass reads the payments that still need balance-svc.
CREATE INDEX payments_unsettled ON payments (updated_at) WHERE status IN (1, 4, 5, 6);
-- Holds made before this version were extended while paid; from now on a
-- seat's hold ends exactly when its reservation's does.
UPDATE seats s SET hold_expires_at_ms = r.expires_at_ms FROM reservations r
    WHERE s.status = 2 AND r.id = s.hold_reservation_id;
-- The sweeper frees seats still marked held by a hold that ended; the marks
-- it looks at are the held seats only, so it need not read every seat.
CREATE INDEX seats_held ON seats (schedule_id, number) WHERE status = 2;
