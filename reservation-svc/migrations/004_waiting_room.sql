-- A schedule may have a waiting room: at most waiting_room_limit users are
-- admitted to HoldSeats at a time, each for admission_ttl_ms. 0: none.
ALTER TABLE schedules
    ADD COLUMN waiting_room_limit integer NOT NULL DEFAULT 0 CHECK (waiting_room_limit >= 0),
    ADD COLUMN admission_ttl_ms bigint NOT NULL DEFAULT 600000 CHECK (admission_ttl_ms > 0);

-- The waiting-room ticket whose admission made a hold; paying it ends that
-- admission, so the next in line is admitted.
ALTER TABLE reservations ADD COLUMN admission_ticket text;
