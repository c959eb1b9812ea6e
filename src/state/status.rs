//! Item statuses: the four states of an item's delivery (DESIGN.md names
//! them), and the one place that maps them to and from the text the
//! state file stores.

use std::fmt;

use rusqlite::types::{ToSql, ToSqlOutput};

use crate::error::{Error, Result};

/// Where an item is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemStatus {
    /// Changed since its last delivery, not yet acknowledged.
    Pending,
    /// The target acknowledged this version.
    Sent,
    /// A retryable failure; `next_attempt_at` says when it goes again.
    Retry,
    /// Rejected by the target, or out of `max_attempts`: resent only when
    /// its data changes or by `resync`.
    Failed,
}

impl ItemStatus {
    /// Every status, in the order `status` lists them.
    pub const ALL: [ItemStatus; 4] = [
        ItemStatus::Pending,
        ItemStatus::Sent,
        ItemStatus::Retry,
        ItemStatus::Failed,
    ];

    /// The statuses of items whose last send failed: what `resync`
    /// puts back in the queue.
    pub const FAILURES: [ItemStatus; 2] = [ItemStatus::Retry, ItemStatus::Failed];

    /// The text stored in the `status` column (and shown to users).
    pub fn as_sql(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Sent => "sent",
            ItemStatus::Retry => "retry",
            ItemStatus::Failed => "failed",
        }
    }

    /// The status a `status` column holds; any other text is a state
    /// error that names it.
    pub fn from_sql(text: &str) -> Result<ItemStatus> {
        ItemStatus::ALL
            .into_iter()
            .find(|s| s.as_sql() == text)
            .ok_or_else(|| Error::State(format!("state file: unknown item status `{text}`")))
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

impl ToSql for ItemStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_sql()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for s in ItemStatus::ALL {
            assert_eq!(ItemStatus::from_sql(s.as_sql()).unwrap(), s);
        }
    }

    #[test]
    fn unknown_text_is_a_state_error_naming_it() {
        let e = ItemStatus::from_sql("lost").unwrap_err();
        assert!(matches!(e, Error::State(_)), "{e:?}");
        assert_eq!(e.exit_code(), crate::exit_code::ExitCode::State);
        assert!(e.to_string().contains("`lost`"), "{e}");
    }

    #[test]
    fn binds_as_its_text() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let text: String = conn
            .query_row("SELECT ?1", [ItemStatus::Retry], |r| r.get(0))
            .unwrap();
        assert_eq!(text, "retry");
    }
}
