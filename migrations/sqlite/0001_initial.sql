-- All times are unix epoch milliseconds. `revoked_at` is written with the
-- database clock so that instances with skewed clocks agree on revocation order.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    -- lowercased username: uniqueness and login ignore case
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    -- comma-separated role names
    roles         TEXT NOT NULL DEFAULT '',
    disabled_at   INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    -- absolute end of the session: login + refresh TTL
    expires_at   INTEGER NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    revoked_at   INTEGER
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token, hex; the token itself is never stored
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    parent_hash TEXT,
    created_at  INTEGER NOT NULL,
    spent_at    INTEGER,
    -- how many times it was presented; above 1 means reuse
    use_count   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- The public half of every instance's signing keys, so that instances with
-- different key directories verify each other's tokens.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    alg        TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- set when the key stopped signing
    retired_at INTEGER,
    -- refreshed while an instance holds the key, so that a key whose keys
    -- directory was lost stops verifying once its tokens have expired
    last_seen_at INTEGER NOT NULL
);
