//! The HTML status page (`report --out`, and `[report] file` after each
//! `run`): what Adobe's Data Feed Sync Status shows — per feed, the source
//! records, submitted, awaiting, will retry and requires attention — plus a
//! chart of recent runs and the failed items with their errors.
//!
//! One self-contained file: inline CSS, an inline SVG chart, no scripts, no
//! external assets, so it can be mailed, served as a static file, or opened
//! from disk. Every text from the state (ids, errors, summaries) is escaped.

use std::fmt::Write as _;
use std::path::Path;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exit_code::ExitCode;
use crate::job::RunSummary;
use crate::report::{self, FeedStatus};
use crate::state::{ItemFilter, ItemStatus, RunRow, State};

/// Runs shown in the chart, newest last.
const CHART_RUNS: usize = 60;
/// Runs listed in the table under the chart.
const TABLE_RUNS: usize = 12;
/// Failed items listed per feed.
const FAILED_ITEMS: usize = 100;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes the page to `path` whole: readers never see half a page.
pub fn write(config: &Config, state: &State, path: &Path, now: i64) -> Result<()> {
    let page = page(config, state, now)?;
    let fail = |e: std::io::Error| Error::config(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(crate::paths::parent_dir(path)).map_err(fail)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, page).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// The whole page.
pub fn page(config: &Config, state: &State, now: i64) -> Result<String> {
    let status = report::status(config, state, None)?;
    let mut runs = state.runs(CHART_RUNS)?;
    runs.reverse();
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>feedsync status</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header><h1>Data feed sync status</h1>\
         <p class=\"meta\">generated {} · config {} · last run {}</p></header>",
        rfc3339(now),
        escape(&config.path.display().to_string()),
        status.last_run_at.as_deref().unwrap_or("never"),
    );
    feeds_table(&mut h, &status.feeds);
    h.push_str("<section><h2>Recent runs</h2>\n");
    if runs.is_empty() {
        h.push_str("<p class=\"empty\">No runs yet.</p>\n");
    } else {
        chart(&mut h, &runs);
        runs_table(&mut h, &runs);
    }
    h.push_str("</section>\n");
    failed_items(&mut h, state, &status.feeds)?;
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

fn feeds_table(h: &mut String, feeds: &[FeedStatus]) {
    h.push_str(
        "<section><h2>Feeds</h2>\n<table class=\"feeds\">\n<thead><tr><th>Feed</th><th>Health</th>\
         <th class=\"n\">Source records</th><th class=\"n\">Submitted</th>\
         <th class=\"n\">Awaiting submission</th><th class=\"n\">Failed, will retry</th>\
         <th class=\"n\">Failed, requires attention</th><th>Last success</th></tr></thead>\n<tbody>\n",
    );
    for f in feeds {
        let (class, label) = if f.counts.failed > 0 || f.last_error.is_some() {
            ("bad", "needs attention")
        } else if f.counts.retry > 0 {
            ("warn", "retrying")
        } else if f.counts.pending > 0 {
            ("wait", "awaiting")
        } else if f.last_success_at.is_none() {
            ("wait", "not run yet")
        } else {
            ("ok", "in sync")
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}<span class=\"mode\">{}</span></td>\
             <td><span class=\"badge {class}\">{label}</span></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n{}\">{}</td><td class=\"n{}\">{}</td><td class=\"time\">{}</td></tr>",
            escape(&f.name),
            f.mode,
            f.counts.live,
            f.counts.sent,
            f.counts.pending,
            if f.counts.retry > 0 { " warn-text" } else { "" },
            f.counts.retry,
            if f.counts.failed > 0 { " bad-text" } else { "" },
            f.counts.failed,
            escape(f.last_success_at.as_deref().unwrap_or("never")),
        );
        if let Some(e) = &f.last_error {
            let _ = writeln!(
                h,
                "<tr class=\"error-row\"><td colspan=\"8\">last run failed: <code>{}</code></td></tr>",
                escape(e)
            );
        }
    }
    h.push_str(
        "</tbody>\n</table>\n<p class=\"note\">Source records are the live items; \
         the other counts cover every item, deletions included.</p></section>\n",
    );
}

/// A run's colour and legend, by its recorded exit code.
fn exit_class(code: Option<u8>) -> (&'static str, &'static str) {
    match code.map(ExitCode::from_code) {
        None => ("run", "running or interrupted"),
        Some(Some(ExitCode::Ok)) => ("ok", "0 done"),
        Some(Some(ExitCode::ItemsFailed)) => ("warn", "1 some items failed"),
        Some(Some(ExitCode::Locked)) => ("skip", "75 locked"),
        Some(_) => ("bad", "2–6 error"),
    }
}

