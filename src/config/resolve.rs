//! From the file as written to the settings the program works with: every
//! range and combination is checked here, each error naming the key (as
//! `feeds.NAME.KEY` or `target.KEY`, whichever the value came from) and the
//! file, and `[target]` values are copied into each feed that does not set
//! its own, so nothing after this sees a default or an inheritance rule.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawFeed, TargetKeys};
use super::{
    Config, Endpoint, Feed, MaxDeletes, Mode, Scheduled, SecretNames, SourceSpec, TargetSettings,
    format_from_name, parent_dir,
};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::schedule::Cron;

/// Resolves one file's raw tables; it knows the file's name for errors and
/// its folder for relative paths.
pub(super) struct Resolver<'a> {
    file: &'a Path,
    base: PathBuf,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
        Resolver {
            file,
            base: parent_dir(file).to_path_buf(),
        }
    }

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

    pub(super) fn resolve(&self, raw: RawConfig) -> Result<Config> {
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
                t.target_keys(),
                SecretNames {
                    token_env: t.token_env,
                    api_key_env: t.api_key_env,
                    signing_secret_env: t.signing_secret_env,
                },
            ),
            None => (TargetKeys::default(), SecretNames::default()),
        };
        if let Some(key) = secrets.invalid_key() {
            return Err(self.err(format!("`target.{key}` must name an environment variable")));
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
            (Job::Sync, Some(s.sync)),
            (Job::Send, Some(s.send)),
            (Job::Retry, Some(s.retry)),
            (Job::Resync, s.resync),
            (Job::Cleanup, Some(s.cleanup)),
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

    /// One `[[feeds]]` table, `defaults` being what `[target]` set.
    fn feed(&self, index: usize, f: RawFeed, defaults: &TargetKeys) -> Result<Feed> {
        let own = f.target_keys();
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

        let source = match (f.source, f.command, f.sqlite, f.database_url_env) {
            (Some(s), None, None, None) => {
                if database_scheme(&s) {
                    // Not repeated: the URL holds the password.
                    return Err(self.err(format!(
                        "`{}` is a database URL, which holds the password and does not belong in the config: \
                         put it in an environment variable and name that with `database_url_env` (plus `query`)",
                        at("source")
                    )));
                }
                if s.starts_with("http://") || s.starts_with("https://") {
                    SourceSpec::Http(s)
                } else {
                    SourceSpec::File(self.path(&s))
                }
            }
            (None, Some(c), None, None) => SourceSpec::Command(c),
            (None, None, Some(db), None) => {
                let query = f.query.clone().ok_or_else(|| {
                    self.err(format!("`{}` is required with `sqlite`", at("query")))
                })?;
                SourceSpec::Sqlite {
                    db: self.path(&db),
                    query,
                }
            }
            (None, None, None, Some(var)) => {
                if var.contains("://") {
                    // Not repeated: the URL holds the password.
                    return Err(self.err(format!(
                        "`{}` holds a URL: it must name the environment variable that holds the URL \
                         (the URL holds the password, which does not belong in the config)",
                        at("database_url_env")
                    )));
                }
                if !valid_env_name(&var) {
                    return Err(self.err(format!(
                        "`{}` = {var:?} is not an environment variable's name",
                        at("database_url_env")
                    )));
                }
                let query = f.query.clone().ok_or_else(|| {
                    self.err(format!(
                        "`{}` is required with `database_url_env`",
                        at("query")
                    ))
                })?;
                let json_columns = f.json_columns.clone().unwrap_or_default();
                if json_columns.iter().any(String::is_empty) {
                    return Err(self.err(format!(
                        "`{}` holds an empty column name",
                        at("json_columns")
                    )));
                }
                SourceSpec::Database {
                    url_env: var,
                    query,
                    json_columns,
                }
            }
            (None, None, None, None) => {
                return Err(self.err(format!(
                    "feed `{name}` needs a source: `source`, `command`, `sqlite` + `query` or `database_url_env` + `query`"
                )));
            }
            (_, _, _, Some(_)) => {
                return Err(self.err(format!(
                    "feed `{name}`: `database_url_env` excludes `source`, `command` and `sqlite`: set only one"
                )));
            }
            _ => {
                return Err(self.err(format!(
                    "feed `{name}`: set only one of `source`, `command` and `sqlite`"
                )));
            }
        };
        let rows = matches!(
            source,
            SourceSpec::Sqlite { .. } | SourceSpec::Database { .. }
        );
        if f.query.is_some() && !rows {
            return Err(self.err(format!(
                "`{}` only goes with `sqlite` or `database_url_env`",
                at("query")
            )));
        }
        if f.json_columns.is_some() && !matches!(source, SourceSpec::Database { .. }) {
            return Err(self.err(format!(
                "`{}` only goes with `database_url_env`",
                at("json_columns")
            )));
        }
        if f.format.is_some() && rows {
            return Err(self.err(format!(
                "`{}` does not apply to {} (rows are items)",
                at("format"),
                if matches!(source, SourceSpec::Sqlite { .. }) {
                    "an sqlite source"
                } else {
                    "a database source"
                }
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
            (None, SourceSpec::Sqlite { .. } | SourceSpec::Database { .. }) => None,
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

        let target = self.target(&name, &own, defaults)?;
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

    /// A feed's target settings from its own keys `o` and `[target]`'s `d`:
    /// where each target key (listed in `raw`) gets its default and range.
    fn target(&self, feed: &str, o: &TargetKeys, d: &TargetKeys) -> Result<TargetSettings> {
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

/// Whether `s` starts with a database URL's scheme (`mysql://`, …).
fn database_scheme(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["mysql://", "mariadb://", "postgres://", "postgresql://"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// A name an environment variable can have in a shell's `export`.
fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A field name or a dotted path into nested objects: no empty segment.
fn valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('.').all(|s| !s.is_empty())
}

/// `max_deletes` as a count (`5` or `"5"`) or a percentage (`"20%"`).
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
