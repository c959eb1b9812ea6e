//! The commands: each loads the config, takes the run lock when it writes,
//! opens the state file, runs its job and prints for people or scripts.
//! Errors arrive here typed and leave as DESIGN.md's exit codes.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use crate::cli::{
    Cli, Command, CompletionsArgs, InitArgs, ItemsArgs, ResyncArgs, RunsArgs, StatusArgs, SyncArgs,
};
use crate::clock;
use crate::config::{self, Config, Feed, Secrets};
use crate::error::{self, Error};
use crate::exit_code::ExitCode;
use crate::job::{Job, RunSummary};
use crate::joblog;
use crate::report;
use crate::schedule;
use crate::state::{self, ItemFilter, State};
use crate::sync::{JobReport, Jobs, Plan};
use crate::target::SyncKind;

/// How chatty to be, from `-v`/`-q` and whether stderr is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub verbosity: i8,
    pub tty: bool,
}

impl Output {
    /// Per-feed summaries: on a terminal, or always with `-v`; never under
    /// cron at default verbosity, so a run that went well prints nothing.
    pub fn summaries(&self) -> bool {
        self.verbosity >= 1 || (self.tty && self.verbosity >= 0)
    }

    /// Progress bars: only on a terminal, and not with `-q`.
    pub fn progress(&self) -> bool {
        self.tty && self.verbosity >= 0
    }
}

/// Runs the command line and returns the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let out = Output {
        verbosity: if cli.quiet { -1 } else { cli.verbose as i8 },
        tty: std::io::stderr().is_terminal(),
    };
    init_logging(out.verbosity);
    match dispatch(&cli, out) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            error::exit_code_of(&e)
        }
    }
}

