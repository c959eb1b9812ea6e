//! `feedsync doctor`: checks a setup the way a shop owner would want it
//! checked before trusting it to cron — every source readable, every target
//! answering and accepting our credentials, the state file sound and
//! writable, cron actually starting `run`, no run stuck on the lock, no
//! items stuck in `failed`, no `retry` item waiting for a clock that was
//! fast. Each problem comes with a one-line fix.
//!
//! Doctor changes nothing: each target kind checks itself with requests
//! that write nothing (a webhook gets an empty `probe` batch), it writes no
//! batch to a `file:` target, creates no state file and migrates none.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::clock;
use crate::config::{Config, Endpoint, Feed, FeedSecrets};
use crate::error::Error;
use crate::schedule::SCHEDULE_CHECKED;
use crate::source::{Broken, Health, Source};
use crate::state::{self, State};
use crate::target::{self, http::Client};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing, nothing to fix (a setup that has never run, say).
    Note,
    /// Needs fixing: doctor exits 1.
    Problem,
}

#[derive(Debug)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    /// One line saying what to do (problems always have one).
    pub fix: Option<String>,
}

/// All of doctor's findings, in the order they were checked.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    fn ok(&mut self, what: impl Into<String>) {
        self.0.push(Finding {
            level: Level::Ok,
            what: what.into(),
            fix: None,
        });
    }

    fn note(&mut self, what: impl Into<String>, fix: Option<String>) {
        self.0.push(Finding {
            level: Level::Note,
            what: what.into(),
            fix,
        });
    }

    fn problem(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Finding {
            level: Level::Problem,
            what: what.into(),
            fix: Some(fix.into()),
        });
    }

    pub fn problems(&self) -> usize {
        self.0.iter().filter(|f| f.level == Level::Problem).count()
    }

    /// The report as printed: one line per finding, fixes indented below.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let tag = match f.level {
                Level::Ok => "ok",
                Level::Note => "note",
                Level::Problem => "PROBLEM",
            };
            out.push_str(&format!("{tag:<8} {}\n", f.what));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("{:<8} fix: {fix}\n", ""));
            }
        }
        match self.problems() {
            0 => out.push_str("all well\n"),
            1 => out.push_str("1 problem needs fixing\n"),
            n => out.push_str(&format!("{n} problems need fixing\n")),
        }
        out
    }
}

/// The smallest age of the last `run` that means cron has stopped.
const MIN_STALE_SECS: i64 = 600;

/// How old the last `run` may be before doctor calls cron dead: twice the
/// longest gap of the sync schedule, and at least 10 minutes (cron starts
/// `run` every minute; a slow run or a reboot may skip a few).
pub fn stale_after(config: &Config) -> i64 {
    let gap = config
        .schedule
        .iter()
        .find(|s| s.job == crate::job::Job::Sync)
        .map_or(0, |s| s.cron.longest_gap(clock::now()).num_seconds());
    (2 * gap).max(MIN_STALE_SECS)
}

/// Runs every check.
pub fn check(config: &Config, secrets: &FeedSecrets) -> Findings {
    let mut f = Findings::default();
    f.ok(format!(
        "config {}: {} feed{}",
        config.path.display(),
        config.feeds.len(),
        if config.feeds.len() == 1 { "" } else { "s" }
    ));
    let lines: Vec<String> = config
        .schedule
        .iter()
        .map(|s| format!("{} \"{}\"", s.job, s.line))
        .collect();
    f.ok(format!("schedule: {}", lines.join(", ")));
    let agent = crate::target::agent();
    for feed in &config.feeds {
        check_source(&mut f, feed, config, &agent);
    }
    for feed in &config.feeds {
        check_target(&mut f, feed, secrets, &agent);
    }
    check_state(&mut f, config);
    check_ping(&mut f, config);
    f
}

/// `[notify]`: the heartbeat URL answers a `HEAD` (a probe that does not
/// count as a ping). The URL is a secret: findings name its variable.
fn check_ping(f: &mut Findings, config: &Config) {
    use crate::monitor::ping;
    let Some(var) = config.ping_url_env.as_deref() else {
        return;
    };
    let fix = format!(
        "set {var} to the check's ping URL (e.g. https://hc-ping.com/<uuid>) in the environment cron runs feedsync with"
    );
    match ping::read_url(var) {
        Err(e) => f.problem(format!("heartbeat pings: {e}"), fix),
        Ok(url) => match ping::Pinger::new(var, url).probe() {
            Ok(()) => f.ok(format!("heartbeat URL in {var} answers")),
            Err(e) => f.problem(
                format!("heartbeat URL in {var} does not answer: {e}"),
                format!("check the URL in {var} and that this host reaches it; {fix}"),
            ),
        },
    }
}

