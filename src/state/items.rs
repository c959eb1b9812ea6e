//! Items: every write to them (new, changed, touched, deleted, requeued,
//! sent, failed) and the reads that the diff and `items` make of them.

use rusqlite::{OptionalExtension, params};

use super::{ItemStatus, OutItem, State, Tx, UNSENT, blob, unblob};
use crate::error::{Result, clip};
use crate::record::{Hash, Item};

impl State {
    /// The items of a feed that `filter` picks, in id order, for `items`.
    /// A row still waiting for its first acknowledgement (see
    /// `unconfirmed`) shows as the `pending` it is. A status filter reads
    /// the unsent rows' index, not the table.
    pub fn list_items(&self, feed_id: i64, filter: &ItemFilter) -> Result<Vec<ItemRow>> {
        let unconfirmed = super::unconfirmed::not_yet_acknowledged("?1");
        let columns = format!(
            "id, CASE WHEN {unconfirmed} THEN 1 /* pending */ ELSE status END AS shown,
             deleted, attempts, error, modified_at, sent_at, next_attempt_at"
        );
        let sql = match filter.status {
            None => format!(
                "SELECT {columns} FROM items WHERE feed_id = ?1 AND ?2 IS NULL
                   AND (?3 IS NULL OR id = ?3) ORDER BY id LIMIT ?4"
            ),
            // Sent: every row but those not yet acknowledged.
            Some(ItemStatus::Sent) => format!(
                "SELECT * FROM (SELECT {columns} FROM items WHERE feed_id = ?1
                   AND status = 0 /* sent */ AND (?3 IS NULL OR id = ?3))
                 WHERE shown = ?2 ORDER BY id LIMIT ?4"
            ),
            Some(_) => format!(
                "SELECT * FROM (
                     SELECT {columns} FROM items WHERE feed_id = ?1 AND {UNSENT} AND status = ?2
                       AND (?3 IS NULL OR id = ?3)
                     UNION ALL
                     SELECT {columns} FROM items WHERE ?2 = 1 /* pending */ AND {unconfirmed}
                       AND feed_id = ?1 AND (?3 IS NULL OR id = ?3))
                 ORDER BY id LIMIT ?4"
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            feed_id,
            filter.status,
            filter.id,
            filter.limit as i64
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let status = ItemStatus::from_sql(r.get_ref(1)?)?;
            out.push(ItemRow {
                id: r.get(0)?,
                status,
                deleted: r.get(2)?,
                attempts: r.get(3)?,
                error: r.get(4)?,
                modified_at: r.get(5)?,
                sent_at: r
                    .get::<_, Option<i64>>(6)?
                    .filter(|_| status == ItemStatus::Sent),
                next_attempt_at: r.get(7)?,
            });
        }
        Ok(out)
    }

    /// Drops tombstones delivered before `before`; returns how many.
    pub fn drop_tombstones(&mut self, feed_id: i64, before: i64) -> Result<u64> {
        let tx = self.write()?;
        let n = tx.0.execute(
            "DELETE FROM items WHERE feed_id = ?1 AND deleted = 1 AND status = 0 /* sent */
               AND sent_at < ?2",
            params![feed_id, before],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Puts every delivered tombstone back in the queue: after a restore,
    /// an item deleted, re-created and deleted again since the backup may
    /// be at the target while this file says its deletion was delivered.
    pub fn requeue_tombstones(&self) -> Result<u64> {
        Ok(self.conn.execute(
            "UPDATE items SET status = 1 /* pending */, attempts = 0, error = NULL,
                 next_attempt_at = NULL
             WHERE deleted = 1 AND status = 0 /* sent */",
            [],
        )? as u64)
    }
}

impl Tx<'_> {
    /// Every item of a feed in rowid order, with its raw hash. A million
    /// rows are read here on every collect, so a large table is read in
    /// parts by as many threads as there are cores, each on a connection
    /// of its own, when this transaction has not written yet (so those
    /// connections see what it sees: it holds the write lock, nothing else
    /// can have changed the file since it began).
    pub fn slots(&self, feed_id: i64) -> Result<Slots> {
        let max = self.max_rowid()?;
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let path = self.0.path().filter(|p| !p.is_empty());
        let (Some(path), true) = (path, self.0.total_changes() == self.1 && max >= 100_000) else {
            return read_slots(&self.0, feed_id, (1, max));
        };
        let path = std::path::Path::new(path);
        let step = max / parts + 1;
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..parts)
                .map(|k| {
                    let range = (k * step + 1, ((k + 1) * step).min(max));
                    scope.spawn(move || {
                        let conn = super::reader_for_slots(path)?;
                        read_slots(&conn, feed_id, range)
                    })
                })
                .collect();
            let mut all = Slots::default();
            for part in parts {
                let part = part.join().expect("a slot reader panicked")?;
                all.rowids.extend(part.rowids);
                all.raws.extend(part.raws);
                all.flags.extend(part.flags);
            }
            Ok(all)
        })
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
            "SELECT rowid, hash, deleted, data IS NOT NULL, status = 1 /* pending */
             FROM items WHERE feed_id = ?1 AND id = ?2",
        )?;
        Ok(stmt.query_row(params![feed_id, id], known).optional()?)
    }

    /// What the state knows of the item `id` of a feed if it is the row
    /// at `rowid` (else None; `find` looks it up by id).
    pub fn find_at(&self, rowid: i64, feed_id: i64, id: &str) -> Result<Option<Known>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT rowid, hash, deleted, data IS NOT NULL, status = 1 /* pending */
             FROM items WHERE rowid = ?1 AND feed_id = ?2 AND id = ?3",
        )?;
        Ok(stmt
            .query_row(params![rowid, feed_id, id], known)
            .optional()?)
    }

    /// New items with one statement, `pending`, or `sent` for a delivery
    /// that follows at once (see `unconfirmed`); returns the first rowid
    /// (the rows get consecutive ones). None when one of them is already in
    /// the feed: nothing is inserted then, and `insert_many` row by row
    /// tells which. The key is left out where the id gives it back
    /// (`Tx::use_key_field` has set the feed's field). The feed's counts
    /// grow here, in the same transaction: a trigger per row would cost a
    /// first sync as much again.
    pub fn insert_many(
        &self,
        feed_id: i64,
        rows: &[(&Item, Hash, Option<&str>)],
        status: ItemStatus,
        now: i64,
    ) -> Result<Option<i64>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "INSERT INTO items (feed_id, id, status, raw_hash, hash, modified_at, sent_at, key, data)
             VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ")
        );
        let sent_at = (status == ItemStatus::Sent).then_some(now);
        let mut stmt = self.0.prepare_cached(&sql)?;
        let mut at = 1;
        for (item, raw, data) in rows {
            stmt.raw_bind_parameter(at, feed_id)?;
            stmt.raw_bind_parameter(at + 1, &item.id)?;
            stmt.raw_bind_parameter(at + 2, status)?;
            stmt.raw_bind_parameter(at + 3, &blob(*raw)[..])?;
            stmt.raw_bind_parameter(at + 4, &blob(item.hash)[..])?;
            stmt.raw_bind_parameter(at + 5, now)?;
            stmt.raw_bind_parameter(at + 6, sent_at)?;
            stmt.raw_bind_parameter(at + 7, item.key.as_deref())?;
            stmt.raw_bind_parameter(at + 8, data)?;
            at += 9;
        }
        match stmt.raw_execute() {
            Ok(_) => {
                self.count_new(feed_id, status, rows.len())?;
                Ok(Some(self.0.last_insert_rowid() - rows.len() as i64 + 1))
            }
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
            "UPDATE items SET hash = ?2, raw_hash = ?3, deleted = 0, status = 1 /* pending */,
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
            "UPDATE items SET deleted = 1, raw_hash = NULL, status = 1 /* pending */, attempts = 0,
                 error = NULL, next_attempt_at = NULL, modified_at = ?2, data = NULL
             WHERE rowid = ?1",
        )?;
        stmt.execute(params![rowid, now])?;
        Ok(())
    }

    /// Puts items back in the send queue with their attempts reset: those
    /// in `statuses`, or only `ids` when given. With `stored_only`, for
    /// resends that read no source, upserts without stored data are left
    /// alone. Returns how many.
    pub fn requeue(
        &self,
        feed_id: i64,
        statuses: &[ItemStatus],
        ids: Option<&[String]>,
        stored_only: bool,
    ) -> Result<u64> {
        let statuses: Vec<i64> = statuses.iter().map(|s| s.code()).collect();
        let statuses = serde_json::to_string(&statuses).unwrap_or_default();
        let ids = ids.map(|i| serde_json::to_string(i).unwrap_or_default());
        Ok(self.0.execute(
            "UPDATE items SET status = 1 /* pending */, attempts = 0, error = NULL, next_attempt_at = NULL
             WHERE feed_id = ?1 AND (NOT ?4 OR deleted = 1 OR data IS NOT NULL)
               AND status IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))",
            params![feed_id, statuses, ids, stored_only],
        )? as u64)
    }

    /// Marks a whole acknowledged batch `sent` with one statement. (Under
    /// the run lock nothing else changes items between send and record.)
    /// The feed's counter of items sent grows by as many.
    pub fn mark_sent(&self, items: &[OutItem], now: i64, keep_data: bool) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let rowids: rusqlite::vtab::array::Array = std::rc::Rc::new(
            items
                .iter()
                .map(|i| rusqlite::types::Value::Integer(i.rowid))
                .collect(),
        );
        let mut stmt = self.0.prepare_cached(
            "UPDATE items SET status = 0 /* sent */, sent_at = ?2, attempts = 0, error = NULL,
                 next_attempt_at = NULL, data = CASE WHEN ?3 THEN data END
             WHERE rowid IN rarray(?1)",
        )?;
        let n = stmt.execute(params![rowids, now, keep_data])?;
        self.count_sent_by_rowid(first.rowid, n)
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
            "UPDATE items SET status = 0 /* sent */, sent_at = ?4
             WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 1 /* pending */"
        } else {
            "UPDATE items SET status = 0 /* sent */, sent_at = ?4, data = NULL
             WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 1 /* pending */"
        };
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.execute(params![first, last, feed_id, now])?;
        self.count_acknowledged(feed_id, n)
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
                    "UPDATE items SET status = 0 /* sent */, sent_at = ?3, attempts = 0, error = NULL,
                         next_attempt_at = NULL, data = CASE WHEN ?4 THEN data END
                     WHERE rowid = ?1 AND hash = ?2",
                )?;
                let n = stmt.execute(params![item.rowid, hash, now, keep_data])?;
                self.count_sent_by_rowid(item.rowid, n)?;
            }
            Outcome::Retry {
                error,
                next_attempt_at,
            } => {
                // `retry` reads no source, so the data it will resend is kept.
                let mut stmt = self.0.prepare_cached(
                    "UPDATE items SET status = 2 /* retry */, attempts = attempts + 1, error = ?3,
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
                    "UPDATE items SET status = 3 /* failed */, attempts = attempts + 1, error = ?3,
                         next_attempt_at = NULL
                     WHERE rowid = ?1 AND hash = ?2",
                )?;
                stmt.execute(params![item.rowid, hash, clip(error)])?;
            }
        }
        Ok(())
    }
}

