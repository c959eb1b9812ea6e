//! `feedsync.toml` built from typed parts and serialised with the `toml`
//! crate, so a test says which settings it means instead of splicing TOML
//! text with `format!` (quoting, escaping and table order are the
//! serialiser's job). Tests about malformed or odd config text keep their
//! literal text; this is for every config that is merely a setup.

use serde::Serialize;

/// A whole config file: top-level keys, `[target]`, `[schedule]`, `[[feeds]]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigBuilder {
    /// Top-level keys (`max_record_bytes`, `source_timeout_secs`, …).
    #[serde(flatten)]
    pub top: toml::Table,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetConfig>,
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub schedule: toml::Table,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedConfig>,
}

/// `[target]`: where every feed goes unless it says otherwise.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetConfig {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_base_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret_env: Option<String>,
    /// Any other target key, as written.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// One `[[feeds]]` entry.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hash_exclude: Vec<String>,
    /// The feed's own target URL, overriding `[target]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Any other feed key (`mode`, `max_deletes`, `command`, …), as written.
    #[serde(flatten)]
    pub extra: toml::Table,
}

impl FeedConfig {
    /// A feed `name` read from the file `source`, keyed by `key`.
    pub fn new(name: &str, source: &str, key: &[&str]) -> FeedConfig {
        FeedConfig {
            name: name.into(),
            source: Some(source.into()),
            key: key.iter().map(|k| k.to_string()).collect(),
            ..FeedConfig::default()
        }
    }

    /// Sets any other feed key.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> FeedConfig {
        self.extra.insert(key.into(), value.into());
        self
    }
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// `[target]` at `url` retrying after 60 s, and one feed: the typed
    /// setup most tests share.
    pub fn one_feed(url: &str, feed: FeedConfig) -> ConfigBuilder {
        ConfigBuilder::new()
            .target(|t| {
                t.url = url.into();
                t.retry_base_secs = Some(60);
            })
            .feed(feed)
    }

    /// `[target]` with this URL (and its other keys as they were).
    pub fn target_url(mut self, url: &str) -> ConfigBuilder {
        self.target.get_or_insert_with(TargetConfig::default).url = url.into();
        self
    }

    /// Changes `[target]` (creating it when missing).
    pub fn target(mut self, edit: impl FnOnce(&mut TargetConfig)) -> ConfigBuilder {
        edit(self.target.get_or_insert_with(TargetConfig::default));
        self
    }

    /// Appends a `[[feeds]]` entry.
    pub fn feed(mut self, feed: FeedConfig) -> ConfigBuilder {
        self.feeds.push(feed);
        self
    }

    /// Sets a top-level key.
    pub fn top(mut self, key: &str, value: impl Into<toml::Value>) -> ConfigBuilder {
        self.top.insert(key.into(), value.into());
        self
    }

    /// Sets one `[schedule]` line.
    pub fn schedule(mut self, job: &str, cron: &str) -> ConfigBuilder {
        self.schedule.insert(job.into(), cron.into());
        self
    }

    /// The config file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a test config serialises")
    }
}
