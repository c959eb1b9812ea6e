//! What the metrics file reports per feed, kept cheap to read: the
//! counter of items the target acknowledged (bumped in the transactions
//! that mark items sent, so it is exact after any crash), and the gauges
//! (`status` counts and the oldest pending change) cached, both in the
//! `feed_metrics` table.
//!
//! Counting the gauges scans a feed's items, about a second at a million,
//! and a run that changed nothing must not pay that every minute. So the
//! counts are stored once counted, and every write that changes an item's
//! status or deleted flag drops the stored counts in its own transaction
//! (`Tx::statuses_change`): what is stored is always what a count would
//! find, a SIGKILL included, and only a job that changed something pays
//! for a count afterwards.

use rusqlite::{OptionalExtension, params};

use super::{Counts, State, Tx};
use crate::error::{Error, Result};

/// A feed's gauges: its items counted as `status` counts them, and when
/// its oldest `pending` item changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The metrics of the feed called `name` (zeros for a feed that has
    /// never run): from the cache when no status changed since it was
    /// counted, else counted now and cached. Needs the run lock.
    pub fn feed_metrics(&mut self, name: &str) -> Result<FeedMetrics> {
        let row = self
            .conn
            .query_row(
                "SELECT f.id, m.gauges, coalesce(m.items_sent_total, 0), f.last_success_at
                 FROM feeds f LEFT JOIN feed_metrics m ON m.feed_id = f.id WHERE f.name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((feed_id, cached, sent, last_success_at)) = row else {
            return Ok(FeedMetrics::default());
        };
        let gauges = match cached.and_then(|c| serde_json::from_str(&c).ok()) {
            Some(g) => g,
            None => {
                // Counted and stored in one transaction, so nothing can
                // change in between (the run lock keeps other runs out).
                let tx = self.write()?;
                let g = count_gauges(&tx, feed_id)?;
                let text = serde_json::to_string(&g).map_err(|e| Error::State(e.to_string()))?;
                tx.0.execute(
                    "INSERT INTO feed_metrics (feed_id, gauges) VALUES (?1, ?2)
                     ON CONFLICT (feed_id) DO UPDATE SET gauges = excluded.gauges",
                    params![feed_id, text],
                )?;
                tx.commit()?;
                g
            }
        };
        Ok(FeedMetrics {
            gauges,
            items_sent_total: sent as u64,
            last_success_at,
        })
    }

    /// Drops every feed's cached gauges: for the writes made outside a
    /// transaction, called before them (a kill in between only costs a
    /// count).
    pub(super) fn drop_gauges(&self) -> Result<()> {
        self.conn.execute(DROP_GAUGES, [])?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Every write that changes an item's status or deleted flag calls this
    /// first: it drops the cached gauges of every feed, once per
    /// transaction, in that transaction.
    pub(super) fn statuses_change(&self) -> Result<()> {
        if !self.1.replace(true) {
            self.0.execute(DROP_GAUGES, [])?;
        }
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
    pub(super) fn count_sent(&self, feed_id: i64, n: usize) -> Result<()> {
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

/// Forgets every feed's counted gauges.
const DROP_GAUGES: &str = "UPDATE feed_metrics SET gauges = NULL WHERE gauges IS NOT NULL";

/// Counts a feed's gauges: one pass over its items.
fn count_gauges(tx: &Tx<'_>, feed_id: i64) -> Result<Gauges> {
    let g = tx.0.query_row(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted),
             count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'sent'),
             count(*) FILTER (WHERE status = 'retry'), count(*) FILTER (WHERE status = 'failed'),
             min(modified_at) FILTER (WHERE status = 'pending'), count(*)
         FROM items WHERE +feed_id = ?1",
        [feed_id],
        |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
            Ok((
                Gauges {
                    counts: Counts {
                        live: n(0)?,
                        deleted: n(1)?,
                        pending: n(2)?,
                        sent: n(3)?,
                        retry: n(4)?,
                        failed: n(5)?,
                    },
                    oldest_pending_at: r.get(6)?,
                },
                n(7)?,
            ))
        },
    )?;
    let (gauges, total) = g;
    let c = gauges.counts;
    // As `status` does: a status this build does not know is an error.
    if c.pending + c.sent + c.retry + c.failed != total {
        return Err(Error::State(format!(
            "state file: feed {feed_id} has items of an unknown status"
        )));
    }
    Ok(gauges)
}
