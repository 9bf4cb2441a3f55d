-- Yjs documents (docs/protocol.md §18): each document's latest snapshot
-- (a Yjs update holding its whole state) and the updates stored since, in
-- the order they were stored. Binary data is base64 text: one schema for
-- SQLite and PostgreSQL.
CREATE TABLE yjs_docs (
    key TEXT PRIMARY KEY NOT NULL,
    -- the state at snapshot_seq ('' before the first snapshot)
    snapshot TEXT NOT NULL,
    snapshot_seq BIGINT NOT NULL,
    -- the last update's seq
    seq BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE yjs_updates (
    key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (key, seq)
);
