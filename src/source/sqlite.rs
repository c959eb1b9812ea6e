//! An SQLite source: a query on the shop's database file, one item per
//! row, run on a read-only connection that SQLite interrupts at the
//! deadline. NULL → null, INTEGER and REAL → numbers, TEXT → strings,
//! BLOB → base64 strings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use super::rows::{self, RowError, RowWriter, Rows};
use super::{Context, Deadline, Kind, Opened};
use crate::config::Feed;
use crate::error::{Error, Result};

/// A feed whose source is `sqlite` + `query`.
pub struct SqliteSource<'a> {
    pub db: &'a Path,
    pub query: &'a str,
}

impl Kind for SqliteSource<'_> {
    fn open(&self, _: &Feed, _: &Context<'_>, deadline: Deadline) -> Result<Opened> {
        let place = format!("sqlite {}", self.db.display());
        if !self.db.exists() {
            return Err(Error::source(format!("{place}: no such file")));
        }
        let query = Query {
            db: self.db.to_path_buf(),
            query: self.query.to_string(),
        };
        rows::stream(place, query, deadline)
    }
}

/// The query, owned by the thread that runs it.
struct Query {
    db: PathBuf,
    query: String,
}

impl Rows for Query {
    fn run(self, deadline: &Deadline, out: &mut RowWriter) -> Result<(), RowError> {
        let conn = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(RowError::query)?;
        // A query still running at the deadline is stopped inside SQLite.
        let handle = conn.get_interrupt_handle();
        let _watchdog = deadline.watch(move || handle.interrupt());
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(RowError::query)?;
        conn.execute_batch("PRAGMA query_only = ON")
            .map_err(RowError::query)?;
        let mut stmt = conn.prepare(&self.query).map_err(RowError::query)?;
        out.columns(stmt.column_names().map(str::to_string).collect())?;
        let mut rows = stmt.query([]).map_err(RowError::query)?;
        while let Some(row) = rows.next().map_err(RowError::query)? {
            out.row(|i, name| {
                Ok(match row.get_ref(i).map_err(RowError::query)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => i.into(),
                    ValueRef::Real(f) => serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    ValueRef::Text(t) => Value::String(
                        String::from_utf8(t.to_vec())
                            .map_err(|_| RowError::Bad(format!("column `{name}` is not UTF-8")))?,
                    ),
                    ValueRef::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
                })
            })?;
        }
        Ok(())
    }
}
