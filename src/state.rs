//! The state file: one SQLite database that is the whole memory of feedsync.
//! This module owns its schema, its migrations and every SQL statement, so
//! the guarantees about it (mode 0600, no `-wal` left behind, one writer at a
//! time) are kept in one place.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::record::{Hash, Item};
use crate::source::Validators;

/// Schema migrations, applied in order by `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../schema.sql"),
    // Version 2: when a `retry` item's last attempt failed, so its wait
    // (`next_attempt_at - failed_at`) can be counted again from now when
    // the clock turns out to have been fast (see `FAILED_AHEAD`). Rows
    // from version 1 keep NULL.
    "ALTER TABLE items ADD COLUMN failed_at INTEGER;",
];

pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// Item statuses as stored (and as DESIGN.md names them).
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SENT: &str = "sent";
    pub const RETRY: &str = "retry";
    pub const FAILED: &str = "failed";
    pub const ALL: [&str; 4] = [PENDING, SENT, RETRY, FAILED];
}

fn blob(h: Hash) -> [u8; 16] {
    h.to_be_bytes()
}

fn unblob(b: &[u8]) -> Hash {
    let mut a = [0u8; 16];
    if b.len() == 16 {
        a.copy_from_slice(b);
    }
    Hash::from_be_bytes(a)
}