/// The slots of a feed's rows with rowids in `first..=last`, in rowid
/// order, each row taken apart by hand. (`+feed_id` keeps SQLite on the
/// table itself, in rowid order, instead of the id index and a sort.)
pub(super) fn read_slots(
    conn: &rusqlite::Connection,
    feed_id: i64,
    (first, last): (i64, i64),
) -> Result<Slots> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached(
        "SELECT rowid, raw_hash, deleted, status, data IS NULL
         FROM items WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 ORDER BY rowid",
    )?;
    let mut rows = stmt.query(params![first, last, feed_id])?;
    let mut out = Slots::default();
    while let Some(r) = rows.next()? {
        let raw = match r.get_ref(1)? {
            ValueRef::Blob(b) => Some(unblob(b)),
            _ => None,
        };
        let deleted = !matches!(r.get_ref(2)?, ValueRef::Integer(0));
        let pending = matches!(r.get_ref(3)?, ValueRef::Integer(1));
        let no_data = matches!(r.get_ref(4)?, ValueRef::Integer(1));
        let flags = raw.map_or(0, |_| HAS_RAW)
            | if deleted { DELETED } else { 0 }
            | if pending && no_data && !deleted {
                NEEDS_DATA
            } else {
                0
            }
            | if pending { PENDING } else { 0 };
        out.rowids.push(r.get(0)?);
        out.raws.push(raw.unwrap_or(0));
        out.flags.push(flags);
    }
    Ok(out)
}

