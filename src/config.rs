//! The config file: parsed strictly (unknown keys and out-of-range values are
//! errors that name the key and the file), then resolved into one settings
//! value per feed, so the rest of the program never sees defaults or
//! `[target]` inheritance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
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

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_state")]
    state: String,
    #[serde(default = "default_tombstone_days")]
    tombstone_days: i64,
    #[serde(default = "default_max_record_bytes")]
    max_record_bytes: i64,
    #[serde(default = "default_source_timeout_secs")]
    source_timeout_secs: i64,
    target: Option<RawTarget>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    report: RawReport,
    #[serde(default)]
    feeds: Vec<RawFeed>,
}

fn default_state() -> String {
    "feedsync.sqlite".into()
}
fn default_tombstone_days() -> i64 {
    7
}
fn default_max_record_bytes() -> i64 {
    16 * 1024 * 1024
}
fn default_source_timeout_secs() -> i64 {
    900
}

/// The `[target]` keys a feed may override (everything but the secrets).
/// Written out in both tables rather than `#[serde(flatten)]`-ed, because
/// flatten silently disables `deny_unknown_fields`.
#[derive(Debug, Default, Clone)]
struct TargetOverrides {
    url: Option<String>,
    api_key_header: Option<String>,
    gzip: Option<bool>,
    timeout_secs: Option<i64>,
    batch_size: Option<i64>,
    max_attempts: Option<i64>,
    retry_base_secs: Option<i64>,
    retry_max_secs: Option<i64>,
}

macro_rules! overrides {
    ($raw:expr) => {
        TargetOverrides {
            url: $raw.url,
            api_key_header: $raw.api_key_header,
            gzip: $raw.gzip,
            timeout_secs: $raw.timeout_secs,
            batch_size: $raw.batch_size,
            max_attempts: $raw.max_attempts,
            retry_base_secs: $raw.retry_base_secs,
            retry_max_secs: $raw.retry_max_secs,
        }
    };
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    url: Option<String>,
    api_key_header: Option<String>,
    gzip: Option<bool>,
    timeout_secs: Option<i64>,
    batch_size: Option<i64>,
    max_attempts: Option<i64>,
    retry_base_secs: Option<i64>,
    retry_max_secs: Option<i64>,
    token_env: Option<String>,
    api_key_env: Option<String>,
    signing_secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "every_minute")]
    sync: String,
    #[serde(default = "every_five")]
    retry: String,
    #[serde(default = "every_five")]
    send: String,
    #[serde(default = "nightly")]
    cleanup: String,
    resync: Option<String>,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            sync: every_minute(),
            retry: every_five(),
            send: every_five(),
            cleanup: nightly(),
            resync: None,
        }
    }
}

fn every_minute() -> String {
    "* * * * *".into()
}
fn every_five() -> String {
    "*/5 * * * *".into()
}
fn nightly() -> String {
    "0 2 * * *".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: Option<String>,
    source: Option<String>,
    command: Option<String>,
    sqlite: Option<String>,
    query: Option<String>,
    format: Option<Format>,
    key: Option<Vec<String>>,
    #[serde(default)]
    hash_exclude: Vec<String>,
    #[serde(default)]
    sort_arrays: Vec<String>,
    #[serde(default)]
    mode: Mode,
    keep_data: Option<bool>,
    #[serde(default = "yes")]
    snapshot: bool,
    #[serde(default = "default_deleted_field")]
    deleted_field: String,
    max_deletes: Option<toml::Value>,
    source_token_env: Option<String>,
    source_api_key_env: Option<String>,
    source_api_key_header: Option<String>,
    url: Option<String>,
    api_key_header: Option<String>,
    gzip: Option<bool>,
    timeout_secs: Option<i64>,
    batch_size: Option<i64>,
    max_attempts: Option<i64>,
    retry_base_secs: Option<i64>,
    retry_max_secs: Option<i64>,
}

fn yes() -> bool {
    true
}
fn default_deleted_field() -> String {
    "deleted".into()
}

// ---------------------------------------------------------------------------
// The resolved config the program works with.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Immediate,
    Legacy,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Immediate => "immediate",
            Mode::Legacy => "legacy",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    File(PathBuf),
    Http(String),
    Command(String),
    Sqlite { db: PathBuf, query: String },
}

