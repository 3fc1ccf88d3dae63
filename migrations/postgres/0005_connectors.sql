-- The connector vault: the instance's own OAuth app per provider, users' connections to
-- outside services with their credentials, and authorizations started but not finished.
-- Secrets are envelope-encrypted (base64 of the stored form), bound to their table, column,
-- row and owner. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE provider_apps (
    provider TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    -- Encrypted, owner 'system'.
    client_secret TEXT NOT NULL,
    -- A JSON object of non-secret extra settings.
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    auth_kind TEXT NOT NULL CHECK (auth_kind IN ('oauth2', 'oauth1', 'api_key', 'basic')),
    -- The provider account's stable id, so that connecting it again updates this row.
    account_id TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth')),
    -- Granted scopes, space-separated.
    scopes TEXT NOT NULL,
    -- A JSON object: the connection parameters and the values kept from the flow.
    params TEXT NOT NULL,
    -- Encrypted JSON (tokens or the submitted credential), owner the connection's user.
    credentials TEXT NOT NULL,
    expires_at BIGINT,
    last_refresh_at BIGINT,
    -- A stable code and a scrubbed description of the last failure.
    last_error TEXT,
    -- The refresh lease: one process at a time refreshes a connection's tokens.
    refresh_holder TEXT,
    refresh_lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX connections_account_key ON connections (user_id, provider, account_id);
CREATE INDEX connections_user_idx ON connections (user_id, created_at);
CREATE INDEX connections_expiry_idx ON connections (expires_at);

CREATE TABLE connection_authorizations (
    -- SHA-256 of the state sent to the provider; the state itself is never stored.
    state_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    -- Encrypted JSON (the PKCE verifier, an OAuth 1.0a request token secret), owner the user.
    secrets TEXT NOT NULL,
    scopes TEXT NOT NULL,
    params TEXT NOT NULL,
    return_to TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connection_authorizations_expiry_idx ON connection_authorizations (expires_at);