/// Checks a source the way its kind says (by default, reads its first
/// record; a command or query is stopped after it).
fn check_source(f: &mut Findings, feed: &Feed, config: &Config, agent: &ureq::Agent) {
    let what = feed.source.describe();
    let cx = crate::source::Context {
        agent,
        validators: None,
        workdir: config.dir(),
        timeout: config.source_timeout,
    };
    match Source::check(feed, &cx, config.max_record_bytes) {
        Ok(Health::Readable) => f.ok(format!("source {}: {what} is readable", feed.name)),
        Ok(Health::Empty) => f.note(
            format!("source {}: {what} is empty", feed.name),
            Some("an empty export deletes every item; the mass-delete guard will stop it".into()),
        ),
        Err(Broken { error, fix }) => f.problem(format!("source {}: {error}", feed.name), fix),
    }
}

fn check_target(f: &mut Findings, feed: &Feed, secrets: &FeedSecrets, agent: &ureq::Agent) {
    let name = &feed.name;
    match &feed.target.endpoint {
        Endpoint::File(path) => match writable_file(path) {
            Ok(()) => f.ok(format!("target {name}: {} is writable", path.display())),
            Err(e) => f.problem(
                format!("target {name}: cannot write {}: {e}", path.display()),
                format!(
                    "make {} (or its folder) writable for the user running feedsync",
                    path.display()
                ),
            ),
        },
        Endpoint::Http(url) => {
            // Each kind checks itself (`Kind::probe`, `Kind::health`).
            let client = Client::new(url, &feed.target, &secrets.of(name), agent.clone());
            for health in client.probe(name) {
                match health {
                    target::Health::Ok(what) => f.ok(format!("target {name}: {what}")),
                    target::Health::Note { what, fix } => {
                        f.note(format!("target {name}: {what}"), fix)
                    }
                    target::Health::Problem { what, fix } => {
                        f.problem(format!("target {name}: {what}"), fix)
                    }
                }
            }
        }
    }
}

/// Whether a batch could be appended to `path`, without writing one.
fn writable_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        OpenOptions::new().append(true).open(path)?;
        return Ok(());
    }
    writable_dir(&nearest_existing(path))
}

/// The closest folder above `path` that exists (feedsync creates the rest).
fn nearest_existing(path: &Path) -> PathBuf {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            return PathBuf::from(".");
        }
        if d.exists() {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    PathBuf::from("/")
}

/// Creates and removes a scratch file: permission bits alone do not tell
/// (root, read-only mounts, ACLs).
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".feedsync-doctor-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let written = file.write_all(b"probe");
    let _ = std::fs::remove_file(&probe);
    written
}

