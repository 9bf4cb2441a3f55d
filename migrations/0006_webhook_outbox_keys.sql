-- Webhook events that fold into one while they wait (document.changed: a
-- document's edits within the debounce), and events not due yet.
ALTER TABLE webhook_outbox ADD COLUMN coalesce_key TEXT;
ALTER TABLE webhook_outbox ADD COLUMN due_ms BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX webhook_outbox_key ON webhook_outbox (coalesce_key);
