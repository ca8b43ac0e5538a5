-- API tokens made with `runnerhub token create` (POST /api/v1/tokens), beside the static
-- ones of the configuration. Only a SHA-256 of each token is kept: a token is 32 random
-- bytes, so a plain hash cannot be reversed or guessed, and a stolen table grants nothing.
-- A revoked token keeps its row (who, when) and frees its name.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('read', 'admin')),
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE UNIQUE INDEX api_tokens_live_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;
