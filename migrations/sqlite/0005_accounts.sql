-- Accounts: an optional email address (where password-reset mail goes), the
-- last login, password-reset tokens and the audit trail. Times are unix
-- epoch milliseconds, as everywhere.

ALTER TABLE users ADD COLUMN email TEXT;
-- lowercased email: uniqueness and lookup ignore case; NULLs do not collide
ALTER TABLE users ADD COLUMN email_key TEXT;
CREATE UNIQUE INDEX users_email_key ON users (email_key);
ALTER TABLE users ADD COLUMN last_login_at INTEGER;

CREATE TABLE password_resets (
    -- SHA-256 of the token, hex; the token itself is never stored
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- set when the token changed the password: it works once
    used_at    INTEGER
);
CREATE INDEX password_resets_user_id ON password_resets (user_id);

-- Who did what to whom, from where. Never a secret. Rows older than
-- --audit-retention are deleted. `id` orders the rows (newest first) and is
-- the admin API's cursor.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    -- a user id, 'cli', or NULL for an anonymous caller
    actor      TEXT,
    -- the user id the event is about, or a key id for key events
    target     TEXT,
    ip         TEXT,
    request_id TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_target ON audit_events (target, id);
