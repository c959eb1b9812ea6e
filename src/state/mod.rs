//! The state file: one SQLite database that is the whole memory of feedsync.
//! This module owns its schema, its migrations and every SQL statement, so
//! the guarantees about it (mode 0600, no `-wal` left behind, one writer at a
//! time) are kept in one place. Here: the handle, the ways to open the file
//! and the write transaction; the statements live by topic in the
//! submodules.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::record::Hash;

mod backup;
mod counts;
mod feeds;
mod items;
mod lock;
mod queue;
mod runs;
mod schema;
mod status;
mod tasks;
mod unconfirmed;

pub use crate::error::clip;
pub use backup::BACKUP_TAKEN_AT;
pub use counts::{Counts, FeedMetrics, Gauges};
pub use feeds::FeedInfo;
pub use items::{ItemFilter, ItemRow, Known, Outcome, Slots};
pub use lock::{Holder, RunLock, lock, lock_holder, probe_lock};
pub use queue::{Backlog, Data, OutItem, Queue, queue_ids, queue_size, retry_backlog};
pub use runs::RunRow;
pub use schema::schema_version;
pub use status::ItemStatus;
pub use tasks::{Task, TaskLog};

/// The open state file: one connection, and the path it was opened from.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    /// Opens (creating with mode 0600 if needed) and migrates the state file.
    pub fn open(path: &Path) -> Result<State> {
        let fail = |what: &dyn std::fmt::Display| file_error(path, what);
        if !path.exists() {
            std::fs::create_dir_all(crate::paths::parent_dir(path)).map_err(|e| fail(&e))?;
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
        let fail = |what: &dyn std::fmt::Display| file_error(path, what);
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
        let version = state.user_version()?;
        if version == 0 {
            // Created but never set up (a first run killed at once).
            return State::empty(path);
        }
        if version < schema_version() {
            // A file from an older feedsync: brought up to date once, here
            // as by any job, since this build reads only its own schema.
            drop(state);
            State::open(path).map_err(|e| {
                Error::State(format!(
                    "{e} (the file is at schema {version} and must be upgraded to {} before it can be read)",
                    schema_version()
                ))
            })?;
            return State::open_read_only(path);
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

    /// Opens an existing state file only to look at it or copy it: nothing
    /// is created or migrated, and no run lock is needed.
    pub fn open_existing(path: &Path) -> Result<State> {
        let fail = |what: &dyn std::fmt::Display| file_error(path, what);
        if path.is_dir() {
            return Err(fail(&"is a folder, not a file"));
        }
        if !path.exists() {
            return Err(fail(&"does not exist"));
        }
        let conn = connect(path).map_err(|e| fail(&e))?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at_start = tx.total_changes();
        Ok(Tx(tx, at_start))
    }

    /// The database's size (pages × page size).
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// `PRAGMA quick_check`: empty when the file is sound, else its findings.
    pub fn quick_check(&self) -> Result<Vec<String>> {
        quick_check(&self.conn)
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

/// A write transaction; every change to items goes through here. It
/// remembers the connection's count of changed rows when it began, to
/// tell whether it has written yet.
pub struct Tx<'c>(Transaction<'c>, u64);

/// The condition of the `items_unsent` index (schema 5), which a query
/// must state in these very words for SQLite to use the index.
const UNSENT: &str = "status <> 0";

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
}

/// An error about the state file at `path`, naming it.
fn file_error(path: &Path, what: &dyn std::fmt::Display) -> Error {
    Error::State(format!("state file {}: {what}", path.display()))
}

/// The findings of `PRAGMA quick_check` on `conn`, without its "ok".
fn quick_check(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let found: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
    Ok(found.into_iter().filter(|l| l != "ok").collect())
}

/// A connection to the existing file at `path` (creating nothing), that
/// waits up to 10 s for a writer.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// A connection that only reads (`query_only`): sharing the WAL index on
/// disk, or (`private`) holding the file with the index in memory.
///
/// The descriptor is read-write all the same: a read-only one could not
/// take the exclusive lock, nor remove at close the `-wal` and `-shm` that
/// opening created, which would then stay beside the state file after
/// every `status`.
fn reader(path: &Path, private: bool) -> rusqlite::Result<Connection> {
    let conn = connect(path)?;
    if private {
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE")?;
    }
    conn.execute_batch("PRAGMA query_only = ON")?;
    rusqlite::vtab::array::load_module(&conn)?;
    // The WAL index is set up by the first read, not by the open.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// A connection of its own for a slot reader thread (see `Tx::slots`).
fn reader_for_slots(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
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
    let dir = crate::paths::parent_dir(path);
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

#[cfg(test)]
mod tests;