fn init_logging(verbosity: i8) {
    let level = match verbosity {
        ..=-1 => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format(|buf, record| {
        // ureq and rustls log raw wire bytes, credentials included, at
        // trace level; secrets must never reach the logs, whatever RUST_LOG says.
        let target = record.target();
        if record.level() == log::Level::Trace && !target.starts_with(env!("CARGO_CRATE_NAME")) {
            return Ok(());
        }
        let level = record.level().as_str().to_ascii_lowercase();
        writeln!(buf, "feedsync: {level}: {}", record.args())
    });
    let _ = b.try_init();
}

fn dispatch(cli: &Cli, out: Output) -> anyhow::Result<ExitCode> {
    clock::init()?;
    // The commands that need no config.
    match &cli.command {
        Command::Init(args) => return init(cli, args),
        Command::Completions(args) => return completions(args),
        _ => {}
    }
    let config = Config::load(&config::locate(cli.config.as_deref()))?;
    match &cli.command {
        Command::Init(_) | Command::Completions(_) => unreachable!("handled above"),
        Command::Run => run(&config, out),
        Command::Daemon => daemon(&config, out),
        Command::Sync(args) => sync(&config, args, out),
        Command::Resync(args) => resync(&config, args, out),
        Command::Retry(args) => direct(
            &config,
            &args.select.feeds,
            Task::of(Job::Retry),
            args.json,
            out,
        ),
        Command::Send(args) => direct(
            &config,
            &args.select.feeds,
            Task::of(Job::Send),
            args.json,
            out,
        ),
        Command::Cleanup => direct(&config, &[], Task::of(Job::Cleanup), false, out),
        Command::Status(args) => status(&config, args),
        Command::Runs(args) => runs(&config, args),
        Command::Items(args) => items(&config, args),
        Command::Report(args) => report_page(&config, &args.out),
        Command::Doctor => doctor(&config),
        Command::Backup(args) => backup(&config, &args.dest, out),
    }
}

/// `init`: the config goes where feedsync will look for it (PATH, else
/// `--config`, `$FEEDSYNC_CONFIG`, `./feedsync.toml`), so `feedsync init &&
/// feedsync sync` works as typed.
fn init(cli: &Cli, args: &InitArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.path {
        Some(p) => p.clone(),
        None => config::locate(cli.config.as_deref()),
    };
    let written = crate::init::write(&path, args.force)?;
    for p in &written.samples {
        eprintln!("wrote {}", p.display());
    }
    eprintln!(
        "wrote {}; try `feedsync{} sync -v`",
        written.config.display(),
        if args.path.is_some() || cli.config.is_some() {
            format!(" --config {}", written.config.display())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::Ok)
}

fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(
        clap_complete::Shell::from(args.shell),
        &mut cmd,
        "feedsync",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::Ok)
}

/// A job, as `run`, `daemon` or a direct command starts it: its kind and,
/// for `sync` and `resync`, how to run it.
struct Task {
    job: Job,
    plan: Plan,
}

impl Task {
    /// The job as `run` starts it, or a direct command without options.
    fn of(job: Job) -> Task {
        let plan = Plan {
            full: job == Job::Resync,
            ..Plan::default()
        };
        Task { job, plan }
    }

    fn dry_run(&self) -> bool {
        self.plan.dry_run
    }

    /// Runs the job; every job but a dry run leaves exactly one run record.
    fn execute(
        &self,
        config: &Config,
        state: &mut State,
        secrets: &Secrets,
        feeds: &[&Feed],
        out: Output,
    ) -> anyhow::Result<JobReport> {
        let work = |state: &mut State| {
            let mut jobs = Jobs::new(config, state, secrets.clone()).with_progress(out.progress());
            match self.job {
                Job::Sync | Job::Resync => jobs.collect_and_deliver(feeds, &self.plan),
                Job::Send => jobs.deliver_stored(feeds, SyncKind::Send),
                Job::Retry => jobs.deliver_stored(feeds, SyncKind::Retry),
                Job::Cleanup => jobs.cleanup(feeds),
            }
        };
        if self.dry_run() {
            return Ok(work(state)?);
        }
        let run = state.start_run(self.job, clock::now_secs())?;
        let started = std::time::Instant::now();
        let result = work(state);
        let (code, summary) = match &result {
            Ok(r) => (r.exit, r.run_summary()),
            // Stopped as a whole: what it sent before is not known here.
            Err(e) => (
                e.exit_code(),
                RunSummary {
                    text: e.to_string(),
                    sent: None,
                },
            ),
        };
        if let Some(path) = &config.log_file {
            let logged = match &result {
                Ok(r) => joblog::append(path, self.job, r),
                Err(e) => {
                    let names: Vec<&str> = feeds.iter().map(|f| f.name.as_str()).collect();
                    let ms = started.elapsed().as_millis() as u64;
                    joblog::append_failed(path, self.job, &names, code, &e.to_string(), ms)
                }
            };
            if let Err(e) = logged {
                log::warn!("cannot write the log file {}: {e}", path.display());
            }
        }
        state.finish_run(run, clock::now_secs(), code.code(), &summary.to_stored())?;
        Ok(result?)
    }
}

/// Holds the run lock and the state file for a job that writes.
fn open_for_writing(config: &Config) -> anyhow::Result<(state::RunLock, State)> {
    let lock = state::lock(&config.state)?;
    let state = State::open(&config.state)?;
    Ok((lock, state))
}

/// A job started by its own command: `sync`, `resync`, `send`, `retry`,
/// `cleanup`.
fn direct(
    config: &Config,
    feed_names: &[String],
    task: Task,
    json: bool,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let feeds = config.select_feeds(feed_names)?;
    if matches!(task.job, Job::Sync | Job::Resync) {
        crate::source::check_environment(feeds.iter().copied())?;
    }
    // Only jobs that contact the target need the secrets; a dry run does not.
    let contacts_target = task.job != Job::Cleanup && !task.dry_run();
    let secrets = if contacts_target {
        config::read_secrets(&config.secrets)?
    } else {
        Secrets::default()
    };
    let (_lock, mut state) = open_for_writing(config)?;
    let mut code = ExitCode::Ok;
    if contacts_target {
        let allow_deletes = task.plan.allow_deletes;
        code = resend_after_restore(config, &mut state, &secrets, out, allow_deletes)?;
    }
    let report = task.execute(config, &mut state, &secrets, &feeds, out)?;
    print_job(&report, json, task.dry_run(), out)?;
    Ok(code.then(report.exit))
}

/// A state file restored from a `backup` may remember less than the target
/// holds: versions sent after the backup was taken, even ones since changed
/// back. So after a restore each feed is resent once — a forced full sync,
/// whose batches carry new Idempotency-Keys — and the delivered deletions
/// too. The backup's mark becomes one mark per feed, each dropped once that
/// feed's source was read, so a feed that cannot be read yet does not make
/// the others resend again.
fn resend_after_restore(
    config: &Config,
    state: &mut State,
    secrets: &Secrets,
    out: Output,
    allow_deletes: bool,
) -> anyhow::Result<ExitCode> {
    let mark = |feed: &str| format!("{RESEND_MARK}{feed}");
    if let Some(taken) = state.meta(state::BACKUP_TAKEN_AT)? {
        let taken = taken.parse().map(clock::rfc3339).unwrap_or(taken);
        log::warn!(
            "{} was restored from a backup taken at {taken}; resending every item once",
            config.state.display()
        );
        state.requeue_tombstones()?;
        for feed in &config.feeds {
            state.set_meta(&mark(&feed.name), &taken)?;
        }
        state.clear_meta(state::BACKUP_TAKEN_AT)?;
    }
    let mut feeds: Vec<&Feed> = Vec::new();
    for feed in &config.feeds {
        if state.meta(&mark(&feed.name))?.is_some() {
            feeds.push(feed);
        }
    }
    if feeds.is_empty() {
        return Ok(ExitCode::Ok);
    }
    let task = Task {
        job: Job::Resync,
        plan: Plan {
            full: true,
            force: true,
            allow_deletes,
            ..Plan::default()
        },
    };
    let report = task.execute(config, state, secrets, &feeds, out)?;
    print_job(&report, false, false, out)?;
    for f in &report.feeds {
        // Delivery may still fail (those items stay queued); reading may not.
        if matches!(
            f.exit,
            ExitCode::Ok | ExitCode::ItemsFailed | ExitCode::TargetRefused
        ) {
            state.clear_meta(&mark(&f.name))?;
        }
    }
    Ok(report.exit)
}

/// Meta rows `<this><feed>`: the feed still owes its resend after a restore.
const RESEND_MARK: &str = "resend_after_restore:";

/// `backup DEST`: needs no run lock, so it is safe at any time.
fn backup(config: &Config, dest: &Path, out: Output) -> anyhow::Result<ExitCode> {
    let dest = if dest.is_dir() {
        dest.join(
            config
                .state
                .file_name()
                .unwrap_or("feedsync.sqlite".as_ref()),
        )
    } else {
        dest.to_path_buf()
    };
    if let (Ok(a), Ok(b)) = (dest.canonicalize(), config.state.canonicalize())
        && a == b
    {
        return Err(Error::config(format!(
            "{} is the state file itself; back it up somewhere else",
            dest.display()
        ))
        .into());
    }
    let state = State::open_existing(&config.state)?;
    state.backup_to(&dest, clock::now_secs())?;
    if out.summaries() {
        eprintln!("backed up {} to {}", config.state.display(), dest.display());
    }
    Ok(ExitCode::Ok)
}

fn sync(config: &Config, args: &SyncArgs, out: Output) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        dry_run: args.dry_run,
        allow_deletes: args.allow_deletes,
        list_items: args.dry_run && out.verbosity >= 1,
        ..Plan::default()
    };
    let task = Task {
        job: Job::Sync,
        plan,
    };
    direct(config, &args.select.feeds, task, args.json, out)
}

