//! Tasks a target accepted but had not finished when feedsync last looked
//! (a Meilisearch task), remembered until they finish.
//!
//! A service that queues work answers before it has done it, and feedsync
//! must neither count the items as delivered nor queue more work on the
//! same index while that is unfinished (DESIGN.md, "What each answer
//! means"). A run that times out or is killed while it waits leaves the
//! task behind; remembered here, a later run looks it up first and settles
//! its items by its outcome. Each task is remembered with the items it
//! carries, as the versions sent (rowid and hash), so an item changed since
//! is not settled by an older version's outcome.
//!
//! The kind that waits does so on the courier thread, so [`TaskLog`]
//! writes through a connection of its own; the run lock keeps every other
//! process out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::queue::{OUT_ITEM, fill_keys, out_item};
use super::{OutItem, State, connect};
use crate::error::{Error, Result};
use crate::record::{Hash, hash_hex};

/// A remembered task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The service's queue it waits in (its base URL and index).
    pub place: String,
    /// The service's id for it.
    pub uid: u64,
    pub feed_id: i64,
    /// It deletes documents (else it adds or updates them).
    pub deletes: bool,
    /// The items it carries: rowid and the hash of the version sent.
    pub items: Vec<(i64, Hash)>,
}

/// Where a kind records the tasks it waits for: one feed's, in the state
/// file at `path`, through a connection opened on first use.
pub struct TaskLog {
    path: PathBuf,
    feed_id: i64,
    conn: Mutex<Option<Connection>>,
}

impl TaskLog {
    pub fn new(path: &Path, feed_id: i64) -> TaskLog {
        TaskLog {
            path: path.to_path_buf(),
            feed_id,
            conn: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn.is_none() {
            *conn =
                Some(connect(&self.path).map_err(|e| {
                    Error::State(format!("state file {}: {e}", self.path.display()))
                })?);
        }
        f(conn.as_ref().expect("just opened"))
            .map_err(|e| Error::State(format!("state file {}: {e}", self.path.display())))
    }

    /// Remembers a task the service accepted with these items.
    pub fn remember(
        &self,
        place: &str,
        uid: u64,
        deletes: bool,
        items: &[(i64, Hash)],
        now: i64,
    ) -> Result<()> {
        let list: Vec<(i64, String)> = items.iter().map(|&(r, h)| (r, hash_hex(h))).collect();
        let list = serde_json::to_string(&list).expect("serializing to memory");
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO tasks (place, uid, feed_id, deletes, items, enqueued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![place, uid as i64, self.feed_id, deletes, list, now],
            )
        })?;
        Ok(())
    }

    /// Forgets a task that has finished (or that the service no longer knows).
    pub fn forget(&self, place: &str, uid: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM tasks WHERE place = ?1 AND uid = ?2",
                params![place, uid as i64],
            )
        })?;
        Ok(())
    }
}

impl State {
    /// The remembered tasks in `place`, every feed's, oldest first.
    pub fn remembered_tasks(&self, place: &str) -> Result<Vec<Task>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT uid, feed_id, deletes, items FROM tasks WHERE place = ?1
             ORDER BY enqueued_at, uid",
        )?;
        let rows = stmt.query_map(params![place], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (uid, feed_id, deletes, items) = row?;
            let items: Vec<(i64, String)> = serde_json::from_str(&items)
                .map_err(|e| Error::State(format!("state file: remembered task {uid}: {e}")))?;
            out.push(Task {
                place: place.to_string(),
                uid: uid as u64,
                feed_id,
                deletes,
                items: items
                    .into_iter()
                    .map(|(r, h)| (r, Hash::from_str_radix(&h, 16).unwrap_or(0)))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Whether a feed has remembered tasks.
    pub fn has_remembered_tasks(&self, feed_id: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE feed_id = ?1)",
            [feed_id],
            |r| r.get(0),
        )?)
    }

    /// A remembered task's items as they were sent: each still in the
    /// state, with the hash of the version the task carries (so recording
    /// its outcome leaves an item changed since alone).
    pub fn task_items(&self, task: &Task) -> Result<Vec<OutItem>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {OUT_ITEM} FROM items WHERE rowid = ?1"))?;
        let mut out = Vec::with_capacity(task.items.len());
        for &(rowid, hash) in &task.items {
            let mut rows = stmt.query_map([rowid], out_item)?;
            if let Some(item) = rows.next() {
                out.push(OutItem { hash, ..item? });
            }
        }
        fill_keys(&self.conn, task.feed_id, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_remembered_with_the_versions_sent_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let state = State::open(&path).unwrap();
        let feed = state.feed_id("products").unwrap();
        state
            .conn()
            .execute(
                "INSERT INTO items (feed_id, id, key, hash, status, modified_at, data)
                 VALUES (?1, 'A', '{}', zeroblob(16), 1, 0, '{}')",
                [feed],
            )
            .unwrap();
        let rowid = state.conn().last_insert_rowid();
        let log = TaskLog::new(&path, feed);
        let sent: Hash = 0xabc;
        log.remember(
            "http://m/indexes/p",
            7,
            false,
            &[(rowid, sent), (999, 1)],
            0,
        )
        .unwrap();
        let tasks = state.remembered_tasks("http://m/indexes/p").unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].uid, tasks[0].feed_id), (7, feed));
        assert_eq!(tasks[0].items, [(rowid, sent), (999, 1)]);
        assert!(state.remembered_tasks("elsewhere").unwrap().is_empty());
        // A row gone since is left out; the rest has the hash sent.
        let items = state.task_items(&tasks[0]).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].id.as_str(), items[0].hash), ("A", sent));
        log.forget("http://m/indexes/p", 7).unwrap();
        assert!(
            state
                .remembered_tasks("http://m/indexes/p")
                .unwrap()
                .is_empty()
        );
    }
}