fn chart(h: &mut String, runs: &[RunRow]) {
    const W: f64 = 960.0;
    const H: f64 = 180.0;
    const TOP: f64 = 18.0;
    let summaries: Vec<Option<RunSummary>> = runs.iter().map(report::run_summary).collect();
    let sent: Vec<u64> = summaries
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.sent).unwrap_or(0))
        .collect();
    let max = sent.iter().copied().max().unwrap_or(0).max(1);
    let slot = W / CHART_RUNS as f64;
    let bar = (slot * 0.7).max(2.0);
    let _ = writeln!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"items sent per run\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" class=\"axis\"/>\n\
         <line x1=\"0\" y1=\"{TOP}\" x2=\"{W}\" y2=\"{TOP}\" class=\"grid\"/>\n\
         <text x=\"2\" y=\"{}\" class=\"label\">{max} sent</text>",
        H + 20.0,
        TOP - 5.0,
    );
    // Right-aligned: the newest run is always at the right edge.
    let offset = (CHART_RUNS - runs.len()) as f64 * slot;
    for (i, ((r, n), summary)) in runs.iter().zip(&sent).zip(&summaries).enumerate() {
        let height = ((*n as f64 / max as f64) * (H - TOP)).max(3.0);
        let x = offset + i as f64 * slot + (slot - bar) / 2.0;
        let (class, meaning) = exit_class(r.exit_code);
        let _ = writeln!(
            h,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" class=\"bar {class}\">\
             <title>{} {} — exit {} — {n} sent\n{}</title></rect>",
            H - height,
            escape(&rfc3339(r.started_at)),
            r.job,
            meaning,
            escape(summary.as_ref().map_or("", |s| &s.text)),
        );
    }
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        let (first, last) = (rfc3339(first.started_at), rfc3339(last.started_at));
        // Two time labels need about 300 units; with few runs, one label
        // at the right names both ends.
        let (left, right) = if W - offset >= 300.0 {
            (first, last)
        } else if first == last {
            (String::new(), last)
        } else {
            (String::new(), format!("{first} – {last}"))
        };
        let _ = writeln!(
            h,
            "<text x=\"{offset:.1}\" y=\"{}\" class=\"label\">{}</text>\
             <text x=\"{W}\" y=\"{}\" class=\"label end\">{}</text>",
            H + 16.0,
            escape(&left),
            H + 16.0,
            escape(&right),
        );
    }
    h.push_str("</svg>\n<p class=\"legend\">Items sent per run (from each run's summary), oldest to newest. ");
    for code in [Some(0), Some(1), Some(2), Some(75), None] {
        let (class, meaning) = exit_class(code);
        let _ = write!(
            h,
            "<span class=\"key\"><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" class=\"bar {class}\"/></svg> {meaning}</span> ",
        );
    }
    h.push_str("</p>\n");
}

