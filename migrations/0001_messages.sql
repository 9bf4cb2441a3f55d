-- One schema for SQLite and PostgreSQL (BIGINT is INTEGER affinity in SQLite).

-- Each conversation (a room or a private pair, per namespace) counts its own seq.
CREATE TABLE conversations (
    key TEXT PRIMARY KEY NOT NULL,
    last_seq BIGINT NOT NULL
);

CREATE TABLE messages (
    conversation TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    room_id TEXT,
    to_user_id TEXT,
    sender_id TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    content TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    client_msg_id TEXT,
    PRIMARY KEY (conversation, seq)
);

-- A retry with the same clientMsgId from the same user finds the first message.
CREATE UNIQUE INDEX messages_client_msg_id
    ON messages (namespace, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
