//! Run records (one per job: when, what it was, how it ended) and the meta
//! rows, the file-wide facts such as when a backup was taken.

use rusqlite::{Connection, OptionalExtension, params};

use super::State;
use crate::error::Result;

impl State {
    /// Starts a run record; `finish_run` completes it.
    pub fn start_run(&self, job: crate::job::Job, at: i64) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, started_at) VALUES (?1, ?2)",
            params![job, at],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Completes a run record with how the run ended.
    pub fn finish_run(&self, run: i64, at: i64, exit_code: u8, summary: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, exit_code = ?3, summary = ?4 WHERE id = ?1",
            params![run, at, exit_code, summary],
        )?;
        Ok(())
    }

    /// The newest `limit` runs, newest first, for `runs`.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job, started_at, finished_at, exit_code, summary FROM runs
             ORDER BY started_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRow {
                job: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                exit_code: r.get(3)?,
                summary: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the newest run started.
    pub fn last_run_at(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT max(started_at) FROM runs", [], |r| r.get(0))?)
    }

    /// The newest run that has not finished: (job, started_at).
    pub fn unfinished_run(&self) -> Result<Option<(crate::job::Job, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT job, started_at FROM runs WHERE finished_at IS NULL
                 ORDER BY started_at DESC, id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// A meta row's value: file-wide facts that are not a feed's or a run's.
    pub fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a meta row, replacing any value it had.
    pub fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        put_meta(&self.conn, name, value)
    }

    /// Removes a meta row.
    pub fn clear_meta(&self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE name = ?1", [name])?;
        Ok(())
    }
}

/// One run record, as `runs` shows it.
#[derive(Debug)]
pub struct RunRow {
    pub job: crate::job::Job,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<u8>,
    pub summary: Option<String>,
}

/// Sets a meta row on `conn`, which may be a copy's connection, not the
/// state's own.
pub(super) fn put_meta(conn: &Connection, name: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}
