//! What a job did, per feed and in all: the counts, the first error and
//! the exit code. Its own module because both the jobs (`sync`) and the
//! delivery loop (`deliver`) fill it in, and the output (`app`, `joblog`)
//! reads it; living in either of the first two made them import each other.

use serde::Serialize;

use crate::error::Error;
use crate::exit_code::ExitCode;
use crate::job::RunSummary;

/// How one feed fared in one job; also the `--json` document's entries.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FeedReport {
    pub name: String,
    /// Items read from the source.
    pub collected: u64,
    /// A source was read (a `send` or `retry` reads none).
    #[serde(skip)]
    pub read: bool,
    /// Upserts and deletes queued for delivery in this job.
    pub upserts: u64,
    pub deletes: u64,
    /// Items the target acknowledged in this job.
    pub sent: u64,
    /// Items that became `retry` or `failed` in this job.
    pub retry: u64,
    pub failed: u64,
    /// Tombstones dropped (`cleanup` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first error an item got in this job (a retry or a rejection),
    /// for the heartbeat's fail ping.
    #[serde(skip)]
    pub first_item_error: Option<String>,
    #[serde(skip)]
    pub exit: ExitCode,
    /// Time spent on this feed in this job, for the log file.
    #[serde(skip)]
    pub elapsed_ms: u64,
    #[serde(skip)]
    started: Option<std::time::Instant>,
}

impl FeedReport {
    pub(crate) fn new(name: &str) -> FeedReport {
        FeedReport {
            name: name.to_string(),
            started: Some(std::time::Instant::now()),
            ..Default::default()
        }
    }

    /// Records a failure of this feed; its first one is the one it reports.
    pub(crate) fn fail(&mut self, e: &Error) {
        if self.exit.is_ok() {
            self.error = Some(e.to_string());
        }
        self.exit.absorb(e.exit_code());
    }

    /// Remembers an item's error, if it is the job's first.
    pub(crate) fn item_error(&mut self, e: &str) {
        if self.first_item_error.is_none() {
            self.first_item_error = Some(crate::error::clip(e).to_string());
        }
    }

    /// The one-line summary shown on a terminal and kept in the run history.
    pub fn line(&self, dry_run: bool) -> String {
        let mut s = format!("{}: ", self.name);
        if let Some(n) = self.removed {
            s.push_str(&format!("{n} delivered tombstone{} dropped", plural(n)));
            return s;
        }
        if self.read {
            s.push_str(&format!("{} read, ", self.collected));
        }
        if self.upserts + self.deletes == 0 {
            s.push_str("nothing to send");
        } else {
            if dry_run {
                s.push_str("would send ");
            }
            s.push_str(&format!(
                "{} upsert{}, {} delete{}",
                self.upserts,
                plural(self.upserts),
                self.deletes,
                plural(self.deletes)
            ));
            if !dry_run {
                s.push_str(&format!(", {} sent", self.sent));
                if self.retry > 0 {
                    s.push_str(&format!(", {} to retry", self.retry));
                }
                if self.failed > 0 {
                    s.push_str(&format!(", {} failed", self.failed));
                }
            }
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" — {e}"));
        }
        s
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A whole job: one report per feed and the job's exit code (that of the
/// first feed with a problem).
#[derive(Debug, Default, Serialize)]
pub struct JobReport {
    pub feeds: Vec<FeedReport>,
    #[serde(skip)]
    pub exit: ExitCode,
}

impl JobReport {
    pub(crate) fn push(&mut self, mut r: FeedReport) {
        if let Some(t) = r.started {
            r.elapsed_ms = t.elapsed().as_millis() as u64;
        }
        self.exit.absorb(r.exit);
        self.feeds.push(r);
    }

    /// The run history's summary text: one clause per feed.
    pub fn summary(&self) -> String {
        self.feeds
            .iter()
            .map(|f| f.line(false))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The run record's summary: the text, and the items sent in all feeds.
    pub fn run_summary(&self) -> RunSummary {
        RunSummary {
            text: self.summary(),
            sent: Some(self.feeds.iter().map(|f| f.sent).sum()),
        }
    }
}
