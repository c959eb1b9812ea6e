//! New rows written once. A first sync of a million items used to insert
//! each row as `pending` and rewrite it as `sent` once acknowledged: the
//! whole table twice, and half the time of the sync.
//!
//! Instead, a collect whose delivery follows at once inserts its new rows
//! as `sent` and, in the same transaction, records their rowid range in the
//! feed's row (`unconfirmed_from..=unconfirmed_to`; they are consecutive).
//! Every reader takes a `sent` row in that range for the `pending` it is.
//! The delivery walks the queue in rowid order and settles batches in that
//! order, so acknowledging a batch only moves `unconfirmed_from` past it:
//! one small write per batch, and the rows are never touched again. A row
//! the batch did not acknowledge gets its own status first (`retry`,
//! `failed`, or back to `pending`), which holds whatever the range says.
//!
//! Whatever is left in the range when a delivery ends (a failure stopped
//! it, a shutdown) goes back to plain `pending` rows; after a kill, the
//! next job does that before anything else. So an unacknowledged item is
//! `pending` at every moment, on disk, and the next run delivers it — the
//! rule that leaving new items out of the state until acknowledged broke.
//!
//! Invariant: every row in the range is a `sent` row of that feed that no
//! statement has touched since the collect inserted it.

use rusqlite::{OptionalExtension, params};

use super::Tx;
use crate::error::Result;

/// SQL for "a row not yet acknowledged" of the feed bound as `feed` (a
/// parameter such as `?1`): what every reader counts as `pending`.
pub(super) fn not_yet_acknowledged(feed: &str) -> String {
    format!(
        "(status = 0 /* sent */ AND rowid BETWEEN
            (SELECT unconfirmed_from FROM feeds WHERE id = {feed}) AND
            (SELECT unconfirmed_to FROM feeds WHERE id = {feed}))"
    )
}

impl Tx<'_> {
    /// The feed's rows inserted as `sent` and not yet acknowledged.
    pub fn unconfirmed(&self, feed_id: i64) -> Result<Option<(i64, i64)>> {
        Ok(self
            .0
            .query_row(
                "SELECT unconfirmed_from, unconfirmed_to FROM feeds
                 WHERE id = ?1 AND unconfirmed_from IS NOT NULL",
                [feed_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records that the rows `first..=last`, just inserted as `sent`, are
    /// not acknowledged yet.
    pub fn set_unconfirmed(&self, feed_id: i64, first: i64, last: i64) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET unconfirmed_from = ?2, unconfirmed_to = ?3 WHERE id = ?1",
            params![feed_id, first, last],
        )?;
        Ok(())
    }

    /// The delivery settled `settled` (ascending rowids of one batch: each
    /// acknowledged, or given its own status by this transaction). Rows of
    /// the range before the batch's last one that it does not hold (an
    /// upsert held back for lack of data) go back to `pending`; the range
    /// then starts after the batch.
    pub fn confirm(&self, feed_id: i64, settled: &[i64]) -> Result<()> {
        let Some((from, to)) = self.unconfirmed(feed_id)? else {
            return Ok(());
        };
        let at = settled.partition_point(|&r| r < from);
        let ours = &settled[at..settled.partition_point(|&r| r <= to)];
        let Some(&last) = ours.last() else {
            return Ok(());
        };
        if (last - from + 1) as usize != ours.len() {
            let mut gaps = Vec::new();
            let mut held = ours.iter().peekable();
            for rowid in from..=last {
                if held.next_if_eq(&&rowid).is_none() {
                    gaps.push(rusqlite::types::Value::Integer(rowid));
                }
            }
            self.0.execute(
                "UPDATE items SET status = 1 /* pending */, sent_at = NULL
                 WHERE rowid IN rarray(?1) AND status = 0 /* sent */",
                [std::rc::Rc::new(gaps)],
            )?;
        }
        if last >= to {
            self.clear_unconfirmed(feed_id)
        } else {
            self.set_unconfirmed(feed_id, last + 1, to)
        }
    }

    /// Turns what is left of the range into plain `pending` rows, which
    /// any later job delivers; returns how many.
    pub fn reopen_unconfirmed(&self, feed_id: i64) -> Result<u64> {
        let Some((from, to)) = self.unconfirmed(feed_id)? else {
            return Ok(0);
        };
        let n = self.0.execute(
            "UPDATE items SET status = 1 /* pending */, sent_at = NULL
             WHERE rowid BETWEEN ?1 AND ?2 AND +feed_id = ?3 AND status = 0 /* sent */",
            params![from, to, feed_id],
        )?;
        self.clear_unconfirmed(feed_id)?;
        Ok(n as u64)
    }

    pub(super) fn clear_unconfirmed(&self, feed_id: i64) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET unconfirmed_from = NULL, unconfirmed_to = NULL WHERE id = ?1",
            [feed_id],
        )?;
        Ok(())
    }
}
