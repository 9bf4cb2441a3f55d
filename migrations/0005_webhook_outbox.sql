-- Webhooks (docs/http-api.md, "Webhooks"): events wait here until the
-- backend took them. A message's event is written in the same transaction
-- as the message. One schema for SQLite and PostgreSQL.
CREATE TABLE webhook_outbox (
    -- a ULID: delivery goes in this order
    event_id TEXT PRIMARY KEY NOT NULL,
    -- the event as sent: { id, type, time, data }
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL
);

-- Which node delivers (one at a time, so no event goes twice and the
-- order holds with several nodes).
CREATE TABLE webhook_lease (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
