//! The command line, as DESIGN.md specifies it. Kept in the library so the
//! completion scripts and the man page are generated from the same
//! definition the binary parses.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::state::ItemStatus;

#[derive(Debug, Parser)]
#[command(
    name = "feedsync",
    version,
    about = "Keep external commerce services in step with your catalog: diff exports, send only the changes.",
    propagate_version = true
)]
pub struct Cli {
    /// Config file [default: $FEEDSYNC_CONFIG, then ./feedsync.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Say more (-v: per-feed summaries always; -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented example config, with the Luma sample exports beside it
    Init(InitArgs),
    /// The cron entry point: run every job whose schedule is due now
    Run,
    /// Partial sync: read each feed's source, send what changed
    Sync(SyncArgs),
    /// Full sync of one feed: re-read the source and send every undelivered item
    Resync(ResyncArgs),
    /// Resend `retry` items whose time has come
    Retry(DeliverArgs),
    /// Deliver `pending` items without reading sources (legacy mode's second half)
    Send(DeliverArgs),
    /// Per-feed counts, last runs, health
    Status(StatusArgs),
    /// Per-item detail of one feed
    Items(ItemsArgs),
    /// Run history, newest first
    Runs(RunsArgs),
    /// Write a self-contained HTML status page
    Report(ReportArgs),
    /// Check config, schedules, sources, targets, state file and cron; exit 1 if anything needs fixing
    Doctor,
    /// Copy the state file consistently, even while a run is in progress
    Backup(BackupArgs),
    /// Drop tombstones delivered more than `tombstone_days` ago
    Cleanup,
    /// Run due jobs every minute in-process, until SIGTERM or SIGINT
    Daemon,
    /// Print a shell completion script (the man page comes from the same definition)
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the config [default: where feedsync would look for it]
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Overwrite an existing config (the sample exports are never overwritten)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The HTML file to write
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The copy to write (replaced if it exists; a folder gets the state file's name)
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// The shells DESIGN.md promises completions for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Args)]
pub struct FeedSelection {
    /// Only this feed (repeatable)
    #[arg(long = "feed", value_name = "F")]
    pub feeds: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub select: FeedSelection,
    /// Send nothing and change nothing; print what would be sent
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Let this run pass the mass-delete guard
    #[arg(long)]
    pub allow_deletes: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this feed
    #[arg(long, value_name = "F")]
    pub feed: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ItemsArgs {
    #[arg(long, value_name = "F")]
    pub feed: String,
    /// pending, sent, retry or failed
    #[arg(long, value_name = "S", value_parser = status_parser())]
    pub status: Option<ItemStatus>,
    /// One item, by id as `items` shows it
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub select: FeedSelection,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    #[arg(long, value_name = "F")]
    pub feed: String,
    /// Send exactly these items (ids as `items` shows them), skipping the hash check
    #[arg(long, value_name = "A,B,…", value_delimiter = ',')]
    pub by_ids: Vec<String>,
    /// Send every item the source has, not only the changed ones
    #[arg(long)]
    pub force: bool,
    /// Resend stored data without reading the source (needs keep_data)
    #[arg(long, conflicts_with = "cleanup_feed")]
    pub no_reindex: bool,
    /// Forget the feed's state first (deletions made meanwhile go unnoticed)
    #[arg(long)]
    pub cleanup_feed: bool,
    /// Send nothing and change nothing; print what would be sent
    #[arg(long)]
    pub dry_run: bool,
    /// Items per batch for this run
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

/// `--status`: the statuses by the names `status` and `items` show, so
/// help and errors list them as they are.
fn status_parser() -> impl TypedValueParser<Value = ItemStatus> {
    PossibleValuesParser::new(ItemStatus::ALL.map(ItemStatus::name))
        .try_map(|s| ItemStatus::from_name(&s).ok_or("unknown status"))
}
