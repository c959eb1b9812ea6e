//! The schema of the state file and its migrations: which version a file
//! is at, bringing an older one up to date, and refusing one written by a
//! newer feedsync rather than misreading it.

use rusqlite::TransactionBehavior;

use super::State;
use crate::error::{Error, Result};

/// Schema migrations, applied in order by `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    // Version 2: when a `retry` item's last attempt failed, so its wait
    // (`next_attempt_at - failed_at`) can be counted again from now when
    // the clock turns out to have been fast (see `FAILED_AHEAD`). Rows
    // from version 1 keep NULL.
    "ALTER TABLE items ADD COLUMN failed_at INTEGER;",
    // Version 3, for the metrics file, one row per feed: the items the
    // target has acknowledged (`feedsync_items_sent_total`, bumped in the
    // transaction that marks them sent), and the gauges last counted, as
    // JSON (NULL once any item's status or deleted flag changed since), so
    // a run that changes nothing writes the file without counting every
    // item. (Since version 5 the counts are kept exact in `feed_counts`;
    // `gauges` is no longer read.) A table of its own (IF NOT EXISTS): nothing else reads it, and
    // a file set back to an older version by hand still upgrades.
    "CREATE TABLE IF NOT EXISTS feed_metrics (
         feed_id          INTEGER PRIMARY KEY REFERENCES feeds(id),
         items_sent_total INTEGER NOT NULL DEFAULT 0,
         gauges           TEXT
     );",
    // Version 4: tasks a target accepted and had not finished when last
    // looked at (Meilisearch), with the items (rowid and the hash sent,
    // as JSON `[[rowid, "hex"], …]`) each carries: a later run settles
    // them before it queues more work there (see `tasks`). (`IF NOT
    // EXISTS`: a file made to look older by dropping a later column keeps
    // this table.)
    "CREATE TABLE IF NOT EXISTS tasks (
         place       TEXT NOT NULL,
         uid         INTEGER NOT NULL,
         feed_id     INTEGER NOT NULL,
         deletes     INTEGER NOT NULL,
         items       TEXT NOT NULL,
         enqueued_at INTEGER NOT NULL,
         PRIMARY KEY (place, uid)
     );",
    include_str!("schema-5.sql"),
];

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

impl State {
    /// Fails when the file was written by a newer feedsync, whose schema
    /// this one cannot read.
    pub fn check_schema(&self) -> Result<()> {
        let (version, known) = (self.user_version()?, schema_version());
        if version > known {
            return Err(Error::State(format!(
                "state file {}: written by a newer feedsync (schema version {version}, this one knows {known})",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Sets the connection up and brings the schema to this build's
    /// version, refusing a newer one.
    pub(super) fn setup(&mut self) -> Result<()> {
        self.conn.busy_timeout(std::time::Duration::from_secs(10))?;
        rusqlite::vtab::array::load_module(&self.conn)?;
        // WAL lets `status`, `report` and `backup` read during a run; the
        // last connection to close checkpoints and removes the -wal file.
        self.conn
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        // wal_autocheckpoint: a checkpoint every 64 MB of WAL rather than 4,
        // so the pages a collect changed and its delivery changes again are
        // copied into the file once (the last connection to close
        // checkpoints the rest): a 1% sync at a million items, 3% faster.
        // temp_store: every multi-row INSERT of a collect keeps a statement
        // journal (so a duplicate key undoes only that statement); in a
        // temporary file that was 230 MB of writes for a first sync of a
        // million items, in memory it is the few pages one statement
        // touches.
        self.conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -32000;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 16384;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        self.check_schema()?;
        let version = self.user_version()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The schema version the file is at (`PRAGMA user_version`).
    pub fn user_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}
