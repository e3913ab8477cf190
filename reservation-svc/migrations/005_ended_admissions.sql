-- Admissions that ended before their token did: the user left the waiting
-- room, or paid a hold the admission made. HoldSeats refuses their tokens,
-- so no more users than the room's limit can hold seats at once. The
-- sweeper drops a row once no token of it can be valid any more (an
-- admission lasts at most 24 hours).
CREATE TABLE ended_admissions (
    ticket text PRIMARY KEY,
    ended_at_ms bigint NOT NULL
);
CREATE INDEX ended_admissions_ended_at ON ended_admissions (ended_at_ms);
