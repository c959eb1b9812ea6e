//! Item statuses: the four states of an item's delivery (DESIGN.md names
//! them), and the one place that maps them to and from the small integer
//! the state file stores (schema 5; 0 and 1 take no bytes in a SQLite
//! record, so the most common statuses, `sent` and `pending`, get them).
//!
//! SQL in this module's siblings writes the codes as literals, each with
//! its name in a comment: 0 sent, 1 pending, 2 retry, 3 failed.

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

    /// The name shown to users (`status`, `items`, the metrics file).
    pub fn name(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Sent => "sent",
            ItemStatus::Retry => "retry",
            ItemStatus::Failed => "failed",
        }
    }

    /// The status called `name`.
    pub fn from_name(name: &str) -> Option<ItemStatus> {
        ItemStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The code stored in the `status` column.
    pub fn code(self) -> i64 {
        match self {
            ItemStatus::Sent => 0,
            ItemStatus::Pending => 1,
            ItemStatus::Retry => 2,
            ItemStatus::Failed => 3,
        }
    }

    /// The status a `status` column holds; any other value is a state
    /// error that names it.
    pub fn from_sql(value: rusqlite::types::ValueRef<'_>) -> Result<ItemStatus> {
        use rusqlite::types::ValueRef;
        let known = match value {
            ValueRef::Integer(n) => ItemStatus::ALL.into_iter().find(|s| s.code() == n),
            _ => None,
        };
        known.ok_or_else(|| {
            let shown = match value {
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            };
            Error::State(format!("state file: unknown item status `{shown}`"))
        })
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ToSql for ItemStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        use rusqlite::types::ValueRef;
        for s in ItemStatus::ALL {
            assert_eq!(
                ItemStatus::from_sql(ValueRef::Integer(s.code())).unwrap(),
                s
            );
        }
        // The literals the SQL of this module's siblings writes.
        let codes: Vec<i64> = ItemStatus::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [1, 0, 2, 3]);
    }

    #[test]
    fn unknown_text_is_a_state_error_naming_it() {
        let e = ItemStatus::from_sql(rusqlite::types::ValueRef::Text(b"lost")).unwrap_err();
        assert!(matches!(e, Error::State(_)), "{e:?}");
        assert_eq!(e.exit_code(), crate::exit_code::ExitCode::State);
        assert!(e.to_string().contains("`lost`"), "{e}");
    }

    #[test]
    fn binds_as_its_code() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let code: i64 = conn
            .query_row("SELECT ?1", [ItemStatus::Retry], |r| r.get(0))
            .unwrap();
        assert_eq!(code, 2);
    }
}
