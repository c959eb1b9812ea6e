//! Monitoring the way operators already watch cron jobs: a Prometheus
//! metrics file for node_exporter's textfile collector (`[metrics]`,
//! [`metrics`]) and heartbeat pings to a dead man's switch such as
//! healthchecks.io (`[notify]`, [`ping`]). Both are optional, both only
//! watch: a failure in either is a warning, never a changed exit code or
//! state.
//!
//! `app` calls in at two points: after every job ([`after_job`]: the run's
//! outcome remembered, the metrics file rewritten) and around every piece
//! of work a service should hear about ([`Heartbeat`]: a direct job
//! command, or a `run`/daemon minute with a job due).

pub mod metrics;
pub mod ping;

use crate::clock;
use crate::config::Config;
use crate::exit_code::ExitCode;
use crate::job::Job;
use crate::outcome::JobReport;
use crate::state::State;

pub use metrics::LastRun;
pub use ping::Pinger;

/// After a job's run record is complete: remember how it went and rewrite
/// the metrics file, if there is one. Failures are warnings.
pub fn after_job(config: &Config, state: &mut State, job: Job, run: &LastRun) {
    if let Err(e) = metrics::record_run(state, job, run) {
        log::warn!("metrics: cannot remember the {job} run: {e}");
    }
    if let Some(path) = &config.metrics_file
        && let Err(e) = metrics::write(config, state, path, clock::now_secs())
    {
        log::warn!("{e}");
    }
}

/// The pings around one piece of work: `start` when it is made, then
/// [`Heartbeat::finish`] with how the work ended. Without `[notify]`, or
/// for work that is not pinged, it does nothing.
pub struct Heartbeat {
    pinger: Option<Pinger>,
    /// One clause per job: "sync: products: 3 read, …".
    summary: Vec<String>,
    first_error: Option<String>,
}

impl Heartbeat {
    /// Pings `start` when `pinged` (work is about to start) and `[notify]`
    /// is set.
    pub fn start(config: &Config, pinged: bool) -> Heartbeat {
        let pinger = pinged.then(|| Pinger::from_config(config)).flatten();
        if let Some(p) = &pinger {
            p.start();
        }
        Heartbeat {
            pinger,
            summary: Vec::new(),
            first_error: None,
        }
    }

    /// Adds a finished job to the summary, and its first feed error.
    pub fn job(&mut self, job: Job, report: &JobReport) {
        self.summary.push(format!("{job}: {}", report.summary()));
        if self.first_error.is_none() {
            // A feed's own error first (it stopped the feed), else the
            // first error an item got.
            self.first_error = report.feeds.iter().find_map(|f| {
                (f.error.as_ref().or(f.first_item_error.as_ref()))
                    .map(|e| format!("{}: {e}", f.name))
            });
        }
    }

    /// Pings how the work ended: success for exit 0, else fail with the
    /// first error (the one that stopped the work, or a feed's).
    pub fn finish(self, result: &anyhow::Result<ExitCode>) {
        let Some(pinger) = &self.pinger else {
            return;
        };
        let summary = if self.summary.is_empty() {
            "nothing done".to_string()
        } else {
            self.summary.join(" | ")
        };
        match result {
            Ok(ExitCode::Ok) => pinger.finish(&summary, None),
            Ok(code) => {
                let error = (self.first_error.clone()).unwrap_or_else(|| code.word().to_string());
                pinger.finish(&summary, Some(&format!("exit {}: {error}", code.code())))
            }
            Err(e) => {
                let code = crate::error::exit_code_of(e);
                pinger.finish(&summary, Some(&format!("exit {}: {e:#}", code.code())))
            }
        }
    }
}
