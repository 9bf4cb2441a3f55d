-- Connection state recovery replays a user's private messages since a time
-- (docs/protocol.md §17): found by recipient and by sender.
CREATE INDEX messages_direct_to ON messages (namespace, to_user_id, ts_ms)
    WHERE to_user_id IS NOT NULL;
CREATE INDEX messages_direct_from ON messages (namespace, sender_id, ts_ms)
    WHERE to_user_id IS NOT NULL;