fn runs_table(h: &mut String, runs: &[RunRow]) {
    h.push_str(
        "<table class=\"runs\">\n<thead><tr><th>Started</th><th>Job</th><th class=\"n\">Exit</th>\
         <th>Summary</th></tr></thead>\n<tbody>\n",
    );
    for r in runs.iter().rev().take(TABLE_RUNS) {
        let (class, _) = exit_class(r.exit_code);
        let _ = writeln!(
            h,
            "<tr><td class=\"time\">{}</td><td>{}</td><td class=\"n\"><span class=\"badge {class}\">{}</span></td>\
             <td>{}</td></tr>",
            escape(&rfc3339(r.started_at)),
            r.job,
            r.exit_code
                .map_or_else(|| "–".to_string(), |c| c.to_string()),
            escape(
                report::run_summary(r)
                    .map_or(String::new(), |s| s.text)
                    .as_str()
            ),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn failed_items(h: &mut String, state: &State, feeds: &[FeedStatus]) -> Result<()> {
    h.push_str("<section><h2>Failed items, requiring attention</h2>\n");
    let total: u64 = feeds.iter().map(|f| f.counts.failed).sum();
    if total == 0 {
        h.push_str("<p class=\"empty\">None.</p>\n</section>\n");
        return Ok(());
    }
    for f in feeds.iter().filter(|f| f.counts.failed > 0) {
        let filter = ItemFilter {
            status: Some(ItemStatus::Failed),
            id: None,
            limit: FAILED_ITEMS,
        };
        let rows = report::items(state, &f.name, &filter)?;
        let _ = writeln!(
            h,
            "<h3>{} <span class=\"count\">{} failed</span></h3>\n<table class=\"items\">\n\
             <thead><tr><th>Item</th><th>Op</th><th class=\"n\">Attempts</th><th>Modified</th>\
             <th>Error</th></tr></thead>\n<tbody>",
            escape(&f.name),
            f.counts.failed
        );
        for r in &rows {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"time\">{}</td>\
                 <td class=\"error\">{}</td></tr>",
                escape(&r.id),
                if r.deleted { "delete" } else { "upsert" },
                r.attempts,
                escape(&rfc3339(r.modified_at)),
                escape(r.error.as_deref().unwrap_or("")),
            );
        }
        h.push_str("</tbody>\n</table>\n");
        if f.counts.failed > rows.len() as u64 {
            let _ = writeln!(
                h,
                "<p class=\"note\">Showing {} of {}; all of them: <code>feedsync items --feed {} --status failed --limit {}</code></p>",
                rows.len(),
                f.counts.failed,
                escape(&f.name),
                f.counts.failed
            );
        }
    }
    h.push_str(
        "<p class=\"note\">A failed item is sent again when its data changes, or by \
         <code>feedsync resync --feed F</code>.</p>\n</section>\n",
    );
    Ok(())
}

const CSS: &str = r#"
:root { color-scheme: light; --ok: #2e7d32; --warn: #e0a000; --bad: #c62828; --skip: #9e9e9e; --run: #64b5f6; --line: #e3e6ea; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328; background: #f6f7f9; }
header h1 { margin: 0 0 4px; font-size: 22px; }
.meta, .note, .legend, .empty { color: #57606a; }
.meta { margin: 0 0 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 0 0 20px; }
h2 { margin: 0 0 12px; font-size: 17px; }
h3 { margin: 16px 0 8px; font-size: 15px; }
h3 .count { color: var(--bad); font-weight: normal; font-size: 13px; margin-left: 6px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; font-size: 12px; color: #57606a; text-transform: uppercase; letter-spacing: .02em; }
.time { white-space: nowrap; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-weight: 600; }
.mode { display: block; font-weight: normal; font-size: 12px; color: #57606a; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff; white-space: nowrap; }
.badge.ok { background: var(--ok); } .badge.warn { background: var(--warn); } .badge.bad { background: var(--bad); }
.badge.wait, .badge.run { background: var(--run); } .badge.skip { background: var(--skip); }
.warn-text { color: #9a6700; font-weight: 600; } .bad-text { color: var(--bad); font-weight: 600; }
.error-row td { background: #fff5f5; color: var(--bad); font-size: 13px; }
td.error { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; color: var(--bad); }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.chart { width: 100%; height: auto; display: block; margin: 4px 0; }
.chart .axis { stroke: #8c959f; stroke-width: 1; } .chart .grid { stroke: var(--line); stroke-dasharray: 4 4; }
.chart .label { font-size: 11px; fill: #57606a; } .chart .label.end { text-anchor: end; }
.bar.ok { fill: var(--ok); } .bar.warn { fill: var(--warn); } .bar.bad { fill: var(--bad); } .bar.skip { fill: var(--skip); } .bar.run { fill: var(--run); }
.legend .key { white-space: nowrap; margin-right: 10px; }
.runs { margin-top: 12px; } .runs td:last-child { color: #57606a; font-size: 13px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<b a="1">&'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_chart_draws_the_recorded_figure_not_the_prose() {
        let run = |job, sent, text: &str| RunRow {
            job,
            started_at: 1_700_000_000,
            finished_at: Some(1_700_000_001),
            exit_code: Some(0),
            summary: Some(
                RunSummary {
                    text: text.into(),
                    sent,
                }
                .to_stored(),
            ),
        };
        let runs = [
            run(
                Job::Sync,
                Some(7),
                "p: 7 read, 7 upserts, 0 deletes, 7 sent",
            ),
            // The target's error text names a count of its own.
            run(
                Job::Retry,
                Some(2),
                "p: 2 upserts, 0 deletes, 2 sent — HTTP 500: 99 sent",
            ),
            run(Job::Cleanup, None, "p: 3 delivered tombstones dropped"),
        ];
        let mut h = String::new();
        chart(&mut h, &runs);
        assert!(h.contains(">7 sent</text>"), "{h}");
        assert!(h.contains("sync — exit 0 done — 7 sent"), "{h}");
        assert!(h.contains("retry — exit 0 done — 2 sent"), "{h}");
        assert!(h.contains("cleanup — exit 0 done — 0 sent"), "{h}");
        assert!(!h.contains("99 sent\n"), "{h}");
    }
}
