-- Collaborative documents (docs/protocol.md §15). One schema for SQLite and PostgreSQL.

-- One row per edited document: its version (the last op's), and a snapshot
-- of the text at snapshot_version, so a load replays at most a few ops.
CREATE TABLE documents (
    key TEXT PRIMARY KEY NOT NULL,
    namespace TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    snapshot TEXT NOT NULL,
    snapshot_version BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- The op log, as applied (after transformation): version n turns the text
-- at n-1 into the text at n. The primary key is a second guard against two
-- writers giving out one version.
CREATE TABLE doc_ops (
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    position BIGINT NOT NULL,
    content TEXT,
    length BIGINT,
    user_id TEXT NOT NULL,
    op_id TEXT,
    ts_ms BIGINT NOT NULL,
    PRIMARY KEY (doc, version)
);
