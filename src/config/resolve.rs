//! From the file as written to the settings the program works with: every
//! range and combination is checked here, each error naming the key (as
//! `feeds.NAME.KEY`, `target.KEY` or `targets.NAME.KEY`, whichever the
//! value came from) and the file, and the values of a feed's target
//! (`[target]`, or the `[targets.NAME]` it names) are copied into each feed
//! that does not set its own, so nothing after this sees a default or an
//! inheritance rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawFeed, RawTarget, TargetKeys};
use super::{
    Config, Endpoint, Feed, MaxDeletes, Mode, Scheduled, SecretNames, Signature, SourceSpec,
    TargetKind, TargetSettings, format_from_name,
};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::paths::parent_dir;
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
        // `[target]` may be left out (every feed names a target, or sets
        // its own url): then it is an empty table.
        let default = match raw.target {
            Some(t) => self.table("target".into(), t)?,
            None => Table {
                name: "target".into(),
                keys: TargetKeys::default(),
                secrets: SecretNames {
                    table: "target".into(),
                    ..SecretNames::default()
                },
            },
        };
        let mut named = BTreeMap::new();
        for (name, t) in raw.targets {
            let table = self.table(format!("targets.{name}"), t)?;
            named.insert(name, table);
        }
        if let Some(name) = &raw.notify.ping_url_env
            && (name.is_empty() || name.contains('='))
        {
            return Err(self.err("`notify.ping_url_env` must name an environment variable"));
        }
        if raw.metrics.file.as_deref() == Some("") {
            return Err(self.err("`metrics.file` must be a file path"));
        }
        if raw.feeds.is_empty() {
            return Err(self.err("no feeds configured (add a [[feeds]] table)"));
        }
        let mut feeds: Vec<Feed> = Vec::with_capacity(raw.feeds.len());
        let mut used = BTreeSet::new();
        for (i, f) in raw.feeds.into_iter().enumerate() {
            if let Some(t) = &f.target {
                used.insert(t.clone());
            }
            let feed = self.feed(i, f, &default, &named)?;
            if feeds.iter().any(|g| g.name == feed.name) {
                return Err(self.err(format!("feed name `{}` is used twice", feed.name)));
            }
            feeds.push(feed);
        }
        // A named target no feed uses is still checked, as if a feed
        // without keys of its own used it.
        for (name, table) in &named {
            if !used.contains(name) {
                self.target(None, &TargetKeys::default(), table)?;
            }
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
            schedule,
            log_file: raw.log.file.as_deref().map(|p| self.path(p)),
            report_file: raw.report.file.as_deref().map(|p| self.path(p)),
            metrics_file: raw.metrics.file.as_deref().map(|p| self.path(p)),
            ping_url_env: raw.notify.ping_url_env,
            feeds,
        })
    }

    /// A target table as written: its keys, and its secrets' names checked.
    fn table(&self, name: String, t: RawTarget) -> Result<Table> {
        let secrets = SecretNames {
            table: name.clone(),
            token_env: t.token_env.clone(),
            api_key_env: t.api_key_env.clone(),
            signing_secret_env: t.signing_secret_env.clone(),
            password_env: t.password_env.clone(),
        };
        if let Some(key) = secrets.invalid_key() {
            return Err(self.err(format!("`{name}.{key}` must name an environment variable")));
        }
        Ok(Table {
            keys: t.target_keys(),
            name,
            secrets,
        })
    }

    /// One `[[feeds]]` table; its target is `[target]` (`default`) or the
    /// `[targets.NAME]` it names.
    fn feed(
        &self,
        index: usize,
        f: RawFeed,
        default: &Table,
        named: &BTreeMap<String, Table>,
    ) -> Result<Feed> {
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

        let table = match &f.target {
            None => default,
            Some(t) => named.get(t).ok_or_else(|| {
                let known: Vec<&str> = named.keys().map(String::as_str).collect();
                self.err(format!(
                    "`{}` = {t:?}: there is no [targets.{t}] table ({})",
                    at("target"),
                    if known.is_empty() {
                        "the file names no targets".to_string()
                    } else {
                        format!("targets: {}", known.join(", "))
                    }
                ))
            })?,
        };
        let target = self.target(Some(&name), &own, table)?;
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

    /// A feed's target settings from its own keys `o` and its target table
    /// `t` (`feed` is `None` when a named target no feed uses is checked):
    /// where each target key (listed in `raw`) gets its default and range,
    /// and which kinds take it.
    fn target(&self, feed: Option<&str>, o: &TargetKeys, t: &Table) -> Result<TargetSettings> {
        // Checked as if a feed of this name used it: any `{feed}` becomes
        // a valid index name.
        let feed_name = feed.unwrap_or("feed");
        let d = &t.keys;
        // Where a key's value was written, for errors: the feed, the
        // target table, or nowhere (the default).
        let from = |own: bool, def: bool, key: &str| match (own, def) {
            (true, _) => format!("feeds.{feed_name}.{key}"),
            (false, true) => format!("{}.{key}", t.name),
            (false, false) => key.to_string(),
        };
        // A feed's own value wins.
        let pick = |own: Option<i64>, def: Option<i64>, key: &str, dflt: i64| {
            (
                own.or(def).unwrap_or(dflt),
                from(own.is_some(), def.is_some(), key),
            )
        };
        let text = |own: &Option<String>, def: &Option<String>, key: &str| {
            own.clone()
                .or_else(|| def.clone())
                .map(|v| (v, from(own.is_some(), def.is_some(), key)))
        };
        let (timeout, k) = pick(o.timeout_secs, d.timeout_secs, "timeout_secs", 30);
        let timeout = self.at_least(&k, timeout, 1)? as u64;
        let (batch_size, k) = pick(o.batch_size, d.batch_size, "batch_size", 500);
        let batch_size = self.at_least(&k, batch_size, 1)? as usize;
        let (max_batch_bytes, k) = pick(
            o.max_batch_bytes,
            d.max_batch_bytes,
            "max_batch_bytes",
            10_000_000,
        );
        let max_batch_bytes = self.at_least(&k, max_batch_bytes, 1)? as usize;
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

        let kind = o.kind.or(d.kind).unwrap_or_default();
        let kind_from = from(o.kind.is_some(), d.kind.is_some(), "kind");
        let is = |kinds: &[TargetKind]| kinds.contains(&kind);
        // A key this kind does not take is an error naming it: a setting
        // that does nothing must not look as if it did.
        let refuse = |key: String, takes: &str| {
            self.err(format!(
                "`{key}` applies only to {takes}, not to kind = \"{}\"{}",
                kind.as_str(),
                if kind_from == "kind" {
                    " (the default)".to_string()
                } else {
                    format!(" (set in `{kind_from}`)")
                }
            ))
        };
        use TargetKind::*;
        let service =
            "the service kinds (elasticsearch, opensearch, meilisearch, typesense, algolia)";
        let index = text(&o.index, &d.index, "index");
        if let Some((_, key)) = &index
            && !kind.is_service()
        {
            return Err(refuse(key.clone(), service));
        }
        let app_id = text(&o.app_id, &d.app_id, "app_id");
        match (&app_id, kind) {
            (Some((_, key)), k) if k != Algolia => {
                return Err(refuse(key.clone(), "kind = \"algolia\""));
            }
            (None, Algolia) => {
                return Err(self.err(format!(
                    "`{}.app_id` is required for kind = \"algolia\": your Algolia application id",
                    t.name
                )));
            }
            (Some((id, key)), _)
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                return Err(self.err(format!(
                    "`{key}` = {id:?} is not an Algolia application id (letters and digits)"
                )));
            }
            _ => {}
        }
        let id_field = text(&o.id_field, &d.id_field, "id_field");
        if let Some((_, key)) = &id_field
            && kind != Meilisearch
        {
            return Err(refuse(key.clone(), "kind = \"meilisearch\""));
        }
        if let Some((f, key)) = &id_field
            && f.is_empty()
        {
            return Err(self.err(format!("`{key}` must not be empty")));
        }
        let signature = o.signature.or(d.signature);
        let signature_from = from(o.signature.is_some(), d.signature.is_some(), "signature");
        if signature.is_some() && kind != Webhook {
            return Err(refuse(signature_from, "kind = \"webhook\""));
        }
        let signature = signature.unwrap_or_default();
        let api_key_header = text(&o.api_key_header, &d.api_key_header, "api_key_header");
        if let Some((_, key)) = &api_key_header
            && kind != Webhook
        {
            return Err(refuse(key.clone(), "kind = \"webhook\""));
        }
        let username = text(&o.username, &d.username, "username");
        if let Some((_, key)) = &username
            && !is(&[Elasticsearch, Opensearch])
        {
            return Err(refuse(
                key.clone(),
                "kind = \"elasticsearch\" or \"opensearch\"",
            ));
        }

        // Credentials: which a kind takes (DESIGN.md's table), and for a
        // service at most one.
        let secret = |key: &str| format!("{}.{key}", t.name);
        let s = &t.secrets;
        for (key, set, takes) in [
            (
                "signing_secret_env",
                s.signing_secret_env.is_some(),
                is(&[Webhook]),
            ),
            (
                "password_env",
                s.password_env.is_some(),
                is(&[Elasticsearch, Opensearch]),
            ),
            (
                "token_env",
                s.token_env.is_some(),
                is(&[Webhook, Elasticsearch, Opensearch]),
            ),
            ("api_key_env", s.api_key_env.is_some(), !is(&[Opensearch])),
        ] {
            if set && !takes {
                let takes = match key {
                    "signing_secret_env" => "kind = \"webhook\"",
                    "password_env" => {
                        "kind = \"elasticsearch\" or \"opensearch\" (with `username`)"
                    }
                    "token_env" => "kinds webhook, elasticsearch and opensearch",
                    _ => {
                        "kinds other than opensearch (OpenSearch has no API-key scheme: use `username` + `password_env`, or `token_env`)"
                    }
                };
                return Err(refuse(secret(key), takes));
            }
        }
        if username.is_some() != s.password_env.is_some() {
            let (have, missing) = match &username {
                Some((_, key)) => (key.clone(), secret("password_env")),
                None => (secret("password_env"), format!("{}.username", t.name)),
            };
            return Err(self.err(format!(
                "`{have}` needs `{missing}` too: Basic authentication takes both"
            )));
        }
        if kind.is_service() {
            let set: Vec<String> = [
                ("token_env", s.token_env.is_some()),
                ("api_key_env", s.api_key_env.is_some()),
                ("password_env", s.password_env.is_some()),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(key, _)| format!("`{}`", secret(key)))
            .collect();
            if set.len() > 1 {
                return Err(self.err(format!(
                    "{} are set: kind = \"{}\" takes one credential; keep one",
                    set.join(" and "),
                    kind.as_str()
                )));
            }
        }
        if signature == Signature::Standard && s.signing_secret_env.is_none() {
            return Err(self.err(format!(
                "`{signature_from}` = \"standard\" signs batches: set `{}` to the variable holding the `whsec_…` secret",
                secret("signing_secret_env")
            )));
        }

        let url_template = match text(&o.url, &d.url, "url") {
            Some((url, _)) => url,
            None => match &app_id {
                Some((id, _)) if kind == Algolia => format!("https://{id}.algolia.net"),
                _ => {
                    return Err(self.err(match feed {
                        Some(feed) => format!(
                            "no target url for feed `{feed}`: set `url` in [{}] or in the feed",
                            t.name
                        ),
                        None => format!("`{}.url` is required", t.name),
                    }));
                }
            },
        };
        let resolved = url_template.replace("{feed}", feed_name);
        let endpoint = if let Some(p) = resolved.strip_prefix("file:") {
            if p.is_empty() {
                return Err(self.err(format!("target url `{url_template}` names no file")));
            }
            Endpoint::File(self.path(p))
        } else if resolved.starts_with("http://") || resolved.starts_with("https://") {
            // A base URL: the kinds append their paths to it.
            let resolved = if kind.is_service() {
                resolved.trim_end_matches('/').to_string()
            } else {
                resolved
            };
            Endpoint::Http(resolved)
        } else {
            return Err(self.err(format!(
                "target url `{url_template}` must start with http://, https:// or file:"
            )));
        };
        let api_key_header = api_key_header.map_or_else(|| "x-api-key".into(), |(h, _)| h);
        if api_key_header.is_empty()
            || !api_key_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(format!(
                "`api_key_header` = {api_key_header:?} is not a header name"
            )));
        }
        let index = if kind.is_service() {
            let (template, key) = index.unwrap_or_else(|| ("{feed}".into(), "index".into()));
            let name = template.replace("{feed}", feed_name);
            if let Some(why) = bad_index(kind, &name) {
                return Err(self.err(format!(
                    "`{key}` = {template:?} gives the index name {name:?}{}, which {} does not accept: {why}",
                    feed.map(|f| format!(" for feed `{f}`")).unwrap_or_default(),
                    kind.as_str()
                )));
            }
            Some(name)
        } else {
            None
        };
        // Standard Webhooks libraries verify the body they are handed, so
        // that scheme sends it as it is, whatever `gzip` says.
        let gzip = o.gzip.or(d.gzip).unwrap_or(kind == Webhook) && signature != Signature::Standard;
        Ok(TargetSettings {
            url_template,
            endpoint,
            kind,
            index,
            app_id: app_id.map(|(id, _)| id),
            id_field: id_field.map_or_else(|| "id".into(), |(f, _)| f),
            max_batch_bytes,
            signature,
            username: username.map(|(u, _)| u),
            secrets: t.secrets.clone(),
            api_key_header,
            gzip,
            timeout: Duration::from_secs(timeout),
            batch_size,
            max_attempts,
            retry_base_secs: base,
            retry_max_secs: max as u64,
        })
    }
}

