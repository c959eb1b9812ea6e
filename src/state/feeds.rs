//! Feed rows: one per configured feed, holding how its last job ended and
//! the validators and seed its next read needs; and the item counts per
//! feed that `status` shows.

use rusqlite::{OptionalExtension, params};

use super::{ItemStatus, State, Tx};
use crate::error::Result;
use crate::source::Validators;

impl State {
    /// The id of a feed's row, creating it on first use.
    pub fn feed_id(&self, name: &str) -> Result<i64> {
        self.conn
            .execute("INSERT OR IGNORE INTO feeds (name) VALUES (?1)", [name])?;
        Ok(self
            .conn
            .query_row("SELECT id FROM feeds WHERE name = ?1", [name], |r| r.get(0))?)
    }

    /// What the state remembers of a feed, if it has run.
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

    /// Item counts for `status`: (live, deleted, per status). A status
    /// this build does not know is an error, not a guess.
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
            match ItemStatus::from_sql(&status)? {
                ItemStatus::Pending => c.pending += n,
                ItemStatus::Sent => c.sent += n,
                ItemStatus::Retry => c.retry += n,
                ItemStatus::Failed => c.failed += n,
            }
        }
        Ok(c)
    }
}

impl Tx<'_> {
    /// Remembers the HTTP validators of a completed read.
    pub fn set_validators(&self, feed_id: i64, v: &Validators) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET etag = ?2, last_modified = ?3 WHERE id = ?1",
            params![feed_id, v.etag, v.last_modified],
        )?;
        Ok(())
    }

    /// Remembers the seed the feed's raw hashes were made with.
    pub fn set_raw_seed(&self, feed_id: i64, seed: i64) -> Result<()> {
        self.0.execute(
            "UPDATE feeds SET raw_seed = ?2 WHERE id = ?1",
            params![feed_id, seed],
        )?;
        Ok(())
    }

    /// `resync --cleanup-feed`: forget every item of the feed.
    pub fn forget_feed(&self, feed_id: i64) -> Result<()> {
        self.statuses_change()?;
        self.0
            .execute("DELETE FROM items WHERE feed_id = ?1", [feed_id])?;
        self.0
            .execute("UPDATE feeds SET raw_seed = NULL WHERE id = ?1", [feed_id])?;
        Ok(())
    }
}

/// A feed's row: how its last job went, and what its next read needs.
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
