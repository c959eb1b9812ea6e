//! The config file: parsed strictly (unknown keys and out-of-range values are
//! errors that name the key and the file), then resolved into one settings
//! value per feed, so the rest of the program never sees defaults or
//! `[target]` inheritance.
//!
//! Three steps, one file each, as ripgrep splits raw flags from resolved
//! settings: `raw` is the file as written (serde structs and defaults),
//! `resolve` checks it and turns it into the types here, and `secrets`
//! names the environment variables whose values only some commands read.
//! This file holds what the rest of the program uses.

mod raw;
mod resolve;
mod secrets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::secrets::{SecretNames, Secrets, read_secrets};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::schedule::Cron;

/// Where the config comes from: `--config`, then `$FEEDSYNC_CONFIG`, then
/// `./feedsync.toml`.
pub fn locate(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("FEEDSYNC_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("feedsync.toml"),
    }
}

/// The folder a path is in, and `.` where `Path::parent` names none (`""`
/// for a bare file name, `None` for a root): the folder to join relative
/// paths to or to create.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A source's data format (`format = …`, or told from the file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Json,
    Csv,
}

/// When a feed's changes are sent: by `sync` itself (immediate) or by the
/// separate `send` job (legacy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Immediate,
    Legacy,
}

impl Mode {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Immediate => "immediate",
            Mode::Legacy => "legacy",
        }
    }
}

/// Where a feed's items come from: a file, a URL, a command or a query.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    File(PathBuf),
    Http(String),
    Command(String),
    Sqlite {
        db: PathBuf,
        query: String,
    },
    /// A MySQL/MariaDB or PostgreSQL query; the URL (it holds the
    /// password) is in the environment variable `url_env`, read only by
    /// the commands that read sources.
    Database {
        url_env: String,
        query: String,
        json_columns: Vec<String>,
    },
}

impl SourceSpec {
    /// How errors and logs name this source.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::File(p) => p.display().to_string(),
            SourceSpec::Http(u) => u.clone(),
            SourceSpec::Command(c) => format!("command `{c}`"),
            SourceSpec::Sqlite { db, .. } => format!("sqlite {}", db.display()),
            SourceSpec::Database { url_env, .. } => format!("the database in ${url_env}"),
        }
    }
}

/// The mass-delete guard's limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDeletes {
    Count(u64),
    Percent(f64),
}

impl MaxDeletes {
    /// How many deletions a feed with `live` items may make in one run.
    pub fn allowed(self, live: u64) -> u64 {
        match self {
            MaxDeletes::Count(n) => n,
            MaxDeletes::Percent(p) => ((live as f64) * p / 100.0).floor() as u64,
        }
    }
}

impl std::fmt::Display for MaxDeletes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDeletes::Count(n) => write!(f, "{n}"),
            MaxDeletes::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Where and how a feed's changes are delivered.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// The URL template as configured (`{feed}` not yet replaced); feeds with
    /// the same template share the fate of a refusing target.
    pub url_template: String,
    pub endpoint: Endpoint,
    pub api_key_header: String,
    pub gzip: bool,
    pub timeout: Duration,
    pub batch_size: usize,
    pub max_attempts: u32,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
}

/// Where a target's batches go, `{feed}` replaced: a URL or a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Http(String),
    File(PathBuf),
}

/// One feed's settings, fully resolved (its target included).
#[derive(Debug, Clone)]
pub struct Feed {
    pub name: String,
    pub source: SourceSpec,
    pub format: Option<Format>,
    pub key: Vec<String>,
    pub hash_exclude: Vec<String>,
    pub sort_arrays: Vec<String>,
    pub mode: Mode,
    pub keep_data: bool,
    pub snapshot: bool,
    pub deleted_field: String,
    pub max_deletes: MaxDeletes,
    /// Credentials for an HTTP source: environment variable names.
    pub source_token_env: Option<String>,
    pub source_api_key_env: Option<String>,
    pub source_api_key_header: String,
    pub target: TargetSettings,
}

/// One `[schedule]` line: a job and when it runs.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub job: Job,
    pub line: String,
    pub cron: Cron,
}

