-- With --key-store database: the private signing keys every instance signs
-- with, each sealed (AES-256-GCM) under TOLLGATE_KEY_ENCRYPTION_KEY with its
-- kid and algorithm bound into the seal. Their public halves are recorded in
-- signing_keys, as every instance's are.
CREATE TABLE sealed_keys (
    kid                TEXT PRIMARY KEY,
    alg                TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    created_at         INTEGER NOT NULL,
    -- set when the key stopped signing
    retired_at         INTEGER,
    sealed_private_key TEXT NOT NULL
);
-- At most one active and one next key, whatever a writer does.
CREATE UNIQUE INDEX sealed_keys_one_active_one_next ON sealed_keys (state)
    WHERE state <> 'retired';

-- One row. `generation` goes up with every change to sealed_keys: instances
-- read it every 2 s to notice a rotation, and a change is written only if
-- the generation is still the one it was worked out on (two instances
-- creating the first keys at once: one wins, the other reads its keys).
-- `token_lifetime_ms` is the longest an access token can be accepted, as
-- declared by the gateways serving these keys (0: none yet); pruning waits
-- that long after a retirement.
CREATE TABLE key_store (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    generation        INTEGER NOT NULL,
    token_lifetime_ms INTEGER NOT NULL
);
INSERT INTO key_store (id, generation, token_lifetime_ms) VALUES (1, 0, 0);