/// One target table as written: its name for errors (`target`,
/// `targets.NAME`), its keys and its secrets' names.
struct Table {
    name: String,
    keys: TargetKeys,
    secrets: SecretNames,
}

/// Why the service would refuse `name` as an index name (DESIGN.md,
/// "Target kinds"), if it would.
fn bad_index(kind: TargetKind, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    match kind {
        TargetKind::Elasticsearch | TargetKind::Opensearch => {
            if name.len() > 255 {
                return Some("longer than 255 bytes".into());
            }
            if name.chars().any(|c| c.is_uppercase()) {
                return Some("it must be lower case".into());
            }
            if let Some(c) = name.chars().find(|c| "\\/*?\"<>|,#: ".contains(*c)) {
                return Some(format!("it holds {c:?}"));
            }
            if name == "." || name == ".." {
                return Some("it is `.` or `..`".into());
            }
            if let Some(c) = name.chars().next().filter(|c| "-_+.".contains(*c)) {
                return Some(format!("it starts with {c:?}"));
            }
            None
        }
        TargetKind::Meilisearch => {
            if name.len() > 400 {
                return Some("longer than 400 bytes".into());
            }
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
                .map(|c| format!("it holds {c:?} (only A-Z a-z 0-9 - _)"))
        }
        _ => None,
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
