//! The send queue: which items a delivery takes (pending, or `retry` ones
//! whose time has come), read in rowid order, and what the retry backlog
//! holds, including waits that a clock set back would stretch.

use rusqlite::{Connection, params};

use super::{ItemStatus, State, Tx, UNSENT, unblob};
use crate::error::Result;
use crate::record::Hash;

impl State {
    /// The pending items among `rowids` (ascending), in rowid order,
    /// those not yet acknowledged included (see `unconfirmed`). A dense
    /// run is read as a range, sequentially, instead of row by row.
    pub fn pending_items(&self, feed_id: i64, rowids: &[i64]) -> Result<Vec<OutItem>> {
        let (Some(&first), Some(&last)) = (rowids.first(), rowids.last()) else {
            return Ok(Vec::new());
        };
        if last - first < 2 * rowids.len() as i64 {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {OUT_ITEM} FROM items
                 WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND {}
                 ORDER BY rowid",
                pending()
            ))?;
            let rows = stmt.query_map(params![first, last, feed_id], out_item)?;
            let mut items: Vec<OutItem> = rows.collect::<rusqlite::Result<_>>()?;
            items.retain(|i| rowids.binary_search(&i.rowid).is_ok());
            return fill_keys(&self.conn, feed_id, items);
        }
        let list: rusqlite::vtab::array::Array = std::rc::Rc::new(
            rowids
                .iter()
                .map(|&r| rusqlite::types::Value::Integer(r))
                .collect(),
        );
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUT_ITEM} FROM items
             WHERE rowid IN rarray(?1) AND +feed_id = ?3 AND {} ORDER BY rowid",
            pending()
        ))?;
        let rows = stmt.query_map(params![list, rusqlite::types::Null, feed_id], out_item)?;
        fill_keys(&self.conn, feed_id, rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One batch of the send queue: items in `status` (and, for `retry`,
    /// due by `due`), after `after` in rowid order.
    pub fn queue(&self, q: &Queue, after: i64, limit: usize) -> Result<Vec<OutItem>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUT_ITEM} FROM items
             WHERE {QUEUE_WHERE} AND rowid > ?4 ORDER BY rowid LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![q.feed_id, q.status, q.due, after, limit as i64],
            out_item,
        )?;
        fill_keys(
            &self.conn,
            q.feed_id,
            rows.collect::<rusqlite::Result<_>>()?,
        )
    }
}

impl Tx<'_> {
    /// Counts the wait of every `retry` item whose failure lies ahead of
    /// `now` ([`FAILED_AHEAD`]) from `now`, as if it had failed now; `max`
    /// is `retry_max_secs`. Returns how many.
    pub fn restart_waits(&self, feed_id: i64, now: i64, max: i64) -> Result<u64> {
        let sql = format!(
            "UPDATE items SET
                 next_attempt_at = :now + next_attempt_at - coalesce(failed_at, next_attempt_at - :max),
                 failed_at = :now
             WHERE feed_id = :feed AND {UNSENT} AND status = 2 /* retry */ AND {FAILED_AHEAD}"
        );
        Ok(self.0.execute(
            &sql,
            rusqlite::named_params! {":feed": feed_id, ":now": now, ":max": max},
        )? as u64)
    }
}

/// Queues are walked in rowid order through the unsent rows' index (its
/// entries are ordered by rowid within a status), so a queue costs what it
/// holds, not what the table holds. Jobs other than the delivery that
/// follows a collect run after `Tx::reopen_unconfirmed`, so a queue is
/// made of its status alone.
const QUEUE_WHERE: &str = "feed_id = ?1 AND status <> 0 AND status = ?2
    AND (?3 IS NULL OR next_attempt_at IS NULL OR next_attempt_at <= ?3)";

/// The rows a delivery after a collect takes (`?3` is the feed): pending
/// ones, and those not yet acknowledged (see `unconfirmed`).
fn pending() -> String {
    format!(
        "(status = 1 /* pending */ OR {})",
        super::unconfirmed::not_yet_acknowledged("?3")
    )
}