impl SourceSpec {
    /// How errors and logs name this source.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::File(p) => p.display().to_string(),
            SourceSpec::Http(u) => u.clone(),
            SourceSpec::Command(c) => format!("command `{c}`"),
            SourceSpec::Sqlite { db, .. } => format!("sqlite {}", db.display()),
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

/// Environment variable names of the secrets; the values are read only by
/// the commands that contact the target.
#[derive(Debug, Clone, Default)]
pub struct SecretNames {
    pub token_env: Option<String>,
    pub api_key_env: Option<String>,
    pub signing_secret_env: Option<String>,
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

#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Http(String),
    File(PathBuf),
}

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
    pub job: &'static str,
    pub line: String,
    pub cron: Cron,
}

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
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            Error::config(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Resolver { file: path, base }.resolve(raw)
    }

    /// The config file's folder: relative paths and commands start here.
    pub fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

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

struct Resolver<'a> {
    file: &'a Path,
    base: PathBuf,
}

impl Resolver<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::config(format!("{}: {msg}", self.file.display()))
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn at_least(&self, key: &str, v: i64, min: i64) -> Result<i64> {
        if v < min {
            return Err(self.err(format!("`{key}` must be at least {min}, not {v}")));
        }
        Ok(v)
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config> {
        let tombstone_days = self.at_least("tombstone_days", raw.tombstone_days, 0)?;
        let tombstone_days =
            u32::try_from(tombstone_days).map_err(|_| self.err("`tombstone_days` is too large"))?;
        let max_record_bytes =
            self.at_least("max_record_bytes", raw.max_record_bytes, 1024)? as usize;
        let source_timeout =
            Duration::from_secs(
                self.at_least("source_timeout_secs", raw.source_timeout_secs, 1)? as u64,
            );
        let (defaults, secrets) = match raw.target {
            Some(t) => (
                overrides!(t),
                SecretNames {
                    token_env: t.token_env,
                    api_key_env: t.api_key_env,
                    signing_secret_env: t.signing_secret_env,
                },
            ),
            None => (TargetOverrides::default(), SecretNames::default()),
        };
        for (key, name) in [
            ("target.token_env", &secrets.token_env),
            ("target.api_key_env", &secrets.api_key_env),
            ("target.signing_secret_env", &secrets.signing_secret_env),
        ] {
            if let Some(n) = name
                && (n.is_empty() || n.contains('='))
            {
                return Err(self.err(format!("`{key}` must name an environment variable")));
            }
        }
        if raw.feeds.is_empty() {
            return Err(self.err("no feeds configured (add a [[feeds]] table)"));
        }
        let mut feeds: Vec<Feed> = Vec::with_capacity(raw.feeds.len());
        for (i, f) in raw.feeds.into_iter().enumerate() {
            let feed = self.feed(i, f, &defaults)?;
            if feeds.iter().any(|g| g.name == feed.name) {
                return Err(self.err(format!("feed name `{}` is used twice", feed.name)));
            }
            feeds.push(feed);
        }
        let s = raw.schedule;
        let mut schedule = Vec::new();
        for (job, line) in [
            ("sync", Some(s.sync)),
            ("send", Some(s.send)),
            ("retry", Some(s.retry)),
            ("resync", s.resync),
            ("cleanup", Some(s.cleanup)),
        ] {
            let Some(line) = line else { continue };
            let cron = Cron::parse(&line)
                .map_err(|e| self.err(format!("`schedule.{job}` = {line:?}: {e}")))?;
            schedule.push(Scheduled { job, line, cron });
        }
        Ok(Config {
            path: self.file.to_path_buf(),
            state: self.path(&raw.state),
            tombstone_days,
            max_record_bytes,
            source_timeout,
            secrets,
            schedule,
            log_file: raw.log.file.as_deref().map(|p| self.path(p)),
            report_file: raw.report.file.as_deref().map(|p| self.path(p)),
            feeds,
        })
    }

    fn feed(&self, index: usize, f: RawFeed, defaults: &TargetOverrides) -> Result<Feed> {
        let at = |key: &str| format!("feeds[{index}].{key}");
        let name = f
            .name
            .ok_or_else(|| self.err(format!("`{}` is required", at("name"))))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(self.err(format!(
                "`{}` = {name:?}: use letters, digits, `-`, `_` and `.` only",
                at("name")
            )));
        }
        let at = |key: &str| format!("feeds.{name}.{key}");

        let source = match (f.source, f.command, f.sqlite) {
            (Some(s), None, None) => {
                if s.starts_with("http://") || s.starts_with("https://") {
                    SourceSpec::Http(s)
                } else {
                    SourceSpec::File(self.path(&s))
                }
            }
            (None, Some(c), None) => SourceSpec::Command(c),
            (None, None, Some(db)) => {
                let query = f.query.clone().ok_or_else(|| {
                    self.err(format!("`{}` is required with `sqlite`", at("query")))
                })?;
                SourceSpec::Sqlite {
                    db: self.path(&db),
                    query,
                }
            }
            (None, None, None) => {
                return Err(self.err(format!(
                    "feed `{name}` needs a source: `source`, `command` or `sqlite` + `query`"
                )));
            }
            _ => {
                return Err(self.err(format!(
                    "feed `{name}`: set only one of `source`, `command` and `sqlite`"
                )));
            }
        };
        if f.query.is_some() && !matches!(source, SourceSpec::Sqlite { .. }) {
            return Err(self.err(format!("`{}` only goes with `sqlite`", at("query"))));
        }
        if f.format.is_some() && matches!(source, SourceSpec::Sqlite { .. }) {
            return Err(self.err(format!(
                "`{}` does not apply to an sqlite source (rows are items)",
                at("format")
            )));
        }
        let http = matches!(source, SourceSpec::Http(_));
        for (key, v) in [
            ("source_token_env", &f.source_token_env),
            ("source_api_key_env", &f.source_api_key_env),
            ("source_api_key_header", &f.source_api_key_header),
        ] {
            match v {
                Some(_) if !http => {
                    return Err(self.err(format!("`{}` only goes with an http(s) source", at(key))));
                }
                Some(v) if v.is_empty() || v.contains('=') || v.contains(' ') => {
                    return Err(self.err(format!("`{}` = {v:?} is not a valid name", at(key))));
                }
                _ => {}
            }
        }

        let format = match (f.format, &source) {
            (Some(fmt), _) => Some(fmt),
            (None, SourceSpec::File(p)) => Some(format_from_name(&p.to_string_lossy()).ok_or_else(
                || {
                    self.err(format!(
                        "`{}` is not set and cannot be told from the file name {}: set ndjson, json or csv",
                        at("format"),
                        p.display()
                    ))
                },
            )?),
            (None, SourceSpec::Http(u)) => format_from_name(u.split('?').next().unwrap_or(u)),
            (None, SourceSpec::Command(_)) => {
                return Err(self.err(format!(
                    "`{}` is required for a command source",
                    at("format")
                )));
            }
            (None, SourceSpec::Sqlite { .. }) => None,
        };

        let key = f
            .key
            .ok_or_else(|| self.err(format!("`{}` is required", at("key"))))?;
        if key.is_empty() || key.iter().any(|k| !valid_path(k)) {
            return Err(self.err(format!("`{}` must list one or more field names", at("key"))));
        }
        for (k, list) in [
            ("hash_exclude", &f.hash_exclude),
            ("sort_arrays", &f.sort_arrays),
        ] {
            if list.iter().any(|p| !valid_path(p)) {
                return Err(self.err(format!("`{}` holds an empty field name", at(k))));
            }
        }
        if f.deleted_field.is_empty() {
            return Err(self.err(format!("`{}` must not be empty", at("deleted_field"))));
        }

        let max_deletes = match f.max_deletes {
            None => MaxDeletes::Percent(20.0),
            Some(v) => parse_max_deletes(&v).ok_or_else(|| {
                self.err(format!(
                    "`{}` = {v}: use a count (5) or a percentage from 0% to 100% (\"20%\")",
                    at("max_deletes")
                ))
            })?,
        };

        let target = self.target(&name, &overrides!(f), defaults)?;
        Ok(Feed {
            keep_data: f.keep_data.unwrap_or(f.mode == Mode::Legacy),
            name,
            source,
            format,
            key,
            hash_exclude: f.hash_exclude,
            sort_arrays: f.sort_arrays,
            mode: f.mode,
            snapshot: f.snapshot,
            deleted_field: f.deleted_field,
            max_deletes,
            source_token_env: f.source_token_env,
            source_api_key_env: f.source_api_key_env,
            source_api_key_header: f
                .source_api_key_header
                .unwrap_or_else(|| "x-api-key".into()),
            target,
        })
    }

    fn target(
        &self,
        feed: &str,
        o: &TargetOverrides,
        d: &TargetOverrides,
    ) -> Result<TargetSettings> {
        // A feed's own value wins; the key named in errors is where it came from.
        let pick = |own: Option<i64>, def: Option<i64>, key: &str, dflt: i64| match (own, def) {
            (Some(v), _) => (v, format!("feeds.{feed}.{key}")),
            (None, Some(v)) => (v, format!("target.{key}")),
            (None, None) => (dflt, key.to_string()),
        };
        let (timeout, k) = pick(o.timeout_secs, d.timeout_secs, "timeout_secs", 30);
        let timeout = self.at_least(&k, timeout, 1)? as u64;
        let (batch_size, k) = pick(o.batch_size, d.batch_size, "batch_size", 500);
        let batch_size = self.at_least(&k, batch_size, 1)? as usize;
        let (max_attempts, k) = pick(o.max_attempts, d.max_attempts, "max_attempts", 0);
        let max_attempts = self.at_least(&k, max_attempts, 0)?;
        let max_attempts =
            u32::try_from(max_attempts).map_err(|_| self.err(format!("`{k}` is too large")))?;
        let (base, kb) = pick(o.retry_base_secs, d.retry_base_secs, "retry_base_secs", 60);
        let base = self.at_least(&kb, base, 1)? as u64;
        let (max, k) = pick(o.retry_max_secs, d.retry_max_secs, "retry_max_secs", 3600);
        if max < base as i64 {
            return Err(self.err(format!("`{k}` ({max}) must be at least `{kb}` ({base})")));
        }
        let url_template = o.url.clone().or_else(|| d.url.clone()).ok_or_else(|| {
            self.err(format!(
                "no target url for feed `{feed}`: set `url` in [target] or in the feed"
            ))
        })?;
        let resolved = url_template.replace("{feed}", feed);
        let endpoint = if let Some(p) = resolved.strip_prefix("file:") {
            if p.is_empty() {
                return Err(self.err(format!("target url `{url_template}` names no file")));
            }
            Endpoint::File(self.path(p))
        } else if resolved.starts_with("http://") || resolved.starts_with("https://") {
            Endpoint::Http(resolved)
        } else {
            return Err(self.err(format!(
                "target url `{url_template}` must start with http://, https:// or file:"
            )));
        };
        let api_key_header = o
            .api_key_header
            .clone()
            .or_else(|| d.api_key_header.clone())
            .unwrap_or_else(|| "x-api-key".into());
        if api_key_header.is_empty()
            || !api_key_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(format!(
                "`api_key_header` = {api_key_header:?} is not a header name"
            )));
        }
        Ok(TargetSettings {
            url_template,
            endpoint,
            api_key_header,
            gzip: o.gzip.or(d.gzip).unwrap_or(true),
            timeout: Duration::from_secs(timeout),
            batch_size,
            max_attempts,
            retry_base_secs: base,
            retry_max_secs: max as u64,
        })
    }
}

