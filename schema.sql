-- feedsync state, version 1. Applied by src/state/schema.rs when PRAGMA user_version
-- is below 1. A later version appends its migration to src/state/schema.rs's list
-- instead of editing this file, so old state files upgrade in place.

-- One row per configured feed that has ever run.
CREATE TABLE feeds (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    -- Hash of what gives raw source bytes their meaning (key, hash_exclude,
    -- sort_arrays, CSV header); raw hashes are trusted only while it holds.
    raw_seed        INTEGER,
    -- HTTP source validators, stored only after a completed run.
    etag            TEXT,
    last_modified   TEXT,
    last_run_at     INTEGER,
    last_success_at INTEGER,
    last_error      TEXT
);

-- The feed table: one row per item ever seen, tombstones included.
CREATE TABLE items (
    feed_id         INTEGER NOT NULL REFERENCES feeds(id),
    id              TEXT NOT NULL,
    key             TEXT NOT NULL,            -- key fields as a JSON object
    hash            BLOB NOT NULL,            -- 16-byte canonical hash of the latest version
    raw_hash        BLOB,                     -- 16-byte hash of the source bytes; NULL for tombstones
    deleted         INTEGER NOT NULL DEFAULT 0,
    -- pending | sent | retry | failed. No CHECK: SQLite evaluates an IN list
    -- through a temporary b-tree, which doubled the cost of every write.
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    modified_at     INTEGER NOT NULL,         -- unix seconds
    sent_at         INTEGER,
    next_attempt_at INTEGER,
    data            TEXT,                     -- kept until delivered, or always with keep_data
    UNIQUE (feed_id, id)
);


-- Run history: one row per job.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    exit_code   INTEGER,
    summary     TEXT
);

-- Small facts about the installation (e.g. when `run` last checked the schedule).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;
