-- Concerts, their schedules and seats, holds (reservations) and payments.
-- Status codes: seats 1 available, 2 held, 3 sold; reservations 1 held,
-- 2 confirmed, 3 cancelled, 4 expired. A hold past expires_at_ms counts as
-- free when read, before any sweeper marks it expired.
CREATE TABLE concerts (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schedules (
    id            bigserial PRIMARY KEY,
    concert_id    bigint NOT NULL REFERENCES concerts (id),
    starts_at_ms  bigint NOT NULL,
    seat_count    int NOT NULL CHECK (seat_count BETWEEN 1 AND 10000),
    seat_price    bigint NOT NULL CHECK (seat_price >= 0)
);
CREATE INDEX schedules_concert ON schedules (concert_id);

CREATE TABLE reservations (
    id             bigserial PRIMARY KEY,
    user_id        bigint NOT NULL CHECK (user_id > 0),
    schedule_id    bigint NOT NULL REFERENCES schedules (id),
    status         smallint NOT NULL CHECK (status BETWEEN 1 AND 4),
    amount         bigint NOT NULL CHECK (amount >= 0),
    expires_at_ms  bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_live_expiry ON reservations (expires_at_ms) WHERE status = 1;

CREATE TABLE seats (
    schedule_id         bigint NOT NULL REFERENCES schedules (id),
    number              int NOT NULL CHECK (number >= 1),
    price               bigint NOT NULL CHECK (price >= 0),
    status              smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 3),
    hold_reservation_id bigint REFERENCES reservations (id),
    hold_user_id        bigint,
    hold_expires_at_ms  bigint,
    -- The highest lock fence that wrote this seat: an older one lost its lock.
    last_fence          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, number),
    CHECK ((status = 1) = (hold_reservation_id IS NULL))
);

-- The seats of each reservation. `live` is true while the reservation holds
-- or owns them (held, confirmed): the partial unique index means a seat can
-- never be in two live holds or sold twice, whatever the code does.
CREATE TABLE reservation_seats (
    reservation_id  bigint NOT NULL REFERENCES reservations (id),
    schedule_id     bigint NOT NULL,
    number          int NOT NULL,
    live            boolean NOT NULL DEFAULT true,
    PRIMARY KEY (reservation_id, number),
    FOREIGN KEY (schedule_id, number) REFERENCES seats (schedule_id, number)
);
CREATE UNIQUE INDEX reservation_seats_one_live ON reservation_seats (schedule_id, number) WHERE live;

-- One payment per reservation: its intent is recorded before balance-svc is
-- asked to charge, so a retry or a restart finishes the same payment.
CREATE TABLE payments (
    id               bigserial PRIMARY KEY,
    reservation_id   bigint NOT NULL UNIQUE REFERENCES reservations (id),
    user_id          bigint NOT NULL,
    amount           bigint NOT NULL CHECK (amount >= 0),
    idempotency_key  text NOT NULL,
    status           smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 3), -- pending, charged, failed
    balance_txn_id   bigint,
    balance_after    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
