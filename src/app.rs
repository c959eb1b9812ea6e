//! The commands: each loads the config, takes the run lock when it writes,
//! opens the state file, runs its job and prints for people or scripts.
//! Errors arrive here typed and leave as DESIGN.md's exit codes.

use std::io::{IsTerminal, Write};

use anyhow::Context;

use crate::cli::{Cli, Command, DeliverArgs, ItemsArgs, RunsArgs, StatusArgs, SyncArgs};
use crate::clock;
use crate::config::{self, Config, Secrets};
use crate::error::{Error, exit};
use crate::report;
use crate::state::{self, ItemFilter, State};
use crate::sync::{JobReport, Jobs, SyncOptions};
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
}

/// Runs the command line and returns the exit code.
pub fn main(cli: Cli) -> u8 {
    let out = Output {
        verbosity: if cli.quiet { -1 } else { cli.verbose as i8 },
        tty: std::io::stderr().is_terminal(),
    };
    init_logging(out.verbosity);
    match dispatch(&cli, out) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<Error>()
                .map_or(exit::ITEMS_FAILED, Error::exit_code);
            log::error!("{e:#}");
            code
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

fn dispatch(cli: &Cli, out: Output) -> anyhow::Result<u8> {
    clock::init()?;
    let config = Config::load(&config::locate(cli.config.as_deref()))?;
    match &cli.command {
        Command::Sync(args) => sync(&config, args, out),
        Command::Retry(args) => deliver(&config, args, SyncKind::Retry, out),
        Command::Send(args) => deliver(&config, args, SyncKind::Send, out),
        Command::Status(args) => status(&config, args),
        Command::Runs(args) => runs(&config, args),
        Command::Items(args) => items(&config, args),
    }
}

/// Holds the run lock and the state file for a job that writes.
fn open_for_writing(config: &Config) -> anyhow::Result<(state::RunLock, State)> {
    let lock = state::lock(&config.state)?;
    let state = State::open(&config.state)?;
    Ok((lock, state))
}

/// Runs a job under a run record, so every job leaves exactly one.
fn recorded(
    state: &mut State,
    job: &str,
    work: impl FnOnce(&mut State) -> crate::error::Result<JobReport>,
) -> anyhow::Result<JobReport> {
    let run = state.start_run(job, clock::now_secs())?;
    let result = work(state);
    let (code, summary) = match &result {
        Ok(r) => (r.exit, r.summary()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    state.finish_run(run, clock::now_secs(), code, &summary)?;
    Ok(result?)
}

fn sync(config: &Config, args: &SyncArgs, out: Output) -> anyhow::Result<u8> {
    let feeds = config.select_feeds(&args.select.feeds)?;
    // A dry run contacts no target, so it needs no secrets.
    let secrets = if args.dry_run {
        Secrets::default()
    } else {
        config::read_secrets(&config.secrets)?
    };
    let (_lock, mut state) = open_for_writing(config)?;
    let opts = SyncOptions {
        dry_run: args.dry_run,
        allow_deletes: args.allow_deletes,
        list_items: args.dry_run && out.verbosity >= 1,
    };
    let report = if args.dry_run {
        Jobs::new(config, &mut state, secrets).sync(&feeds, &opts)?
    } else {
        recorded(&mut state, "sync", |state| {
            Jobs::new(config, state, secrets).sync(&feeds, &opts)
        })?
    };
    print_job(&report, args.json, args.dry_run, out)?;
    Ok(report.exit)
}

fn deliver(config: &Config, args: &DeliverArgs, kind: SyncKind, out: Output) -> anyhow::Result<u8> {
    let feeds = config.select_feeds(&args.select.feeds)?;
    let secrets = config::read_secrets(&config.secrets)?;
    let (_lock, mut state) = open_for_writing(config)?;
    let report = recorded(&mut state, kind.as_str(), |state| {
        Jobs::new(config, state, secrets).deliver_stored(&feeds, kind)
    })?;
    print_job(&report, args.json, false, out)?;
    Ok(report.exit)
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

fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<u8> {
    let state = State::open_or_empty(&config.state)?;
    let s = report::status(config, &state, args.feed.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", report::status_text(&s));
    }
    Ok(exit::OK)
}

fn items(config: &Config, args: &ItemsArgs) -> anyhow::Result<u8> {
    config.select_feeds(std::slice::from_ref(&args.feed))?;
    let state = State::open_or_empty(&config.state)?;
    let filter = ItemFilter {
        status: args.status.clone(),
        id: args.id.clone(),
        limit: args.limit,
    };
    let rows = report::items(&state, &args.feed, &filter)
        .with_context(|| format!("listing items of {}", args.feed))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::items_json(&rows))?
        );
    } else {
        print!("{}", report::items_text(&rows));
    }
    Ok(exit::OK)
}

fn runs(config: &Config, args: &RunsArgs) -> anyhow::Result<u8> {
    let state = State::open_or_empty(&config.state)?;
    let runs = state.runs(args.limit)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::runs_json(&runs))?
        );
    } else {
        print!("{}", report::runs_text(&runs));
    }
    Ok(exit::OK)
}