impl State {
    /// Opens (creating with mode 0600 if needed) and migrates the state file.
    pub fn open(path: &Path) -> Result<State> {
        let fail = |what: &dyn std::fmt::Display| {
            Error::State(format!("state file {}: {what}", path.display()))
        };
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => File::open(path),
                    _ => Err(e),
                })
                .map_err(|e| fail(&e))?;
        }
        let opened = Connection::open(path)
            .map_err(|e| fail(&e))
            .and_then(|conn| {
                let mut state = State {
                    conn,
                    path: path.to_path_buf(),
                };
                state.setup().map_err(|e| match e {
                    Error::Sqlite(e) => fail(&e),
                    e => e,
                })?;
                Ok(state)
            });
        opened.map_err(|e| match (e, full_disk(path)) {
            (Error::State(m), Some(why)) => Error::State(format!("{m}: {why}")),
            (e, _) => e,
        })
    }

    /// For the commands that only look (`status`, `items`, `runs`,
    /// `report`, `doctor`): the state file opened to read only (nothing is
    /// created, migrated or written), or an empty in-memory state when
    /// there is none.
    ///
    /// Looking must work on a full disk too, where the usual way in fails:
    /// every connection to a WAL database maps its WAL index (`-shm`), and
    /// the first to open it (any command, when no run is active) grows it
    /// to 32 KB by writing, which a full disk refuses ("disk I/O error").
    /// So when that way fails on I/O, the file is read with the index in
    /// this process's memory instead (SQLite's exclusive locking mode),
    /// which needs no disk space. That keeps runs out for the moment of the
    /// read (they wait on the busy timeout), so it is not the usual way.
    pub fn open_read_only(path: &Path) -> Result<State> {
        let fail = |what: &dyn std::fmt::Display| {
            Error::State(format!("state file {}: {what}", path.display()))
        };
        if !path.exists() {
            return State::empty(path);
        }
        if path.is_dir() {
            return Err(fail(&"is a folder, not a file"));
        }
        let conn = match reader(path, false) {
            Ok(conn) => conn,
            Err(e) if io_failure(&e) => reader(path, true).map_err(|_| fail(&e))?,
            Err(e) if corrupt(&e) => return Err(fail(&format!("is corrupt: {e}"))),
            Err(e) => return Err(fail(&e)),
        };
        let state = State {
            conn,
            path: path.to_path_buf(),
        };
        if state.user_version()? == 0 {
            // Created but never set up (a first run killed at once).
            return State::empty(path);
        }
        Ok(state)
    }

    /// An empty state in memory, standing for `path` until a run creates it.
    fn empty(path: &Path) -> Result<State> {
        let mut state = State {
            conn: Connection::open_in_memory()?,
            path: path.to_path_buf(),
        };
        state.setup()?;
        Ok(state)
    }

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

    fn setup(&mut self) -> Result<()> {
        self.conn.busy_timeout(std::time::Duration::from_secs(10))?;
        rusqlite::vtab::array::load_module(&self.conn)?;
        // WAL lets `status`, `report` and `backup` read during a run; the
        // last connection to close checkpoints and removes the -wal file.
        self.conn
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        self.conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -32000;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(Error::State(format!(
                "state file {}: written by a newer feedsync (schema version {version}, this one knows {known})",
                self.path.display()
            )));
        }
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A write transaction that takes SQLite's write lock at once, so a
    /// reader never has to be upgraded halfway.
    pub fn write(&mut self) -> Result<Tx<'_>> {
        Ok(Tx(self.conn.transaction_with_behavior(
            TransactionBehavior::Immediate,
        )?))
    }

    /// The id of a feed's row, creating it on first use.
    pub fn feed_id(&self, name: &str) -> Result<i64> {
        self.conn
            .execute("INSERT OR IGNORE INTO feeds (name) VALUES (?1)", [name])?;
        Ok(self
            .conn
            .query_row("SELECT id FROM feeds WHERE name = ?1", [name], |r| r.get(0))?)
    }

    pub fn feed_info(&self, name: &str) -> Result<Option<FeedInfo>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, raw_seed, last_run_at, last_success_at, last_error, etag, last_modified
                 FROM feeds WHERE name = ?1",
                [name],
                |r| {
                    Ok(FeedInfo {
                        id: r.get(0)?,
                        raw_seed: r.get(1)?,
                        last_run_at: r.get(2)?,
                        last_success_at: r.get(3)?,
                        last_error: r.get(4)?,
                        validators: Validators {
                            etag: r.get(5)?,
                            last_modified: r.get(6)?,
                        },
                    })
                },
            )
            .optional()?)
    }

    /// Records how a job ended for a feed.
    pub fn finish_feed(&self, feed_id: i64, at: i64, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE feeds SET last_run_at = ?2, last_error = ?3,
                 last_success_at = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_success_at END
             WHERE id = ?1",
            params![feed_id, at, error],
        )?;
        Ok(())
    }

    /// Item counts for `status`: (live, deleted, per status).
    pub fn counts(&self, feed_id: i64) -> Result<Counts> {
        let mut c = Counts::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, deleted, count(*) FROM items WHERE feed_id = ?1 GROUP BY status, deleted",
        )?;
        let mut rows = stmt.query([feed_id])?;
        while let Some(r) = rows.next()? {
            let status: String = r.get(0)?;
            let deleted: bool = r.get(1)?;
            let n = r.get::<_, i64>(2)? as u64;
            if deleted {
                c.deleted += n;
            } else {
                c.live += n;
            }
            match status.as_str() {
                status::PENDING => c.pending += n,
                status::SENT => c.sent += n,
                status::RETRY => c.retry += n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    pub fn list_items(&self, feed_id: i64, filter: &ItemFilter) -> Result<Vec<ItemRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status, deleted, attempts, error, modified_at, sent_at, next_attempt_at
             FROM items
             WHERE feed_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id = ?3)
             ORDER BY id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![feed_id, filter.status, filter.id, filter.limit as i64],
            |r| {
                Ok(ItemRow {
                    id: r.get(0)?,
                    status: r.get(1)?,
                    deleted: r.get(2)?,
                    attempts: r.get(3)?,
                    error: r.get(4)?,
                    modified_at: r.get(5)?,
                    sent_at: r.get(6)?,
                    next_attempt_at: r.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Drops tombstones delivered before `before`; returns how many.
    pub fn drop_tombstones(&self, feed_id: i64, before: i64) -> Result<u64> {
        Ok(self.conn.execute(
            "DELETE FROM items WHERE feed_id = ?1 AND deleted = 1 AND status = 'sent'
               AND sent_at < ?2",
            params![feed_id, before],
        )? as u64)
    }

    /// Starts a run record; `finish_run` completes it.
    pub fn start_run(&self, job: crate::job::Job, at: i64) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, started_at) VALUES (?1, ?2)",
            params![job, at],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, at: i64, exit_code: u8, summary: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, exit_code = ?3, summary = ?4 WHERE id = ?1",
            params![run, at, exit_code, summary],
        )?;
        Ok(())
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job, started_at, finished_at, exit_code, summary FROM runs
             ORDER BY started_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRow {
                job: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                exit_code: r.get(3)?,
                summary: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn last_run_at(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT max(started_at) FROM runs", [], |r| r.get(0))?)
    }

    /// The pending items among `rowids` (ascending), in rowid order. A
    /// dense run is read as a range, sequentially, instead of row by row.
    pub fn pending_items(&self, feed_id: i64, rowids: &[i64]) -> Result<Vec<OutItem>> {
        let (Some(&first), Some(&last)) = (rowids.first(), rowids.last()) else {
            return Ok(Vec::new());
        };
        if last - first < 2 * rowids.len() as i64 {
            let mut stmt = self.conn.prepare_cached(
                "SELECT rowid, id, key, hash, deleted, data, attempts FROM items
                 WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 'pending'
                 ORDER BY rowid",
            )?;
            let rows = stmt.query_map(params![first, last, feed_id], out_item)?;
            let mut items: Vec<OutItem> = rows.collect::<rusqlite::Result<_>>()?;
            items.retain(|i| rowids.binary_search(&i.rowid).is_ok());
            return Ok(items);
        }
        let list: rusqlite::vtab::array::Array = std::rc::Rc::new(
            rowids
                .iter()
                .map(|&r| rusqlite::types::Value::Integer(r))
                .collect(),
        );
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, id, key, hash, deleted, data, attempts FROM items
             WHERE rowid IN rarray(?1) AND status = 'pending' ORDER BY rowid",
        )?;
        let rows = stmt.query_map([list], out_item)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One batch of the send queue: items in `status` (and, for `retry`,
    /// due by `due`), after `after` in rowid order.
    pub fn queue(&self, q: &Queue<'_>, after: i64, limit: usize) -> Result<Vec<OutItem>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT rowid, id, key, hash, deleted, data, attempts FROM items
             WHERE {QUEUE_WHERE} AND rowid > ?4 ORDER BY rowid LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![q.feed_id, q.status, q.due, after, limit as i64],
            out_item,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Queues are walked in rowid order straight through the table (`+feed_id`
/// keeps SQLite off the id index): one pass per delivery, and no index to
/// keep up on every write. A collect that leaves nothing pending skips the
/// walk altogether.
const QUEUE_WHERE: &str = "+feed_id = ?1 AND status = ?2
    AND (?3 IS NULL OR next_attempt_at IS NULL OR next_attempt_at <= ?3)";

fn out_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutItem> {
    Ok(OutItem {
        rowid: r.get(0)?,
        id: r.get(1)?,
        key: r.get(2)?,
        hash: unblob(&r.get::<_, Vec<u8>>(3)?),
        deleted: r.get(4)?,
        data: r.get::<_, Option<String>>(5)?.map(String::into_bytes),
        attempts: r.get(6)?,
    })
}

/// A `retry` item whose last attempt failed at a time the clock has not
/// reached: the clock was fast then, or has been set back since. Left
/// alone it would wait for the old clock, maybe for years; its wait (at
/// most `retry_max_secs`, or a Retry-After capped at 24 h) is counted again
/// from now instead ([`Tx::restart_waits`]). A row from schema 1 has no
/// `failed_at`; its wait is taken to be `retry_max_secs` (`:max`).
const FAILED_AHEAD: &str = "coalesce(failed_at, next_attempt_at - :max) > :now";

/// A feed's `retry` items at `now`: those due, by op, and those whose
/// failure lies ahead of the clock ([`FAILED_AHEAD`]), with the latest
/// time they are due. One pass, the same as counting the queue alone.
pub fn retry_backlog(conn: &Connection, feed_id: i64, now: i64, max: i64) -> Result<Backlog> {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE due AND NOT deleted), count(*) FILTER (WHERE due AND deleted),
             count(*) FILTER (WHERE ahead), max(next_attempt_at) FILTER (WHERE ahead)
         FROM (SELECT deleted, next_attempt_at,
                   next_attempt_at IS NULL OR next_attempt_at <= :now AS due, {FAILED_AHEAD} AS ahead
               FROM items WHERE +feed_id = :feed AND status = 'retry')"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(
        rusqlite::named_params! {":feed": feed_id, ":now": now, ":max": max},
        |r| {
            Ok(Backlog {
                upserts: r.get::<_, i64>(0)? as u64,
                deletes: r.get::<_, i64>(1)? as u64,
                ahead: r.get::<_, i64>(2)? as u64,
                ahead_due: r.get(3)?,
            })
        },
    )?)
}

/// What [`retry_backlog`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backlog {
    pub upserts: u64,
    pub deletes: u64,
    /// Items whose failure lies ahead of the clock.
    pub ahead: u64,
    /// The latest time one of those is due.
    pub ahead_due: Option<i64>,
}

/// Counts what a queue holds, by op: (upserts, deletes).
pub fn queue_size(conn: &Connection, q: &Queue<'_>) -> Result<(u64, u64)> {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted)
         FROM items WHERE {QUEUE_WHERE}"
    );
    Ok(
        conn.query_row(&sql, params![q.feed_id, q.status, q.due], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?,
    )
}

/// The ids and ops in a queue, for `--dry-run -v`.
pub fn queue_ids(conn: &Connection, q: &Queue<'_>) -> Result<Vec<(String, bool)>> {
    let sql = format!("SELECT id, deleted FROM items WHERE {QUEUE_WHERE} ORDER BY rowid");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![q.feed_id, q.status, q.due], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[derive(Debug, Clone)]
pub struct FeedInfo {
    pub id: i64,
    pub raw_seed: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    /// The HTTP source's validators from its last completed read.
    pub validators: Validators,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub live: u64,
    pub deleted: u64,
    pub pending: u64,
    pub sent: u64,
    pub retry: u64,
    pub failed: u64,
}

pub struct ItemFilter {
    pub status: Option<String>,
    pub id: Option<String>,
    pub limit: usize,
}

#[derive(Debug)]
pub struct ItemRow {
    pub id: String,
    pub status: String,
    pub deleted: bool,
    pub attempts: u32,
    pub error: Option<String>,
    pub modified_at: i64,
    pub sent_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

#[derive(Debug)]
pub struct RunRow {
    pub job: crate::job::Job,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<u8>,
    pub summary: Option<String>,
}

/// Which items a send takes.
pub struct Queue<'a> {
    pub feed_id: i64,
    pub status: &'a str,
    /// Only items whose `next_attempt_at` has come by then.
    pub due: Option<i64>,
}

/// An item on its way to the target.
#[derive(Debug, Clone)]
pub struct OutItem {
    pub rowid: i64,
    pub id: String,
    pub key: String,
    pub hash: Hash,
    pub deleted: bool,
    /// The JSON text to send (valid UTF-8; kept as bytes on the hot path).
    pub data: Option<Vec<u8>>,
    pub attempts: u32,
}

/// What the state knows of an item, for the diff.
#[derive(Debug)]
pub struct Known {
    pub rowid: i64,
    pub hash: Hash,
    pub deleted: bool,
    pub has_data: bool,
    pub pending: bool,
}

/// An item as the diff first sees it: only what finding changes needs,
/// kept small because there is one per item in memory.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub rowid: i64,
    raw_lo: u64,
    raw_hi: u64,
    flags: u8,
}

const HAS_RAW: u8 = 1;
const DELETED: u8 = 2;
const NEEDS_DATA: u8 = 4;
const PENDING: u8 = 8;

impl Slot {
    pub fn raw_hash(&self) -> Option<Hash> {
        (self.flags & HAS_RAW != 0)
            .then(|| (u128::from(self.raw_hi) << 64) | u128::from(self.raw_lo))
    }

    pub fn deleted(&self) -> bool {
        self.flags & DELETED != 0
    }

    /// Pending, but its data is neither stored nor (yet) spooled: the
    /// collect must pass the record's data along again.
    pub fn needs_data(&self) -> bool {
        self.flags & NEEDS_DATA != 0
    }

    pub fn pending(&self) -> bool {
        self.flags & PENDING != 0
    }
}

/// How a delivery attempt ended for one item.
pub enum Outcome<'a> {
    Sent,
    Retry {
        error: &'a str,
        next_attempt_at: i64,
    },
    Failed {
        error: &'a str,
    },
}

/// A write transaction; every change to items goes through here.
pub struct Tx<'c>(Transaction<'c>);