fn check_state(f: &mut Findings, config: &Config) {
    let path = &config.state;
    let shown = path.display();
    if !path.exists() {
        match writable_dir(&nearest_existing(path)) {
            Ok(()) => f.note(
                format!("no state file yet at {shown}; the first run creates it"),
                None,
            ),
            Err(e) => f.problem(
                format!("state file {shown} cannot be created: {e}"),
                "make its folder writable for the user running feedsync, or set `state` elsewhere",
            ),
        }
        check_lock(f, config, None);
        return;
    }
    let restore = format!(
        "restore the latest backup over {shown} (README: backup and restore), or move it away to start over (everything is sent again)"
    );
    // On a connection of its own, closed before the look below, which
    // may hold the file while it reads (see `State::open_read_only`).
    let writable = State::check_writable(path);
    let state = match State::open_read_only(path) {
        Ok(s) => s,
        Err(e) => {
            f.problem(format!("{e}"), restore);
            return;
        }
    };
    // quick_check reads every page: about 150 ms at a million items, ten
    // times that at ten million, against doctor's 50 ms. A larger file is
    // only opened and its schema read here; `feedsync backup` runs
    // quick_check on every copy it makes, which reads the same pages.
    let size = state.size_bytes().unwrap_or(0);
    if size > FULL_CHECK_BYTES {
        f.ok(format!(
            "state file {shown} opens ({} MB; its pages are checked by `feedsync backup`, which runs quick_check on each copy)",
            size >> 20
        ));
    } else {
        match state.quick_check() {
            Ok(found) if found.is_empty() => f.ok(format!("state file {shown} passes quick_check")),
            Ok(found) => {
                let mut found = found;
                found.truncate(3);
                f.problem(
                    format!("state file {shown} is corrupt: {}", found.join("; ")),
                    restore,
                );
                return;
            }
            Err(e) => {
                f.problem(format!("state file {shown} is corrupt: {e}"), restore);
                return;
            }
        }
    }
    match writable {
        Ok(()) => {}
        // A run in its write transaction (a long collect) holds SQLite's
        // write lock: busy is not broken.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => f.note(
            format!("state file {shown} is busy with a run's write; writability not checked"),
            None,
        ),
        Err(e) => match state::full_disk(path) {
            Some(why) => f.problem(
                format!("state file {shown} cannot be written: {e}: {why}"),
                "free space there: runs exit 5 until they can write the state file and its -wal and -shm beside it",
            ),
            None => f.problem(
                format!("state file {shown} cannot be written: {e}"),
                format!("give the user running feedsync write access to {shown} and its folder"),
            ),
        },
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        f.note(
            format!(
                "state file {shown} is readable by other users (mode {:o})",
                meta.permissions().mode() & 0o777
            ),
            Some(format!("chmod 600 {shown}")),
        );
    }
    let version = state.user_version().unwrap_or(0);
    let known = state::schema_version();
    if version > known {
        f.problem(
            format!("state file {shown} was written by a newer feedsync (schema {version}, this one knows {known})"),
            "install the newer feedsync again, or restore a backup taken before the upgrade",
        );
        return;
    }
    if version < known {
        f.note(
            format!("state file {shown} has schema {version}; the next run upgrades it to {known}"),
            Some(format!(
                "back it up first: feedsync backup {shown}.before-upgrade"
            )),
        );
        check_lock(f, config, None);
        return;
    }
    check_cron(f, config, &state);
    check_lock(f, config, Some(&state));
    check_backlog(f, config, &state);
    check_retry_waits(f, config, &state);
}

fn ago(secs: i64) -> String {
    if secs < 120 {
        format!("{secs} s")
    } else if secs < 7200 {
        format!("{} min", secs / 60)
    } else if secs < 172_800 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} days", secs / 86_400)
    }
}

fn check_cron(f: &mut Findings, config: &Config, state: &State) {
    let dir = config.dir().to_path_buf();
    let dir = dir.canonicalize().unwrap_or(dir);
    let crontab = format!(
        "`* * * * * cd {} && feedsync run` in the crontab (or `feedsync daemon` under systemd)",
        dir.display()
    );
    let last = state
        .meta(SCHEDULE_CHECKED)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<i64>().ok());
    let Some(last) = last else {
        f.note(
            "`feedsync run` has never run with this state file",
            Some(format!("for scheduled syncs, add {crontab}")),
        );
        return;
    };
    let age = clock::now_secs() - last;
    let limit = stale_after(config);
    if age > limit {
        f.problem(
            format!(
                "the last `feedsync run` was {} ago ({}), more than {}: cron is not starting it",
                ago(age),
                clock::rfc3339(last),
                ago(limit)
            ),
            format!(
                "check {crontab}, that the cron service runs, and its mail or syslog for errors"
            ),
        );
    } else {
        f.ok(format!("last `feedsync run` {} ago", ago(age.max(0))));
    }
}

