-- Cancel, confirm, sweep and replacing an expired hold all find seats by the
-- reservation holding them; without an index each was a scan of every seat.
CREATE INDEX seats_hold_reservation ON seats (hold_reservation_id)
    WHERE hold_reservation_id IS NOT NULL;