impl Tx<'_> {
    pub fn commit(self) -> Result<()> {
        Ok(self.0.commit()?)
    }

    pub fn rollback(self) -> Result<()> {
        Ok(self.0.rollback()?)
    }

    pub fn conn(&self) -> &Connection {
        &self.0
    }

    /// Every item of a feed in rowid order, with its raw hash. (`+feed_id`
    /// keeps SQLite on the table itself, in rowid order, instead of the
    /// id index followed by a sort.)
    pub fn slots(&self, feed_id: i64) -> Result<Vec<Slot>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT rowid, raw_hash, deleted, status = 'pending' AND data IS NULL AND NOT deleted,
                 status = 'pending'
             FROM items WHERE +feed_id = ?1 ORDER BY rowid",
        )?;
        let mut rows = stmt.query([feed_id])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let raw = match r.get_ref(1)? {
                rusqlite::types::ValueRef::Blob(b) => Some(unblob(b)),
                _ => None,
            };
            let flags = raw.map_or(0, |_| HAS_RAW)
                | if r.get::<_, bool>(2)? { DELETED } else { 0 }
                | if r.get::<_, bool>(3)? { NEEDS_DATA } else { 0 }
                | if r.get::<_, bool>(4)? { PENDING } else { 0 };
            let raw = raw.unwrap_or(0);
            out.push(Slot {
                rowid: r.get(0)?,
                raw_lo: raw as u64,
                raw_hi: (raw >> 64) as u64,
                flags,
            });
        }
        Ok(out)
    }

    pub fn max_rowid(&self) -> Result<i64> {
        Ok(self
            .0
            .query_row("SELECT coalesce(max(rowid), 0) FROM items", [], |r| {
                r.get(0)
            })?)
    }

    pub fn item_id(&self, rowid: i64) -> Result<String> {
        Ok(self
            .0
            .query_row("SELECT id FROM items WHERE rowid = ?1", [rowid], |r| {
                r.get(0)
            })?)
    }

    pub fn find(&self, feed_id: i64, id: &str) -> Result<Option<Known>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT rowid, hash, deleted, data IS NOT NULL, status = 'pending'
             FROM items WHERE feed_id = ?1 AND id = ?2",
        )?;
        Ok(stmt
            .query_row(params![feed_id, id], |r| {
                Ok(Known {
                    rowid: r.get(0)?,
                    hash: unblob(&r.get::<_, Vec<u8>>(1)?),
                    deleted: r.get(2)?,
                    has_data: r.get(3)?,
                    pending: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// New items, pending, with one statement; returns the first rowid (the
    /// rows get consecutive ones). None when one of them is already in the
    /// feed: nothing is inserted then, and `insert` row by row tells which.
    pub fn insert_many(
        &self,
        feed_id: i64,
        rows: &[(&Item, Hash, Option<&str>)],
        now: i64,
    ) -> Result<Option<i64>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "INSERT INTO items (feed_id, id, key, hash, raw_hash, status, modified_at, data) VALUES {}",
            vec!["(?, ?, ?, ?, ?, 'pending', ?, ?)"; rows.len()].join(", ")
        );
        let mut stmt = self.0.prepare_cached(&sql)?;
        let mut at = 1;
        for (item, raw, data) in rows {
            stmt.raw_bind_parameter(at, feed_id)?;
            stmt.raw_bind_parameter(at + 1, &item.id)?;
            stmt.raw_bind_parameter(at + 2, &item.key)?;
            stmt.raw_bind_parameter(at + 3, &blob(item.hash)[..])?;
            stmt.raw_bind_parameter(at + 4, &blob(*raw)[..])?;
            stmt.raw_bind_parameter(at + 5, now)?;
            stmt.raw_bind_parameter(at + 6, data)?;
            at += 7;
        }
        match stmt.raw_execute() {
            Ok(_) => Ok(Some(self.0.last_insert_rowid() - rows.len() as i64 + 1)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A new version of a known item (or a tombstone come back): pending,
    /// with its attempts reset.
    pub fn change(
        &self,
        rowid: i64,
        item: &Item,
        raw: Hash,
        now: i64,
        data: Option<&str>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE items SET hash = ?2, raw_hash = ?3, deleted = 0, status = 'pending',
                 attempts = 0, error = NULL, next_attempt_at = NULL, modified_at = ?4, data = ?5
             WHERE rowid = ?1",
        )?;
        stmt.execute(params![rowid, blob(item.hash), blob(raw), now, data])?;
        Ok(())
    }

    /// Same content, other bytes (key order, an excluded field): remember the
    /// bytes, and keep stored data current, without making it a change.
    pub fn touch(&self, rowid: i64, raw: Hash, data: Option<&str>) -> Result<()> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE items SET raw_hash = ?2, data = coalesce(?3, data) WHERE rowid = ?1",
        )?;
        stmt.execute(params![rowid, blob(raw), data])?;
        Ok(())
    }

    /// Marks an item deleted; the delete carries its last known hash.
    pub fn tombstone(&self, rowid: i64, now: i64) -> Result<()> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE items SET deleted = 1, raw_hash = NULL, status = 'pending', attempts = 0,
                 error = NULL, next_attempt_at = NULL, modified_at = ?2, data = NULL
             WHERE rowid = ?1",
        )?;
        stmt.execute(params![rowid, now])?;
        Ok(())
    }

    /// `resync --cleanup-feed`: forget every item of the feed.
    pub fn forget_feed(&self, feed_id: i64) -> Result<()> {
        self.0
            .execute("DELETE FROM items WHERE feed_id = ?1", [feed_id])?;
        self.0
            .execute("UPDATE feeds SET raw_seed = NULL WHERE id = ?1", [feed_id])?;
        Ok(())
    }

    /// Puts items back in the send queue with their attempts reset: those
    /// in `statuses`, or only `ids` when given. With `stored_only`, for
    /// resends that read no source, upserts without stored data are left
    /// alone. Returns how many.
    pub fn requeue(
        &self,
        feed_id: i64,
        statuses: &[&str],
        ids: Option<&[String]>,
        stored_only: bool,
    ) -> Result<u64> {
        let statuses = serde_json::to_string(statuses).unwrap_or_default();
        let ids = ids.map(|i| serde_json::to_string(i).unwrap_or_default());
        Ok(self.0.execute(
            "UPDATE items SET status = 'pending', attempts = 0, error = NULL, next_attempt_at = NULL
             WHERE feed_id = ?1 AND (NOT ?4 OR deleted = 1 OR data IS NOT NULL)
               AND status IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))",
            params![feed_id, statuses, ids, stored_only],
        )? as u64)
    }

    /// Counts the wait of every `retry` item whose failure lies ahead of
    /// `now` ([`FAILED_AHEAD`]) from `now`, as if it had failed now; `max`
    /// is `retry_max_secs`. Returns how many.
    pub fn restart_waits(&self, feed_id: i64, now: i64, max: i64) -> Result<u64> {
        let sql = format!(
            "UPDATE items SET
                 next_attempt_at = :now + next_attempt_at - coalesce(failed_at, next_attempt_at - :max),
                 failed_at = :now
             WHERE +feed_id = :feed AND status = 'retry' AND {FAILED_AHEAD}"
        );
        Ok(self.0.execute(
            &sql,
            rusqlite::named_params! {":feed": feed_id, ":now": now, ":max": max},
        )? as u64)
    }

    pub fn set_validators(&self, feed_id: i64, v: &Validators) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET etag = ?2, last_modified = ?3 WHERE id = ?1",
            params![feed_id, v.etag, v.last_modified],
        )?;
        Ok(())
    }

    pub fn set_raw_seed(&self, feed_id: i64, seed: i64) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET raw_seed = ?2 WHERE id = ?1",
            params![feed_id, seed],
        )?;
        Ok(())
    }

    /// Marks a whole acknowledged batch `sent` with one statement. (Under
    /// the run lock nothing else changes items between send and record.)
    pub fn mark_sent(&self, items: &[OutItem], now: i64, keep_data: bool) -> Result<()> {
        let rowids: rusqlite::vtab::array::Array = std::rc::Rc::new(
            items
                .iter()
                .map(|i| rusqlite::types::Value::Integer(i.rowid))
                .collect(),
        );
        let mut stmt = self.0.prepare_cached(
            "UPDATE items SET status = 'sent', sent_at = ?2, attempts = 0, error = NULL,
                 next_attempt_at = NULL, data = CASE WHEN ?3 THEN data END
             WHERE rowid IN rarray(?1)",
        )?;
        stmt.execute(params![rowids, now, keep_data])?;
        Ok(())
    }

    /// Marks `sent` every pending item of a feed with a rowid in
    /// `first..=last`: the same as `mark_sent` when the batch is all of
    /// them, and a sequential pass instead of a seek per row.
    pub fn mark_range_sent(
        &self,
        feed_id: i64,
        (first, last): (i64, i64),
        now: i64,
        keep_data: bool,
    ) -> Result<()> {
        // A pending row has no attempts, error or next attempt (every way
        // into `pending` resets them), so only these columns change; the
        // fewer the cheaper, at a million rows.
        let sql = if keep_data {
            "UPDATE items SET status = 'sent', sent_at = ?4
             WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 'pending'"
        } else {
            "UPDATE items SET status = 'sent', sent_at = ?4, data = NULL
             WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 'pending'"
        };
        let mut stmt = self.0.prepare_cached(sql)?;
        stmt.execute(params![first, last, feed_id, now])?;
        Ok(())
    }

    /// Records a delivery attempt's outcome for one item, if the item is
    /// still the version that was sent.
    pub fn record(
        &self,
        item: &OutItem,
        outcome: &Outcome<'_>,
        now: i64,
        keep_data: bool,
    ) -> Result<()> {
        let hash = blob(item.hash);
        match outcome {
            Outcome::Sent => {
                let mut stmt = self.0.prepare_cached(
                    "UPDATE items SET status = 'sent', sent_at = ?3, attempts = 0, error = NULL,
                         next_attempt_at = NULL, data = CASE WHEN ?4 THEN data END
                     WHERE rowid = ?1 AND hash = ?2",
                )?;
                stmt.execute(params![item.rowid, hash, now, keep_data])?;
            }
            Outcome::Retry {
                error,
                next_attempt_at,
            } => {
                // `retry` reads no source, so the data it will resend is kept.
                let mut stmt = self.0.prepare_cached(
                    "UPDATE items SET status = 'retry', attempts = attempts + 1, error = ?3,
                         next_attempt_at = ?4, failed_at = ?6, data = coalesce(data, ?5)
                     WHERE rowid = ?1 AND hash = ?2",
                )?;
                let data = item.data.as_deref().map(String::from_utf8_lossy);
                stmt.execute(params![
                    item.rowid,
                    hash,
                    clip(error),
                    next_attempt_at,
                    data,
                    now
                ])?;
            }
            Outcome::Failed { error } => {
                let mut stmt = self.0.prepare_cached(
                    "UPDATE items SET status = 'failed', attempts = attempts + 1, error = ?3,
                         next_attempt_at = NULL
                     WHERE rowid = ?1 AND hash = ?2",
                )?;
                stmt.execute(params![item.rowid, hash, clip(error)])?;
            }
        }
        Ok(())
    }
}