/// The run lock: free, held by a run in progress, or held longer than any
/// source may take (`source_timeout_secs`): a stuck run, which makes every
/// cron minute exit 75 silently.
fn check_lock(f: &mut Findings, config: &Config, state: Option<&State>) {
    let lock = {
        let mut name = config.state.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    };
    // No lock file: nobody holds it, and doctor creates none.
    if !lock.exists() {
        f.ok("run lock free");
        return;
    }
    let shown = lock.display();
    match state::probe_lock(&config.state) {
        Ok(()) => f.ok("run lock free"),
        Err(Error::Locked(_)) => {
            let holder = state::lock_holder(&config.state);
            let run = state.and_then(|s| s.unfinished_run().ok().flatten());
            let started = holder.map(|h| h.since).or(run.as_ref().map(|r| r.1));
            let job = run.map_or_else(|| "a run".to_string(), |(job, _)| format!("a `{job}` run"));
            let (who, fix) = match holder {
                Some(h) => (
                    format!("{job} (pid {})", h.pid),
                    format!(
                        "`ps -p {pid} -o pid,etime,args` shows it; unless it is still delivering a large backlog, stop it with `kill {pid}` (a killed run frees the lock)",
                        pid = h.pid
                    ),
                ),
                None => (
                    job,
                    format!(
                        "if no feedsync should be running, `fuser -v {shown}` shows who holds it; stop that process (a killed run frees the lock)"
                    ),
                ),
            };
            let limit = config.source_timeout.as_secs() as i64;
            let now = clock::now_secs();
            match started {
                Some(since) if now - since <= limit => f.note(
                    format!("{who} is in progress (started {} ago)", ago((now - since).max(0))),
                    None,
                ),
                Some(since) => f.problem(
                    format!(
                        "the run lock {shown} is held by {who} since {} ({} ago), longer than any source may take (`source_timeout_secs` = {limit} s): the run is stuck, and every `feedsync run` meanwhile exits 75",
                        clock::rfc3339(since),
                        ago(now - since)
                    ),
                    fix,
                ),
                None => f.problem(
                    format!("the run lock {shown} is held, but no run is recorded as in progress"),
                    fix,
                ),
            }
        }
        Err(e) => f.problem(
            format!("{e}"),
            format!("give the user running feedsync write access to {shown}"),
        ),
    }
}

/// Per feed: what waits, what will be retried, what needs attention.
fn check_backlog(f: &mut Findings, config: &Config, state: &State) {
    for feed in &config.feeds {
        let name = &feed.name;
        // A status this build does not know fails the counts: a problem
        // to name, like an unreadable feed row, not a feed to skip.
        let found = state.feed_info(name).and_then(|info| match info {
            Some(i) => Ok(Some((state.counts(i.id)?, i))),
            None => Ok(None),
        });
        let (c, info) = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                f.note(format!("feed {name} has not run yet"), None);
                continue;
            }
            Err(e) => {
                f.problem(
                    format!("feed {name}: {e}"),
                    "restore the latest backup (README: backup and restore)",
                );
                continue;
            }
        };
        let last = info
            .last_success_at
            .map_or_else(|| "never".to_string(), clock::rfc3339);
        f.ok(format!(
            "feed {name}: {} live, {} awaiting submission, {} will retry, {} need attention; last success {last}",
            c.live, c.pending, c.retry, c.failed
        ));
        if c.failed > 0 {
            f.problem(
                format!("feed {name}: {} item{} failed and need attention", c.failed, if c.failed == 1 { "" } else { "s" }),
                format!("`feedsync items --feed {name} --status failed` shows why; fix the data (a changed item is sent again) or `feedsync resync --feed {name}`"),
            );
        }
        if let Some(e) = &info.last_error {
            f.note(format!("feed {name}: its last run ended with: {e}"), None);
        }
    }
}

/// Per feed: `retry` items that failed at a time the clock has not reached
/// (it was fast then, or has been set back), and so are due further ahead
/// than any wait feedsync chooses. The next `retry` counts their wait from
/// now; until then they would wait for the old clock.
fn check_retry_waits(f: &mut Findings, config: &Config, state: &State) {
    let now = clock::now_secs();
    for feed in &config.feeds {
        let name = &feed.name;
        let Ok(Some(info)) = state.feed_info(name) else {
            continue;
        };
        let max = feed.target.retry_max_secs as i64;
        let Ok(backlog) = state::retry_backlog(state.conn(), info.id, now, max) else {
            continue;
        };
        if backlog.ahead == 0 {
            continue;
        }
        let n = backlog.ahead;
        f.problem(
            format!(
                "feed {name}: {n} retry item{} due as late as {}, further ahead than retry_max_secs or a Retry-After allows: {} failed while the clock was ahead of what it reads now",
                if n == 1 { " is" } else { "s are" },
                backlog.ahead_due.map_or_else(|| "-".to_string(), clock::rfc3339),
                if n == 1 { "it" } else { "they" },
            ),
            format!(
                "run `feedsync retry --feed {name}` (or let cron's `feedsync run` reach its retry time): it counts their wait again from now"
            ),
        );
    }
}

/// The largest state file `doctor` reads whole (quick_check): about
/// 130,000 items, checked in well under its 50 ms.
const FULL_CHECK_BYTES: u64 = 16 << 20;
