//! What feedsync shows about the state: `status`, `items` and `runs`, as
//! text for people and as JSON documents (DESIGN.md's shapes) for scripts.

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::config::Config;
use crate::error::Result;
use crate::job::RunSummary;
use crate::state::{Counts, ItemFilter, ItemRow, RunRow, State};

#[derive(Debug, Serialize)]
pub struct FeedStatus {
    pub name: String,
    pub mode: &'static str,
    #[serde(flatten)]
    pub counts: Counts,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    #[serde(skip)]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub feeds: Vec<FeedStatus>,
    pub last_run_at: Option<String>,
}

/// Gathers `status` for the configured feeds (all, or one).
pub fn status(config: &Config, state: &State, only: Option<&str>) -> Result<Status> {
    let feeds = match only {
        Some(name) => config.select_feeds(&[name.to_string()])?,
        None => config.feeds.iter().collect(),
    };
    let mut out = Vec::new();
    for feed in feeds {
        let info = state.feed_info(&feed.name)?;
        let counts = match &info {
            Some(i) => state.counts(i.id)?,
            None => Counts::default(),
        };
        out.push(FeedStatus {
            name: feed.name.clone(),
            mode: feed.mode.as_str(),
            counts,
            last_run_at: info.as_ref().and_then(|i| i.last_run_at).map(rfc3339),
            last_success_at: info.as_ref().and_then(|i| i.last_success_at).map(rfc3339),
            last_error: info.and_then(|i| i.last_error),
        });
    }
    Ok(Status {
        feeds: out,
        last_run_at: state.last_run_at()?.map(rfc3339),
    })
}

pub fn status_text(s: &Status) -> String {
    let mut rows = vec![vec![
        "FEED".to_string(),
        "MODE".into(),
        "LIVE".into(),
        "DELETED".into(),
        "AWAITING".into(),
        "SUBMITTED".into(),
        "WILL RETRY".into(),
        "NEEDS ATTENTION".into(),
        "LAST SUCCESS".into(),
    ]];
    for f in &s.feeds {
        rows.push(vec![
            f.name.clone(),
            f.mode.into(),
            f.counts.live.to_string(),
            f.counts.deleted.to_string(),
            f.counts.pending.to_string(),
            f.counts.sent.to_string(),
            f.counts.retry.to_string(),
            f.counts.failed.to_string(),
            f.last_success_at.clone().unwrap_or_else(|| "never".into()),
        ]);
    }
    let mut out = table(&rows, 2);
    for f in &s.feeds {
        if let Some(e) = &f.last_error {
            out.push_str(&format!("{}: last run failed: {e}\n", f.name));
        }
    }
    out.push_str(&format!(
        "last run: {}\n",
        s.last_run_at.as_deref().unwrap_or("never")
    ));
    out
}

/// `items` for one feed.
pub fn items(state: &State, feed: &str, filter: &ItemFilter) -> Result<Vec<ItemRow>> {
    match state.feed_info(feed)? {
        Some(info) => state.list_items(info.id, filter),
        None => Ok(Vec::new()),
    }
}

pub fn items_json(rows: &[ItemRow]) -> Value {
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "status": r.status.name(),
                "deleted": r.deleted,
                "attempts": r.attempts,
                "error": r.error,
                "modified_at": rfc3339(r.modified_at),
                "sent_at": r.sent_at.map(rfc3339),
            })
        })
        .collect();
    json!({ "items": items })
}

pub fn items_text(rows: &[ItemRow]) -> String {
    let mut table_rows = vec![vec![
        "ID".to_string(),
        "STATUS".into(),
        "OP".into(),
        "ATTEMPTS".into(),
        "MODIFIED".into(),
        "SENT".into(),
        "NEXT ATTEMPT".into(),
        "ERROR".into(),
    ]];
    for r in rows {
        table_rows.push(vec![
            r.id.clone(),
            r.status.to_string(),
            if r.deleted { "delete" } else { "upsert" }.into(),
            r.attempts.to_string(),
            rfc3339(r.modified_at),
            r.sent_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            r.next_attempt_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            r.error
                .as_deref()
                .map(|e| e.replace('\n', " "))
                .unwrap_or_default(),
        ]);
    }
    if rows.is_empty() {
        return "no items\n".into();
    }
    table(&table_rows, 2)
}

pub fn runs_json(rows: &[RunRow]) -> Value {
    let runs: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "job": r.job,
                "started_at": rfc3339(r.started_at),
                "finished_at": r.finished_at.map(rfc3339),
                "exit_code": r.exit_code,
                "summary": run_summary(r).map(|s| s.text),
            })
        })
        .collect();
    json!({ "runs": runs })
}

pub fn runs_text(rows: &[RunRow]) -> String {
    if rows.is_empty() {
        return "no runs yet\n".into();
    }
    let mut t = vec![vec![
        "STARTED".to_string(),
        "JOB".into(),
        "EXIT".into(),
        "SUMMARY".into(),
    ]];
    for r in rows {
        t.push(vec![
            rfc3339(r.started_at),
            r.job.to_string(),
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "running".into()),
            run_summary(r).map(|s| s.text).unwrap_or_default(),
        ]);
    }
    table(&t, 2)
}

/// A run record's summary, once the run has finished.
pub fn run_summary(r: &RunRow) -> Option<RunSummary> {
    r.summary.as_deref().map(RunSummary::from_stored)
}

/// Left-aligned text columns; numbers right-aligned.
fn table(rows: &[Vec<String>], gap: usize) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            let numeric = !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit());
            if c + 1 == r.len() {
                if numeric {
                    line.push_str(&format!("{cell:>w$}"));
                } else {
                    line.push_str(cell);
                }
            } else if numeric {
                line.push_str(&format!("{cell:>w$}{:gap$}", ""));
            } else {
                line.push_str(&format!("{cell:<w$}{:gap$}", ""));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