/// The whole config file, resolved: the program's only view of it.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state: PathBuf,
    pub tombstone_days: u32,
    /// A record larger than this is a source error (guarantee 8).
    pub max_record_bytes: usize,
    /// A source still being read after this is a source error (guarantee 8).
    pub source_timeout: Duration,
    pub secrets: SecretNames,
    /// The scheduled jobs, in `run` order.
    pub schedule: Vec<Scheduled>,
    pub log_file: Option<PathBuf>,
    pub report_file: Option<PathBuf>,
    pub feeds: Vec<Feed>,
}

impl Config {
    /// Reads and resolves the config file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Config::parse(&text, path)
    }

    /// Resolves config text; `path` names the file in errors and anchors
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            Error::config(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        resolve::Resolver::new(path).resolve(raw)
    }

    /// The config file's folder: relative paths and commands start here.
    pub fn dir(&self) -> &Path {
        parent_dir(&self.path)
    }

    /// The feed called `name`.
    pub fn feed(&self, name: &str) -> Option<&Feed> {
        self.feeds.iter().find(|f| f.name == name)
    }

    /// The feeds `--feed` names, in config order, or all of them.
    pub fn select_feeds(&self, names: &[String]) -> Result<Vec<&Feed>> {
        for n in names {
            if self.feed(n).is_none() {
                let known: Vec<&str> = self.feeds.iter().map(|f| f.name.as_str()).collect();
                return Err(Error::config(format!(
                    "no feed named `{n}` in {} (feeds: {})",
                    self.path.display(),
                    known.join(", ")
                )));
            }
        }
        Ok(self
            .feeds
            .iter()
            .filter(|f| names.is_empty() || names.contains(&f.name))
            .collect())
    }
}