/// What [`out_item`] reads.
pub(super) const OUT_ITEM: &str = "rowid, id, key, hash, deleted, data, attempts";

/// An item as a query of [`OUT_ITEM`] reads it; one stored without its key
/// gets it from [`fill_keys`].
pub(super) fn out_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutItem> {
    Ok(OutItem {
        rowid: r.get(0)?,
        id: r.get(1)?,
        key: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        hash: match r.get_ref(3)? {
            rusqlite::types::ValueRef::Blob(b) => unblob(b),
            _ => 0,
        },
        deleted: r.get(4)?,
        data: r
            .get::<_, Option<String>>(5)?
            .map(|d| Data::from(d.into_bytes())),
        attempts: r.get(6)?,
    })
}

/// Gives items of `feed_id` stored without a key theirs: the id's text
/// under the feed's key field (see `Tx::use_key_field`), written as the
/// record's key was.
pub(super) fn fill_keys(
    conn: &Connection,
    feed_id: i64,
    mut items: Vec<OutItem>,
) -> Result<Vec<OutItem>> {
    if items.iter().all(|i| !i.key.is_empty()) {
        return Ok(items);
    }
    let field: Option<String> = conn.query_row(
        "SELECT key_field FROM feeds WHERE id = ?1",
        [feed_id],
        |r| r.get(0),
    )?;
    let field = field.ok_or_else(|| {
        crate::error::Error::State(format!(
            "state file: feed {feed_id} has items without a key and no key field"
        ))
    })?;
    // `{"field":"id"}` as serde_json writes a one-entry object, without
    // building one per item (a first sync reads a million of them).
    let mut prefix = String::from("{");
    prefix.push_str(&serde_json::Value::String(field).to_string());
    prefix.push(':');
    for item in items.iter_mut().filter(|i| i.key.is_empty()) {
        let mut key = Vec::with_capacity(prefix.len() + item.id.len() + 3);
        key.extend_from_slice(prefix.as_bytes());
        serde_json::to_writer(&mut key, &item.id).expect("writing to memory");
        key.push(b'}');
        item.key = String::from_utf8(key).expect("JSON text is UTF-8");
    }
    Ok(items)
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
               FROM items WHERE feed_id = :feed AND {UNSENT} AND status = 2 /* retry */)"
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
pub fn queue_size(conn: &Connection, q: &Queue) -> Result<(u64, u64)> {
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
pub fn queue_ids(conn: &Connection, q: &Queue) -> Result<Vec<(String, bool)>> {
    let sql = format!("SELECT id, deleted FROM items WHERE {QUEUE_WHERE} ORDER BY rowid");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![q.feed_id, q.status, q.due], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Which items a send takes.
pub struct Queue {
    pub feed_id: i64,
    pub status: ItemStatus,
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
    pub data: Option<Data>,
    pub attempts: u32,
}

/// An item's data: its bytes in a buffer it may share with the other
/// items of its batch. The spool reads neighbouring records with one call;
/// sharing that buffer spares a copy and an allocation per item, which a
/// first sync of a million items pays a million times.
#[derive(Clone)]
pub struct Data {
    buf: std::sync::Arc<Vec<u8>>,
    at: usize,
    len: usize,
}

impl Data {
    /// The bytes `at..at + len` of `buf`.
    pub fn part(buf: &std::sync::Arc<Vec<u8>>, at: usize, len: usize) -> Data {
        assert!(at + len <= buf.len(), "a part within the buffer");
        Data {
            buf: std::sync::Arc::clone(buf),
            at,
            len,
        }
    }
}

impl From<Vec<u8>> for Data {
    fn from(v: Vec<u8>) -> Data {
        let len = v.len();
        Data {
            buf: std::sync::Arc::new(v),
            at: 0,
            len,
        }
    }
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}