fn known(r: &rusqlite::Row<'_>) -> rusqlite::Result<Known> {
    Ok(Known {
        rowid: r.get(0)?,
        hash: unblob(&r.get::<_, Vec<u8>>(1)?),
        deleted: r.get(2)?,
        has_data: r.get(3)?,
        pending: r.get(4)?,
    })
}

/// Which items `items` lists.
pub struct ItemFilter {
    pub status: Option<ItemStatus>,
    pub id: Option<String>,
    pub limit: usize,
}

/// One item as `items` shows it.
#[derive(Debug)]
pub struct ItemRow {
    pub id: String,
    pub status: ItemStatus,
    pub deleted: bool,
    pub attempts: u32,
    pub error: Option<String>,
    pub modified_at: i64,
    pub sent_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
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

/// A feed's items as the diff first sees them: only what finding changes
/// needs, in rowid order. There is one per item in memory (25 bytes: at
/// ten million items that is what the diff holds), so they are kept as
/// three arrays rather than an array of padded structs.
#[derive(Debug, Default)]
pub struct Slots {
    rowids: Vec<i64>,
    raws: Vec<Hash>,
    flags: Vec<u8>,
}

const HAS_RAW: u8 = 1;
const DELETED: u8 = 2;
const NEEDS_DATA: u8 = 4;
const PENDING: u8 = 8;

impl Slots {
    pub fn len(&self) -> usize {
        self.rowids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rowids.is_empty()
    }

    pub fn rowid(&self, slot: usize) -> i64 {
        self.rowids[slot]
    }

    /// The slot of the item at `rowid`.
    pub fn find(&self, rowid: i64) -> Option<usize> {
        self.rowids.binary_search(&rowid).ok()
    }

    pub fn raw_hash(&self, slot: usize) -> Option<Hash> {
        (self.flags[slot] & HAS_RAW != 0).then(|| self.raws[slot])
    }

    pub fn deleted(&self, slot: usize) -> bool {
        self.flags[slot] & DELETED != 0
    }

    /// Pending, but its data is neither stored nor (yet) spooled: the
    /// collect must pass the record's data along again.
    pub fn needs_data(&self, slot: usize) -> bool {
        self.flags[slot] & NEEDS_DATA != 0
    }

    pub fn pending(&self, slot: usize) -> bool {
        self.flags[slot] & PENDING != 0
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
