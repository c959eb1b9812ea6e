//! The metrics file: Prometheus's text exposition format, for
//! node_exporter's textfile collector, rewritten after every job.
//!
//! It is replaced atomically (a temporary file in the same folder, synced,
//! then renamed over the old one), so a scrape never reads half a file.
//! Everything in it is cheap to read: the per-feed counts are kept exact
//! in the state file (`state::counts`), and each job's last run is a meta
//! row written when it finishes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::state::{FeedMetrics, ItemStatus, State};

/// The meta row `<this><job>` holds how the job's last run went.
const LAST_RUN: &str = "metrics.last_run:";

/// How a job's last run went, as the metrics file shows it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    pub started_at: i64,
    pub exit_code: u8,
    pub duration_seconds: f64,
}

/// Remembers how `job`'s run went, for the metrics file (written whether
/// or not one is configured, so turning it on shows what ran before).
pub fn record_run(state: &State, job: Job, run: &LastRun) -> Result<()> {
    let text = serde_json::to_string(run).map_err(|e| Error::State(e.to_string()))?;
    state.set_meta(&format!("{LAST_RUN}{job}"), &text)
}

fn last_run(state: &State, job: Job) -> Result<Option<LastRun>> {
    Ok(state
        .meta(&format!("{LAST_RUN}{job}"))?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

/// Writes the metrics file at `path` from the state, `now` being the time
/// ages are counted to.
pub fn write(config: &Config, state: &mut State, path: &Path, now: i64) -> Result<()> {
    let mut feeds = Vec::with_capacity(config.feeds.len());
    for feed in &config.feeds {
        feeds.push((feed.name.as_str(), state.feed_metrics(&feed.name)?));
    }
    let mut runs = Vec::new();
    for job in Job::ALL {
        if let Some(run) = last_run(state, job)? {
            runs.push((job, run));
        }
    }
    let text = render(&feeds, &runs, now);
    replace(path, text.as_bytes())
        .map_err(|e| Error::State(format!("metrics file {}: {e}", path.display())))
}

/// The file's text.
pub fn render(feeds: &[(&str, FeedMetrics)], runs: &[(Job, LastRun)], now: i64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let feed = |name: &str| format!("feed=\"{}\"", escape(name));
    family(
        "feedsync_items",
        "gauge",
        "Items of a feed in each status, tombstones included, as `feedsync status` counts them.",
        feeds
            .iter()
            .flat_map(|(name, m)| {
                let c = m.gauges.counts;
                ItemStatus::ALL.into_iter().map(move |s| {
                    let n = match s {
                        ItemStatus::Pending => c.pending,
                        ItemStatus::Sent => c.sent,
                        ItemStatus::Retry => c.retry,
                        ItemStatus::Failed => c.failed,
                    };
                    (format!("{},status=\"{s}\"", feed(name)), n.to_string())
                })
            })
            .collect(),
    );
    family(
        "feedsync_items_live",
        "gauge",
        "Items of a feed that are not deleted.",
        feeds
            .iter()
            .map(|(name, m)| (feed(name), m.gauges.counts.live.to_string()))
            .collect(),
    );
    family(
        "feedsync_oldest_pending_age_seconds",
        "gauge",
        "Age of the feed's oldest change awaiting submission (pending); 0 when none is.",
        feeds
            .iter()
            .map(|(name, m)| {
                let age = m.gauges.oldest_pending_at.map_or(0, |t| (now - t).max(0));
                (feed(name), age.to_string())
            })
            .collect(),
    );
    family(
        "feedsync_last_success_timestamp_seconds",
        "gauge",
        "When a job last finished for the feed without a problem (Unix time); absent until then.",
        feeds
            .iter()
            .filter_map(|(name, m)| m.last_success_at.map(|t| (feed(name), t.to_string())))
            .collect(),
    );
    let job = |j: Job| format!("job=\"{}\"", escape(j.as_str()));
    family(
        "feedsync_last_run_timestamp_seconds",
        "gauge",
        "When the job's last finished run started (Unix time).",
        runs.iter()
            .map(|(j, r)| (job(*j), r.started_at.to_string()))
            .collect(),
    );
    family(
        "feedsync_last_run_exit_code",
        "gauge",
        "Exit code of the job's last finished run: 0 done, else feedsync's exit code for what went wrong.",
        runs.iter()
            .map(|(j, r)| (job(*j), r.exit_code.to_string()))
            .collect(),
    );
    family(
        "feedsync_last_run_duration_seconds",
        "gauge",
        "How long the job's last finished run took.",
        runs.iter()
            .map(|(j, r)| (job(*j), format!("{:.3}", r.duration_seconds)))
            .collect(),
    );
    family(
        "feedsync_items_sent_total",
        "counter",
        "Items of the feed the target acknowledged, counted in the state file (survives restarts).",
        feeds
            .iter()
            .map(|(name, m)| (feed(name), m.items_sent_total.to_string()))
            .collect(),
    );
    out
}

/// A label value as the text format requires: `\`, `"` and line feeds
/// escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces the file at `path` with `bytes` atomically: a temporary file in
/// the same folder (a rename does not cross file systems), synced, made
/// readable by the collector (node_exporter runs as its own user), renamed
/// over `path`, and the folder synced so the rename survives a crash.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".feedsync-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("two\nlines"), "two\\nlines");
        assert_eq!(escape("plain-name_1.x"), "plain-name_1.x");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = render(&[("p\"x", FeedMetrics::default())], &[], 100);
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(families.len(), 8, "{text}");
        for f in families {
            let name = f.split(' ').next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(
            text.contains(r#"feedsync_items{feed="p\"x",status="failed"} 0"#),
            "{text}"
        );
        // A feed that never succeeded has no success time, not 0.
        assert!(
            !text.contains("feedsync_last_success_timestamp_seconds{"),
            "{text}"
        );
    }
}