fn resync(config: &Config, args: &ResyncArgs, out: Output) -> anyhow::Result<ExitCode> {
    let feed = config.select_feeds(std::slice::from_ref(&args.feed))?[0];
    if args.no_reindex && !feed.keep_data {
        return Err(Error::config(format!(
            "resync --no-reindex needs stored data, and feed `{}` does not keep it; \
             set keep_data = true (the default for legacy feeds), or resync without --no-reindex",
            feed.name
        ))
        .into());
    }
    let plan = Plan {
        dry_run: args.dry_run,
        list_items: args.dry_run && out.verbosity >= 1,
        full: true,
        force: args.force,
        ids: (!args.by_ids.is_empty()).then(|| args.by_ids.iter().cloned().collect()),
        no_reindex: args.no_reindex,
        cleanup: args.cleanup_feed,
        batch_size: args.batch_size.map(|n| n as usize),
        ..Plan::default()
    };
    let task = Task {
        job: Job::Resync,
        plan,
    };
    direct(
        config,
        std::slice::from_ref(&args.feed),
        task,
        args.json,
        out,
    )
}

/// The cron entry point: runs the jobs whose schedule is due, in order.
fn run(config: &Config, out: Output) -> anyhow::Result<ExitCode> {
    let secrets = config::read_secrets(&config.secrets)?;
    crate::source::check_environment(&config.feeds)?;
    match tick(config, &secrets, out) {
        // Cron starts `run` every minute; an overlap is normal, not news.
        Err(e) if error::is_locked(&e) => Ok(ExitCode::Locked),
        other => other,
    }
}

