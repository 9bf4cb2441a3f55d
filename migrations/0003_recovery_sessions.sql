-- Connection state recovery (docs/protocol.md, "Reconnecting"): what a
-- socket that dropped needs to be restored, kept until expires_ms. One
-- schema for SQLite and PostgreSQL.
CREATE TABLE recovery_sessions (
    pid TEXT PRIMARY KEY NOT NULL,
    -- namespace and user id: sessions are bounded per user
    user_key TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    -- rooms and positions, as JSON
    body TEXT NOT NULL
);
CREATE INDEX recovery_sessions_user ON recovery_sessions (user_key, expires_ms);
CREATE INDEX recovery_sessions_expiry ON recovery_sessions (expires_ms);
