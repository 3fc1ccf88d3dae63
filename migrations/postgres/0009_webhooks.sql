-- Incoming webhooks: the signing secret of each provider's webhooks (encrypted like the
-- provider apps' client secrets), every verified event once (the unique key on the
-- provider's event id refuses a replay), and one delivery per owning connection: the outbox
-- that publishes the event to its owner, in `seq` order per connection, at least once.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE provider_webhook_secrets (
    provider TEXT PRIMARY KEY,
    -- Encrypted, owner 'system'.
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE webhook_events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    -- The provider's id of the event (a delivery id, an event id), or a digest of the signed
    -- content when the provider gives none.
    event_id TEXT NOT NULL,
    event_type TEXT,
    -- The raw body, as signed (UTF-8).
    payload TEXT NOT NULL,
    -- How many connections it was routed to; 0 for an event nobody owns (kept, counted).
    owners INTEGER NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_events_provider_event_key ON webhook_events (provider, event_id);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

CREATE TABLE webhook_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    event_seq BIGINT NOT NULL REFERENCES webhook_events (seq) ON DELETE CASCADE,
    -- No foreign key: a deleted connection's events stay its owner's until retention ends.
    connection_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- NULL until published on the bus.
    published_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_user_idx ON webhook_deliveries (user_id, seq);
CREATE INDEX webhook_deliveries_connection_idx ON webhook_deliveries (connection_id, seq);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_seq);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (seq) WHERE published_at IS NULL;

-- Routing finds a provider's connections; the admin view filters by provider.
CREATE INDEX connections_provider_created_idx ON connections (provider, created_at);
-- A connection's history: the audit rows whose target it is.
CREATE INDEX audit_log_target_idx ON audit_log (target, seq);