/// One look at the schedule: take the lock, find the due jobs, run them.
fn tick(config: &Config, secrets: &Secrets, out: Output) -> anyhow::Result<ExitCode> {
    let (_lock, mut state) = open_for_writing(config)?;
    let mut code = resend_after_restore(config, &mut state, secrets, out, false)?;
    let now = clock::now();
    let last = state
        .meta(schedule::SCHEDULE_CHECKED)?
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
    let due = schedule::due(config.schedule.iter().map(|s| (s.job, &s.cron)), last, now);
    let checked = schedule::checked(last, now);
    state.set_meta(schedule::SCHEDULE_CHECKED, &checked.timestamp().to_string())?;
    let feeds: Vec<&Feed> = config.feeds.iter().collect();
    let worked = !due.is_empty();
    for job in due {
        if crate::stop::requested() {
            break;
        }
        let report = Task::of(job).execute(config, &mut state, secrets, &feeds, out)?;
        print_job(&report, false, false, out)?;
        code.absorb(report.exit);
    }
    // Only after work: a `run` with nothing due stays a few milliseconds.
    if worked
        && let Some(page) = &config.report_file
        && let Err(e) = crate::html::write(config, &state, page, clock::now_secs())
    {
        log::warn!("status page: {e}");
    }
    Ok(code)
}

/// `run` every minute in-process until SIGTERM or SIGINT, which let the
/// batch in flight finish.
fn daemon(config: &Config, out: Output) -> anyhow::Result<ExitCode> {
    let secrets = config::read_secrets(&config.secrets)?;
    crate::source::check_environment(&config.feeds)?;
    crate::stop::install().context("installing signal handlers")?;
    log::info!("daemon started; running due jobs every minute");
    while !crate::stop::requested() {
        match tick(config, &secrets, out) {
            Ok(_) => {}
            Err(e) if error::is_locked(&e) => {
                log::debug!("another run holds the lock; skipping this minute");
            }
            Err(e) => log::error!("{e:#}"),
        }
        // Sleep to the next minute, waking often enough to notice a signal.
        let wait = 60 - clock::wall_secs() % 60;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(wait as u64);
        while !crate::stop::requested() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    log::info!("daemon stopped");
    Ok(ExitCode::Ok)
}

/// Prints a job's outcome: the JSON document, or per-feed summaries when
/// they are wanted, and each feed's error always.
fn print_job(report: &JobReport, json: bool, dry_run: bool, out: Output) -> anyhow::Result<()> {
    for f in &report.feeds {
        if let Some(e) = &f.error {
            log::error!("{}: {e}", f.name);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else if dry_run {
        for f in &report.feeds {
            println!("{}", f.line(true));
        }
    } else if out.summaries() {
        for f in &report.feeds {
            eprintln!("{}", f.line(false));
        }
    }
    Ok(())
}

/// The state for a command that only looks: read-only, and readable on a
/// full disk (see `State::open_read_only`).
fn look(config: &Config) -> anyhow::Result<State> {
    let state = State::open_read_only(&config.state)?;
    state.check_schema()?;
    Ok(state)
}

fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let state = look(config)?;
    let s = report::status(config, &state, args.feed.as_deref())?;
    show(args.json, &s, || report::status_text(&s))
}

/// Prints a view of the state: its JSON document, or its text for people.
fn show(
    json: bool,
    doc: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
    } else {
        print!("{}", text());
    }
    Ok(ExitCode::Ok)
}

fn items(config: &Config, args: &ItemsArgs) -> anyhow::Result<ExitCode> {
    config.select_feeds(std::slice::from_ref(&args.feed))?;
    let state = look(config)?;
    let filter = ItemFilter {
        status: args.status,
        id: args.id.clone(),
        limit: args.limit,
    };
    let rows = report::items(&state, &args.feed, &filter)
        .with_context(|| format!("listing items of {}", args.feed))?;
    show(args.json, &report::items_json(&rows), || {
        report::items_text(&rows)
    })
}

fn runs(config: &Config, args: &RunsArgs) -> anyhow::Result<ExitCode> {
    let state = look(config)?;
    let runs = state.runs(args.limit)?;
    show(args.json, &report::runs_json(&runs), || {
        report::runs_text(&runs)
    })
}

/// `report --out`: reads the state without the run lock, like `status`.
fn report_page(config: &Config, out: &Path) -> anyhow::Result<ExitCode> {
    let state = look(config)?;
    crate::html::write(config, &state, out, clock::now_secs())?;
    Ok(ExitCode::Ok)
}

/// `doctor`: 0 when all is well, 1 when something needs fixing.
fn doctor(config: &Config) -> anyhow::Result<ExitCode> {
    let secrets = config::read_secrets(&config.secrets)?;
    crate::source::check_environment(&config.feeds)?;
    let findings = crate::doctor::check(config, &secrets);
    print!("{}", findings.text());
    // DESIGN.md gives doctor's "something needs fixing" the number 1.
    Ok(if findings.problems() == 0 {
        ExitCode::Ok
    } else {
        ExitCode::ItemsFailed
    })
}