/// Error texts are kept to 1 KB, cut at a character boundary.
pub fn clip(s: &str) -> &str {
    if s.len() <= 1024 {
        return s;
    }
    let mut end = 1024;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A connection that only reads (`query_only`): sharing the WAL index on
/// disk, or (`private`) holding the file with the index in memory.
///
/// The descriptor is read-write all the same: a read-only one could not
/// take the exclusive lock, nor remove at close the `-wal` and `-shm` that
/// opening created, which would then stay beside the state file after
/// every `status`.
fn reader(path: &Path, private: bool) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if private {
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE")?;
    }
    conn.execute_batch("PRAGMA query_only = ON")?;
    rusqlite::vtab::array::load_module(&conn)?;
    // The WAL index is set up by the first read, not by the open.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// Whether SQLite failed on the file system (I/O, a full disk, a file it
/// could not create) rather than on the database.
fn io_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::CannotOpen)
    )
}

fn corrupt(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// "the filesystem holding … is full (N KB free)" when the folder of
/// `path` has less than 1 MiB left: the reason behind SQLite's bare
/// "disk I/O error" on a full disk.
pub fn full_disk(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut fs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer statvfs fills on success.
    if unsafe { libc::statvfs(c.as_ptr(), fs.as_mut_ptr()) } != 0 {
        return None;
    }
    let fs = unsafe { fs.assume_init() };
    // The field types differ between platforms.
    #[allow(clippy::unnecessary_cast)]
    let free = fs.f_bavail as u64 * fs.f_frsize as u64;
    (free < 1 << 20).then(|| {
        format!(
            "the filesystem holding {} is full ({} KB free)",
            dir.display(),
            free / 1024
        )
    })
}

/// The run lock: an advisory lock on `<state>.lock`, held for the whole run.
/// The kernel drops it when the process dies, so a killed run frees it.
/// The holder writes its pid and start time into the file, so that
/// `doctor` can name a run that holds it too long.
pub struct RunLock {
    _file: File,
}

/// Who holds the run lock, as the holder wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// When it took the lock (unix seconds, by `clock`).
    pub since: i64,
}

fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn try_lock(state: &Path) -> Result<File> {
    let path = lock_path(state);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::State(format!("lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked(path.display().to_string())),
        Err(TryLockError::Error(e)) => {
            Err(Error::State(format!("lock file {}: {e}", path.display())))
        }
    }
}

/// Takes the run lock, or fails with [`Error::Locked`] at once.
pub fn lock(state: &Path) -> Result<RunLock> {
    use std::os::unix::fs::FileExt;
    let file = try_lock(state)?;
    // Only a hint for doctor: a full disk must not stop the run here.
    let record = format!("{} {}\n", std::process::id(), crate::clock::now_secs());
    let _ = file
        .set_len(0)
        .and_then(|_| file.write_all_at(record.as_bytes(), 0));
    Ok(RunLock { _file: file })
}

/// Whether the run lock is free, taking and releasing it (and writing
/// nothing) when it is.
pub fn probe_lock(state: &Path) -> Result<()> {
    try_lock(state).map(drop)
}

/// The holder the lock file names, if that process is alive. (Only
/// meaningful while the lock is held: a finished run's record stays
/// behind, and a holder that could not write its own leaves the last.)
pub fn lock_holder(state: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(lock_path(state)).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let since = words.next()?.parse().ok()?;
    alive(pid).then_some(Holder { pid, since })
}

/// Whether a process with this pid exists (one of another user counts).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks without sending anything.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

// ---------------------------------------------------------------------------
// Backups and checks (`backup`, `doctor`): kept apart from the sync path.

/// The meta row a copy made by `backup` carries: when it was taken. A run
/// that finds it knows the target may hold newer versions than this file
/// remembers, and resends everything once (see `app`).
pub const BACKUP_TAKEN_AT: &str = "backup_taken_at";

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

impl State {
    /// Opens an existing state file only to look at it or copy it: nothing
    /// is created or migrated, and no run lock is needed.
    pub fn open_existing(path: &Path) -> Result<State> {
        let fail = |what: &dyn std::fmt::Display| {
            Error::State(format!("state file {}: {what}", path.display()))
        };
        if path.is_dir() {
            return Err(fail(&"is a folder, not a file"));
        }
        if !path.exists() {
            return Err(fail(&"does not exist"));
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| fail(&e))?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The schema version the file is at (`PRAGMA user_version`).
    pub fn user_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// `PRAGMA quick_check`: empty when the file is sound, else its findings.
    pub fn quick_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let found: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(found.into_iter().filter(|l| l != "ok").collect())
    }

    /// Whether this process could write the file at `path`: takes SQLite's
    /// write lock on a connection of its own and lets it go at once,
    /// changing nothing. (Its own, because the state a look opened is
    /// read-only.)
    pub fn check_writable(path: &Path) -> rusqlite::Result<()> {
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).and_then(
            |conn| {
                // A run may hold the write lock for a whole collect: do not
                // wait long.
                conn.busy_timeout(std::time::Duration::from_secs(2))?;
                conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            },
        )
    }

    /// The newest run that has not finished: (job, started_at).
    pub fn unfinished_run(&self) -> Result<Option<(crate::job::Job, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT job, started_at FROM runs WHERE finished_at IS NULL
                 ORDER BY started_at DESC, id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Writes a consistent copy of the state file to `dest` (mode 0600),
    /// marked with [`BACKUP_TAKEN_AT`]. Safe while a run is writing: the
    /// copy is made in one step, under one read transaction, which WAL lets
    /// run beside the writer. The copy appears at `dest` only once complete.
    pub fn backup_to(&self, dest: &Path, taken_at: i64) -> Result<()> {
        let fail = |what: &dyn std::fmt::Display| {
            Error::State(format!("backup to {}: {what}", dest.display()))
        };
        let name = dest
            .file_name()
            .ok_or_else(|| fail(&"names no file"))?
            .to_string_lossy()
            .into_owned();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        remove_stale_temps(dest, &name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(&e))?;
        let result = (|| -> Result<()> {
            let mut copy = Connection::open(&tmp)?;
            {
                let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
                // -1: every page in one step. Smaller steps would restart
                // whenever the run commits a batch, and might never finish.
                let mut tries = 0;
                loop {
                    match backup.step(-1)? {
                        rusqlite::backup::StepResult::Done => break,
                        _ if tries >= 600 => {
                            return Err(Error::State(
                                "the state file stayed busy for a minute".into(),
                            ));
                        }
                        _ => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                }
            }
            copy.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![BACKUP_TAKEN_AT, taken_at.to_string()],
            )?;
            let problems: Vec<String> = copy
                .prepare("PRAGMA quick_check")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?;
            if problems != ["ok"] {
                return Err(Error::State(format!(
                    "the copy failed its check: {}",
                    problems.join("; ")
                )));
            }
            // Closing checkpoints the copy's WAL into the file and removes it.
            copy.close().map_err(|(_, e)| e)?;
            let io = |e: std::io::Error| Error::State(e.to_string());
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, dest).map_err(io)?;
            if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            for ext in ["-wal", "-shm", "-journal"] {
                let mut p = tmp.clone().into_os_string();
                p.push(ext);
                let _ = std::fs::remove_file(p);
            }
        }
        result.map_err(|e| match e {
            Error::State(m) => fail(&m),
            Error::Sqlite(e) => fail(&e),
            e => e,
        })
    }
}

/// Removes what killed backups to `dest` left: the temp copy `.NAME.tmp-PID`
/// (as big as the state file) and SQLite's `-journal`/`-wal`/`-shm` beside
/// it, for every PID that is gone — or is this process, whose name the
/// copy is about to take (a hot journal left under it would be rolled
/// into the new copy). A backup still running keeps its files.
fn remove_stale_temps(dest: &Path, name: &str) {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = ["-journal", "-wal", "-shm"]
            .iter()
            .find_map(|ext| rest.strip_suffix(ext))
            .unwrap_or(rest);
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if (pid == std::process::id() || !alive(pid))
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            log::warn!(
                "cannot remove {}, left by a killed backup: {e}",
                entry.path().display()
            );
        }
    }
}

impl State {
    /// Puts every delivered tombstone back in the queue: after a restore,
    /// an item deleted, re-created and deleted again since the backup may
    /// be at the target while this file says its deletion was delivered.
    pub fn requeue_tombstones(&self) -> Result<u64> {
        Ok(self.conn.execute(
            "UPDATE items SET status = 'pending', attempts = 0, error = NULL,
                 next_attempt_at = NULL
             WHERE deleted = 1 AND status = 'sent'",
            [],
        )? as u64)
    }

    pub fn clear_meta(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE name = ?1", [name])?;
        Ok(())
    }
}
