-- Login throttle counters, shared by every instance on the database. One row
-- per budget and subject: an event count in a window fixed from its first
-- event. Times are the database clock's unix epoch milliseconds, so that
-- instances agree on every window.
CREATE TABLE login_throttle (
    -- which budget: 'address' (attempts per client address), 'pair' (failures
    -- per guarded name and client address), 'account' (failures per guarded
    -- name from all addresses)
    budget       TEXT NOT NULL,
    -- what is counted: a client address (IPv6 per /64), a name, or both
    subject      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    events       BIGINT NOT NULL,
    -- when the last event was let through; past the limit, the account budget
    -- lets one through a minute after the one before
    admitted_at  BIGINT NOT NULL,
    PRIMARY KEY (budget, subject)
);
-- Rows whose window has passed are deleted in the background.
CREATE INDEX login_throttle_window_start ON login_throttle (window_start);
