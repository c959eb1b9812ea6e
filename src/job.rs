//! The kinds of job feedsync runs, their names, and what a run of one
//! leaves in the run history. A name appears in the config (`[schedule]`),
//! the run history, the log file and `runs --json`; it is mapped to and
//! from text here only, and a name this build does not know is an error
//! wherever it is read back.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// One kind of job: what `run` schedules and each run record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    Sync,
    Send,
    Retry,
    Resync,
    Cleanup,
}

impl Job {
    /// Every job, in the order `run` runs them when several are due.
    pub const ALL: [Job; 5] = [Job::Sync, Job::Send, Job::Retry, Job::Resync, Job::Cleanup];

    /// The job's name, as users and scripts see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Sync => "sync",
            Job::Send => "send",
            Job::Retry => "retry",
            Job::Resync => "resync",
            Job::Cleanup => "cleanup",
        }
    }

    /// The job's place in `run`'s order ([`Job::ALL`]).
    pub fn run_order(self) -> usize {
        Job::ALL
            .iter()
            .position(|&j| j == self)
            .unwrap_or(usize::MAX)
    }
}

/// A job name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job `{0}` (this feedsync knows sync, send, retry, resync, cleanup)")]
pub struct UnknownJob(pub String);

impl FromStr for Job {
    type Err = UnknownJob;

    fn from_str(s: &str) -> Result<Job, UnknownJob> {
        Job::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| UnknownJob(s.to_string()))
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Run records store the name.
impl ToSql for Job {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// A run record naming an unknown job fails to read, rather than passing
/// for some other job.
impl FromSql for Job {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A run record's summary: the one line people read (`runs`, the status
/// page) and the figures the status page charts, kept apart so that
/// nothing has to read numbers back out of the prose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    /// One clause per feed, or the error that stopped the job.
    pub text: String,
    /// Items the target acknowledged in the run; `None` when not known:
    /// the job stopped as a whole, or the record predates this figure.
    pub sent: Option<u64>,
}

impl RunSummary {
    /// The form kept in the run record's `summary` column: a JSON object.
    pub fn to_stored(&self) -> String {
        serde_json::json!({ "text": self.text, "sent": self.sent }).to_string()
    }

    /// Reads a stored summary back. Older records hold the bare text,
    /// which never starts a JSON object of this shape (it starts with a
    /// feed's name and a colon).
    pub fn from_stored(stored: &str) -> RunSummary {
        serde_json::from_str(stored).unwrap_or_else(|_| RunSummary {
            text: stored.to_string(),
            sent: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for job in Job::ALL {
            assert_eq!(job.as_str().parse::<Job>(), Ok(job));
            assert_eq!(job.to_string(), job.as_str());
        }
        let names: Vec<&str> = Job::ALL.iter().map(|j| j.as_str()).collect();
        assert_eq!(names, ["sync", "send", "retry", "resync", "cleanup"]);
    }

    #[test]
    fn an_unknown_name_is_an_error() {
        for name in ["", "Sync", "backfill", "cleanup "] {
            let e = name.parse::<Job>().unwrap_err();
            assert_eq!(e, UnknownJob(name.to_string()));
            assert!(e.to_string().contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn run_records_store_the_name_and_refuse_unknown_ones() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE runs (job TEXT NOT NULL)")
            .unwrap();
        for job in Job::ALL {
            conn.execute("INSERT INTO runs (job) VALUES (?1)", [job])
                .unwrap();
        }
        let stored: Vec<String> = conn
            .prepare("SELECT job FROM runs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored, ["sync", "send", "retry", "resync", "cleanup"]);
        let back: Vec<Job> = conn
            .prepare("SELECT job FROM runs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(back, Job::ALL);

        conn.execute("INSERT INTO runs (job) VALUES ('backfill')", [])
            .unwrap();
        let e = conn
            .query_row("SELECT job FROM runs WHERE job = 'backfill'", [], |r| {
                r.get::<_, Job>(0)
            })
            .unwrap_err();
        assert!(e.to_string().contains("unknown job `backfill`"), "{e}");
    }

    #[test]
    fn summaries_keep_text_and_figures_apart() {
        let s = RunSummary {
            text: "p: 3 read, 2 upserts, 0 deletes, 2 sent — HTTP 500: 99 sent".into(),
            sent: Some(2),
        };
        assert_eq!(RunSummary::from_stored(&s.to_stored()), s);
        let old = "p: 10 read, 3 upserts, 1 delete, 4 sent";
        assert_eq!(
            RunSummary::from_stored(old),
            RunSummary {
                text: old.into(),
                sent: None
            }
        );
        assert_eq!(RunSummary::from_stored("").text, "");
        assert_eq!(RunSummary::from_stored("{\"x\": 1}").text, "{\"x\": 1}");
    }
}
