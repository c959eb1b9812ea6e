//! Feed rows: one per configured feed, holding how its last job ended and
//! the validators, seed and key field its next read needs.

use rusqlite::{OptionalExtension, params};

use super::{State, Tx};
use crate::error::Result;
use crate::source::Validators;

impl State {
    /// The id of a feed's row, creating it on first use.
    pub fn feed_id(&self, name: &str) -> Result<i64> {
        self.conn
            .execute("INSERT OR IGNORE INTO feeds (name) VALUES (?1)", [name])?;
        let id = self
            .conn
            .query_row("SELECT id FROM feeds WHERE name = ?1", [name], |r| r.get(0))?;
        self.conn.execute(
            "INSERT OR IGNORE INTO feed_counts (feed_id) VALUES (?1)",
            [id],
        )?;
        Ok(id)
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
        self.0
            .execute("DELETE FROM items WHERE feed_id = ?1", [feed_id])?;
        self.0
            .execute("UPDATE feeds SET raw_seed = NULL WHERE id = ?1", [feed_id])?;
        self.clear_unconfirmed(feed_id)
    }

    /// Makes `field` the feed's key field: the one field of its key, when
    /// it has one (None for a composite key). A row whose key is its id's
    /// text under that field stores no key (see `insert_many`); when the
    /// key config changes, the rows stored that way get their key written
    /// out under the old field first, so each row's key stays its own.
    pub fn use_key_field(&self, feed_id: i64, field: Option<&str>) -> Result<()> {
        let old: Option<String> = self.0.query_row(
            "SELECT key_field FROM feeds WHERE id = ?1",
            [feed_id],
            |r| r.get(0),
        )?;
        if old.as_deref() == field {
            return Ok(());
        }
        if let Some(old) = old {
            self.0.execute(
                "UPDATE items SET key = json_object(?2, id) WHERE feed_id = ?1 AND key IS NULL",
                params![feed_id, old],
            )?;
        }
        self.0.execute(
            "UPDATE feeds SET key_field = ?2 WHERE id = ?1",
            params![feed_id, field],
        )?;
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