fn valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('.').all(|s| !s.is_empty())
}

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

fn parse_max_deletes(v: &toml::Value) -> Option<MaxDeletes> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Some(MaxDeletes::Count(*n as u64)),
        toml::Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                let p: f64 = p.trim().parse().ok()?;
                (0.0..=100.0).contains(&p).then_some(MaxDeletes::Percent(p))
            } else {
                s.parse::<u64>().ok().map(MaxDeletes::Count)
            }
        }
        _ => None,
    }
}

/// Reads the secrets the config names. Called only by commands that contact
/// the target; an unset or empty variable is a config error naming it.
pub fn read_secrets(names: &SecretNames) -> Result<Secrets> {
    let get = |n: &Option<String>, key: &str| -> Result<Option<String>> {
        match n {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(Error::config(format!(
                    "environment variable {var} (named by target.{key}) is not set or empty"
                ))),
            },
        }
    };
    Ok(Secrets {
        token: get(&names.token_env, "token_env")?,
        api_key: get(&names.api_key_env, "api_key_env")?,
        signing_secret: get(&names.signing_secret_env, "signing_secret_env")?,
    })
}

/// Secret values. `Debug` is written by hand so they can never be logged.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<String>,
    pub api_key: Option<String>,
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
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
        let jobs: Vec<&str> = c.schedule.iter().map(|s| s.job).collect();
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
}
