-- Version 5: cheaper rows, exact counts, and new rows written once.
--
-- * `status` is an integer (0 sent, 1 pending, 2 retry, 3 failed; see
--   status.rs): 0 and 1 take no bytes in a record. A status this build
--   does not know is kept as it was, so `status` reports it (exit 5).
-- * `key` is NULL where the id gives it back: a one-field key whose value
--   is the id's text, under the feed's `key_field` (see items.rs).
-- * the columns every collect reads (status, deleted, raw_hash) come first.
-- * `feed_counts`: each feed's items by deleted flag and status, kept by
--   the triggers below in the very statements that change them (and by
--   `Tx::insert_many` for new rows: a trigger per insert doubled the cost
--   of a first sync), so `status` reads six numbers instead of counting
--   every row, and they are exact after any crash.
-- * `items_unsent`: the rows that are not `sent`, the only ones a queue,
--   the retry backlog or `items --status` ever looks for, so those never
--   walk the table. Rows that are sent, nearly all of them, cost it nothing.
-- * `feeds.unconfirmed_from/to`: new rows go in once, as `sent`, with the
--   range of those not yet acknowledged (see unconfirmed.rs).
ALTER TABLE feeds ADD COLUMN key_field TEXT;
ALTER TABLE feeds ADD COLUMN unconfirmed_from INTEGER;
ALTER TABLE feeds ADD COLUMN unconfirmed_to INTEGER;

-- The field of the newest one-field key, as the rows' keys name it.
UPDATE feeds SET key_field = (
    SELECT j.key FROM items i, json_each(i.key) j
    WHERE i.feed_id = feeds.id AND (SELECT count(*) FROM json_each(i.key)) = 1
    ORDER BY i.rowid DESC LIMIT 1);

ALTER TABLE items RENAME TO items_v4;
CREATE TABLE items (
    feed_id         INTEGER NOT NULL REFERENCES feeds(id),
    id              TEXT NOT NULL,
    status          INTEGER NOT NULL,         -- 0 sent, 1 pending, 2 retry, 3 failed
    deleted         INTEGER NOT NULL DEFAULT 0,
    raw_hash        BLOB,                     -- 16-byte hash of the source bytes; NULL for tombstones
    hash            BLOB NOT NULL,            -- 16-byte canonical hash of the latest version
    modified_at     INTEGER NOT NULL,         -- unix seconds
    sent_at         INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    next_attempt_at INTEGER,
    failed_at       INTEGER,
    key             TEXT,                     -- key fields as a JSON object; NULL: {key_field: id}
    data            TEXT,                     -- kept until delivered, or always with keep_data
    UNIQUE (feed_id, id)
);
INSERT INTO items (rowid, feed_id, id, status, deleted, raw_hash, hash, modified_at, sent_at,
                   attempts, error, next_attempt_at, failed_at, key, data)
SELECT i.rowid, i.feed_id, i.id,
       CASE i.status WHEN 'sent' THEN 0 WHEN 'pending' THEN 1 WHEN 'retry' THEN 2
                     WHEN 'failed' THEN 3 ELSE i.status END,
       i.deleted, i.raw_hash, i.hash, i.modified_at, i.sent_at, i.attempts, i.error,
       i.next_attempt_at, i.failed_at,
       CASE WHEN f.key_field IS NOT NULL AND i.key = json_object(f.key_field, i.id)
            THEN NULL ELSE i.key END,
       i.data
FROM items_v4 i JOIN feeds f ON f.id = i.feed_id
ORDER BY i.rowid;
DROP TABLE items_v4;

CREATE INDEX items_unsent ON items (feed_id, status) WHERE status <> 0;

CREATE TABLE feed_counts (
    feed_id INTEGER PRIMARY KEY REFERENCES feeds(id),
    live    INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    sent    INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    retry   INTEGER NOT NULL DEFAULT 0,
    failed  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO feed_counts (feed_id, live, deleted, sent, pending, retry, failed)
SELECT f.id,
       count(i.rowid) FILTER (WHERE NOT i.deleted), count(i.rowid) FILTER (WHERE i.deleted),
       count(i.rowid) FILTER (WHERE i.status = 0), count(i.rowid) FILTER (WHERE i.status = 1),
       count(i.rowid) FILTER (WHERE i.status = 2), count(i.rowid) FILTER (WHERE i.status = 3)
FROM feeds f LEFT JOIN items i ON i.feed_id = f.id GROUP BY f.id;

CREATE TRIGGER items_count_update AFTER UPDATE OF status, deleted ON items
WHEN old.status IS NOT new.status OR old.deleted IS NOT new.deleted
BEGIN
    UPDATE feed_counts SET
        live = live + (new.deleted = 0) - (old.deleted = 0),
        deleted = deleted + (new.deleted <> 0) - (old.deleted <> 0),
        sent = sent + (new.status = 0) - (old.status = 0),
        pending = pending + (new.status = 1) - (old.status = 1),
        retry = retry + (new.status = 2) - (old.status = 2),
        failed = failed + (new.status = 3) - (old.status = 3)
    WHERE feed_id = new.feed_id;
END;
CREATE TRIGGER items_count_delete AFTER DELETE ON items
BEGIN
    UPDATE feed_counts SET
        live = live - (old.deleted = 0),
        deleted = deleted - (old.deleted <> 0),
        sent = sent - (old.status = 0),
        pending = pending - (old.status = 1),
        retry = retry - (old.status = 2),
        failed = failed - (old.status = 3)
    WHERE feed_id = old.feed_id;
END;

-- The cached gauges of version 3 are the counts above now.
UPDATE feed_metrics SET gauges = NULL;
