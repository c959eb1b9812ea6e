//! The optional log file (`[log] file`): one JSON line per feed per job, for
//! log shippers and `jq`, beside the run history in the state file.
//!
//! Each line is appended with a single `write` on a file opened with
//! O_APPEND, so lines from overlapping processes (a `run` and a manual
//! `sync`) never interleave. Lines carry counts and error texts, which never
//! hold secrets: those live only in the environment and in request headers.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::clock;
use crate::exit_code::ExitCode;
use crate::job::Job;
use crate::outcome::{FeedReport, JobReport};

/// One feed's line.
pub fn line(job: Job, f: &FeedReport) -> Value {
    let mut v = json!({
        "ts": clock::rfc3339(clock::now_secs()),
        "feed": f.name,
        "job": job,
        "status": f.exit.word(),
        "exit_code": f.exit,
        "collected": f.collected,
        "upserts": f.upserts,
        "deletes": f.deletes,
        "sent": f.sent,
        "retry": f.retry,
        "failed": f.failed,
        "elapsed_ms": f.elapsed_ms,
        "pid": std::process::id(),
    });
    if let Some(n) = f.removed {
        v["removed"] = json!(n);
    }
    if let Some(e) = &f.error {
        v["error"] = json!(e);
    }
    v
}

/// Appends one line per feed of a finished job.
pub fn append(path: &Path, job: Job, report: &JobReport) -> std::io::Result<()> {
    let lines: Vec<Value> = report.feeds.iter().map(|f| line(job, f)).collect();
    append_lines(path, &lines)
}

/// Appends a line per feed for a job that stopped as a whole (the state
/// file failed): each feed gets the job's error.
pub fn append_failed(
    path: &Path,
    job: Job,
    feeds: &[&str],
    code: ExitCode,
    error: &str,
    elapsed_ms: u64,
) -> std::io::Result<()> {
    let lines: Vec<Value> = feeds
        .iter()
        .map(|name| {
            let mut f = FeedReport::default();
            f.name = name.to_string();
            f.error = Some(error.to_string());
            f.exit = code;
            f.elapsed_ms = elapsed_ms;
            line(job, &f)
        })
        .collect();
    append_lines(path, &lines)
}

fn append_lines(path: &Path, lines: &[Value]) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(crate::paths::parent_dir(path))?;
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    for v in lines {
        let mut bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        // One write per line: O_APPEND places it whole at the end.
        let n = file.write(&bytes)?;
        if n != bytes.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write (disk full?)",
            ));
        }
    }
    Ok(())
}
