//! How many items each feed has, by deleted flag and status, read in
//! constant time: `status`, `report`, `doctor` and the metrics file must
//! answer at once at ten million items, where counting the rows takes
//! seconds.
//!
//! The counts live in `feed_counts` and change in the very statements that
//! change an item's status or deleted flag: SQLite triggers for updates
//! and deletes (schema 5), and `Tx::insert_many` for new rows. So they are
//! exact after any crash, and no code path can forget them. Rows not yet
//! acknowledged (see `unconfirmed`) are stored as `sent` and counted as
//! the `pending` they are when read.
//!
//! Also here: the counter of items the target acknowledged, for the
//! metrics file (`feed_metrics`, bumped in the transactions that mark
//! items sent).

use rusqlite::{OptionalExtension, params};

use super::{ItemStatus, State, Tx, UNSENT};
use crate::error::{Error, Result};

/// A feed's items counted, for `status` (whose JSON has these names).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub live: u64,
    pub deleted: u64,
    pub pending: u64,
    pub sent: u64,
    pub retry: u64,
    pub failed: u64,
}

/// A feed's gauges: its items counted as `status` counts them, and when
/// its oldest `pending` item changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub counts: Counts,
    /// `modified_at` of the oldest `pending` item; None when none is.
    pub oldest_pending_at: Option<i64>,
}

/// Everything the metrics file says about one feed.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedMetrics {
    pub gauges: Gauges,
    /// Items the target acknowledged since the state file had the counter.
    pub items_sent_total: u64,
    pub last_success_at: Option<i64>,
}

impl State {
    /// A feed's item counts for `status`. Counts that do not add up mean a
    /// row holds a status this build does not know: an error, not a guess.
    pub fn counts(&self, feed_id: i64) -> Result<Counts> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.live, c.deleted, c.pending, c.sent, c.retry, c.failed,
                 coalesce(f.unconfirmed_to - f.unconfirmed_from + 1, 0)
             FROM feed_counts c JOIN feeds f ON f.id = c.feed_id WHERE c.feed_id = ?1",
        )?;
        let row = stmt
            .query_row([feed_id], |r| {
                let n = |i: usize| r.get::<_, i64>(i);
                Ok([n(0)?, n(1)?, n(2)?, n(3)?, n(4)?, n(5)?, n(6)?])
            })
            .optional()?;
        let Some([live, deleted, pending, sent, retry, failed, unconfirmed]) = row else {
            return Ok(Counts::default());
        };
        if pending + sent + retry + failed != live + deleted || unconfirmed > sent {
            return Err(Error::State(format!(
                "state file: feed {feed_id} has items of an unknown status"
            )));
        }
        let n = |v: i64| v.max(0) as u64;
        Ok(Counts {
            live: n(live),
            deleted: n(deleted),
            pending: n(pending + unconfirmed),
            sent: n(sent - unconfirmed),
            retry: n(retry),
            failed: n(failed),
        })
    }

    /// The metrics of the feed called `name` (zeros for a feed that has
    /// never run). The oldest pending change is looked up only when
    /// something is pending, through the unsent rows' index.
    pub fn feed_metrics(&self, name: &str) -> Result<FeedMetrics> {
        let row = self
            .conn
            .query_row(
                "SELECT f.id, coalesce(m.items_sent_total, 0), f.last_success_at
                 FROM feeds f LEFT JOIN feed_metrics m ON m.feed_id = f.id WHERE f.name = ?1",
                [name],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((feed_id, sent, last_success_at)) = row else {
            return Ok(FeedMetrics::default());
        };
        let counts = self.counts(feed_id)?;
        let oldest_pending_at = if counts.pending == 0 {
            None
        } else {
            self.conn.query_row(
                &format!(
                    "SELECT min(t) FROM (
                         SELECT min(modified_at) AS t FROM items
                         WHERE feed_id = ?1 AND {UNSENT} AND status = 1 /* pending */
                         UNION ALL
                         SELECT modified_at FROM items
                         WHERE rowid = (SELECT unconfirmed_from FROM feeds WHERE id = ?1))"
                ),
                [feed_id],
                |r| r.get(0),
            )?
        };
        Ok(FeedMetrics {
            gauges: Gauges {
                counts,
                oldest_pending_at,
            },
            items_sent_total: sent as u64,
            last_success_at,
        })
    }
}

impl Tx<'_> {
    /// `n` new rows of `status` in a feed: the one change to the counts
    /// that no trigger makes (see the module comment).
    pub(super) fn count_new(&self, feed_id: i64, status: ItemStatus, n: usize) -> Result<()> {
        let column = match status {
            ItemStatus::Sent => "sent",
            ItemStatus::Pending => "pending",
            ItemStatus::Retry => "retry",
            ItemStatus::Failed => "failed",
        };
        let mut stmt = self.0.prepare_cached(&format!(
            "UPDATE feed_counts SET live = live + ?2, {column} = {column} + ?2 WHERE feed_id = ?1"
        ))?;
        stmt.execute(params![feed_id, n as i64])?;
        Ok(())
    }

    /// Adds `n` items acknowledged to the counter of the feed whose item
    /// has `rowid` (a batch is one feed's).
    pub(super) fn count_sent_by_rowid(&self, rowid: i64, n: usize) -> Result<()> {
        if n > 0 {
            let mut stmt = self.0.prepare_cached(
                "INSERT INTO feed_metrics (feed_id, items_sent_total)
                 SELECT feed_id, ?2 FROM items WHERE rowid = ?1
                 ON CONFLICT (feed_id) DO UPDATE
                     SET items_sent_total = items_sent_total + excluded.items_sent_total",
            )?;
            stmt.execute(params![rowid, n as i64])?;
        }
        Ok(())
    }

    /// Adds `n` items acknowledged to `feed_id`'s counter.
    pub fn count_acknowledged(&self, feed_id: i64, n: usize) -> Result<()> {
        if n > 0 {
            let mut stmt = self.0.prepare_cached(
                "INSERT INTO feed_metrics (feed_id, items_sent_total) VALUES (?1, ?2)
                 ON CONFLICT (feed_id) DO UPDATE
                     SET items_sent_total = items_sent_total + excluded.items_sent_total",
            )?;
            stmt.execute(params![feed_id, n as i64])?;
        }
        Ok(())
    }
}