/// The format a file name's extension tells (`.ndjson`/`.jsonl`, `.json`,
/// `.csv`), if any.
pub fn format_from_name(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next()?;
    match ext {
        "ndjson" | "jsonl" => Some(Format::Ndjson),
        "json" => Some(Format::Json),
        "csv" => Some(Format::Csv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/shop/feedsync.toml"))
    }

    const MINIMAL: &str = r#"
[target]
url = "https://ingest.example.com/feeds/{feed}"
[[feeds]]
name = "products"
source = "exports/products.csv"
key = ["sku"]
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.state, PathBuf::from("/etc/shop/feedsync.sqlite"));
        let f = &c.feeds[0];
        assert_eq!(
            f.source,
            SourceSpec::File("/etc/shop/exports/products.csv".into())
        );
        assert_eq!(f.format, Some(Format::Csv));
        assert_eq!(f.max_deletes, MaxDeletes::Percent(20.0));
        assert_eq!(f.target.batch_size, 500);
        assert_eq!(
            f.target.endpoint,
            Endpoint::Http("https://ingest.example.com/feeds/products".into())
        );
        assert!(f.target.gzip);
        assert!(!f.keep_data);
        let jobs: Vec<&str> = c.schedule.iter().map(|s| s.job.as_str()).collect();
        assert_eq!(jobs, ["sync", "send", "retry", "cleanup"]);
        let e = parse(&format!("[schedule]\nsync = \"61 * * * *\"\n{MINIMAL}")).unwrap_err();
        assert!(e.to_string().contains("schedule.sync"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&MINIMAL.replace("key = [\"sku\"]", "key = [\"sku\"]\nbatchsize = 3"))
            .unwrap_err();
        assert!(e.to_string().contains("batchsize"), "{e}");
        assert!(e.to_string().contains("feedsync.toml"), "{e}");
        let e = parse(&MINIMAL.replace("key = [\"sku\"]", "key = [\"sku\"]\ntoken_env = \"X\""))
            .unwrap_err();
        assert!(e.to_string().contains("token_env"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        let e = parse(&MINIMAL.replace("[[feeds]]", "batch_size = 0\n[[feeds]]")).unwrap_err();
        assert!(e.to_string().contains("target.batch_size"), "{e}");
        let e = parse(&MINIMAL.replace(
            "[[feeds]]",
            "retry_base_secs = 100\nretry_max_secs = 10\n[[feeds]]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("retry_max_secs"), "{e}");
        let e = parse(&format!("{MINIMAL}max_deletes = \"120%\"\n")).unwrap_err();
        assert!(e.to_string().contains("max_deletes"), "{e}");
        let e = parse(&format!("{MINIMAL}batch_size = -1\n")).unwrap_err();
        assert!(e.to_string().contains("feeds.products.batch_size"), "{e}");
    }

    #[test]
    fn max_deletes_forms() {
        let c = parse(&format!("{MINIMAL}max_deletes = 5\n")).unwrap();
        assert_eq!(c.feeds[0].max_deletes, MaxDeletes::Count(5));
        assert_eq!(MaxDeletes::Percent(20.0).allowed(1994), 398);
        assert_eq!(MaxDeletes::Percent(0.0).allowed(1994), 0);
    }

    #[test]
    fn feed_overrides_target() {
        let c = parse(&format!(
            "{MINIMAL}url = \"file:out/{{feed}}.ndjson\"\nbatch_size = 7\nmode = \"legacy\"\n"
        ))
        .unwrap();
        let f = &c.feeds[0];
        assert_eq!(
            f.target.endpoint,
            Endpoint::File("/etc/shop/out/products.ndjson".into())
        );
        assert_eq!(f.target.batch_size, 7);
        assert!(f.keep_data, "legacy feeds keep data by default");
    }

    const DATABASE: &str = r#"
[target]
url = "https://ingest.example.com/feeds/{feed}"
[[feeds]]
name = "products"
database_url_env = "SHOP_DATABASE_URL"
query = "SELECT sku, attrs FROM catalog"
key = ["sku"]
"#;

    #[test]
    fn database_sources() {
        let c = parse(&format!("{DATABASE}json_columns = [\"attrs\"]\n")).unwrap();
        assert_eq!(
            c.feeds[0].source,
            SourceSpec::Database {
                url_env: "SHOP_DATABASE_URL".into(),
                query: "SELECT sku, attrs FROM catalog".into(),
                json_columns: vec!["attrs".into()],
            }
        );
        assert_eq!(c.feeds[0].format, None);
        assert_eq!(
            c.feeds[0].source.describe(),
            "the database in $SHOP_DATABASE_URL"
        );
        let no_query = DATABASE.replace("query = \"SELECT sku, attrs FROM catalog\"\n", "");
        for (text, wants) in [
            (
                format!("{DATABASE}source = \"x.csv\"\n"),
                "`database_url_env` excludes `source`, `command` and `sqlite`",
            ),
            (
                format!("{DATABASE}command = \"cat x\"\n"),
                "`database_url_env` excludes",
            ),
            (
                format!("{DATABASE}sqlite = \"x.db\"\n"),
                "`database_url_env` excludes",
            ),
            (
                no_query,
                "`feeds.products.query` is required with `database_url_env`",
            ),
            (
                format!("{DATABASE}format = \"csv\"\n"),
                "does not apply to a database source",
            ),
            (
                MINIMAL.replace("key = [\"sku\"]", "key = [\"sku\"]\njson_columns = [\"a\"]"),
                "`feeds.products.json_columns` only goes with `database_url_env`",
            ),
            (
                format!("{DATABASE}json_columns = [\"\"]\n"),
                "`feeds.products.json_columns` holds an empty column name",
            ),
            (
                DATABASE.replace("\"SHOP_DATABASE_URL\"", "\"SHOP URL\""),
                "is not an environment variable's name",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit_code::ExitCode::Config);
            assert!(e.to_string().contains(wants), "{e}\nwants: {wants}");
        }
        // A URL written in the config is refused, and not repeated.
        for text in [
            DATABASE.replace("\"SHOP_DATABASE_URL\"", "\"mysql://shop:Hunter2@db/shop\""),
            MINIMAL.replace("exports/products.csv", "postgres://shop:Hunter2@db/shop"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("environment variable"), "{e}");
            assert!(!e.contains("Hunter2"), "{e}");
        }
        let e = parse(&MINIMAL.replace("key = [\"sku\"]", "key = [\"sku\"]\nquery = \"SELECT 1\""))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("only goes with `sqlite` or `database_url_env`"),
            "{e}"
        );
    }
}
