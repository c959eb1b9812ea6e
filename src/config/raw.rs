//! The config file as written: serde structs that mirror the TOML tables one
//! to one, with the defaults DESIGN.md lists. Every table denies unknown
//! keys, so a typo is an error that names the key instead of a setting that
//! silently does nothing. Nothing here checks ranges or combinations; that
//! is `resolve`'s job.

use serde::Deserialize;

use super::{Format, Mode};

/// The target keys, written once. `[target]` and every `[[feeds]]` table
/// take them (a feed's value overrides the target's), so they must appear
/// in both structs, and once more as [`TargetKeys`], the form resolution
/// reads them in.
///
/// Why a macro and not `#[serde(flatten)]` of one shared struct: flatten
/// silently turns `deny_unknown_fields` off (serde collects the leftover
/// keys for the flattened struct instead of refusing them), and a key
/// that does nothing must stay an error. This macro writes the list into
/// each struct as plain fields, so each keeps its strict derive, and it
/// writes the `target_keys()` copy from the same list.
///
/// Adding a target key is one line here; what it means is then said in
/// `Resolver::target`. The order is the one serde names them in an
/// "expected one of" message.
macro_rules! with_target_keys {
    ($($item:tt)*) => {
        target_keys_into! {
            [
                url: String,
                api_key_header: String,
                gzip: bool,
                timeout_secs: i64,
                batch_size: i64,
                max_attempts: i64,
                retry_base_secs: i64,
                retry_max_secs: i64,
            ]
            $($item)*
        }
    };
}

/// The expansion of [`with_target_keys!`]: `keys struct NAME;` makes the
/// list alone; `struct NAME { HEAD } then { TAIL }` makes a table with its
/// own keys before and after the target keys, and a `target_keys()` that
/// copies them out.
macro_rules! target_keys_into {
    (
        [$($key:ident: $ty:ty,)*]
        $(#[$attr:meta])*
        keys struct $name:ident;
    ) => {
        $(#[$attr])*
        pub struct $name {
            $(pub $key: Option<$ty>,)*
        }
    };
    (
        [$($key:ident: $ty:ty,)*]
        $(#[$attr:meta])*
        struct $name:ident { $($head:tt)* }
        $(then { $($tail:tt)* })?
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($head)*
            $(pub $key: Option<$ty>,)*
            $($($tail)*)?
        }

        impl $name {
            /// The target keys this table sets.
            pub fn target_keys(&self) -> TargetKeys {
                TargetKeys {
                    $($key: self.$key.clone(),)*
                }
            }
        }
    };
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_state")]
    pub state: String,
    #[serde(default = "default_tombstone_days")]
    pub tombstone_days: i64,
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: i64,
    #[serde(default = "default_source_timeout_secs")]
    pub source_timeout_secs: i64,
    pub target: Option<RawTarget>,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub report: RawReport,
    #[serde(default)]
    pub feeds: Vec<RawFeed>,
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

with_target_keys! {
    /// The target keys one table sets (a feed, or `[target]`); `None` is
    /// "not written here".
    #[derive(Debug, Default, Clone)]
    keys struct TargetKeys;
}

with_target_keys! {
    /// `[target]`: the target keys, then the secrets' variable names (which
    /// only this table takes).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawTarget {}
    then {
        pub token_env: Option<String>,
        pub api_key_env: Option<String>,
        pub signing_secret_env: Option<String>,
    }
}

/// `[schedule]`: one crontab line per job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    #[serde(default = "every_minute")]
    pub sync: String,
    #[serde(default = "every_five")]
    pub retry: String,
    #[serde(default = "every_five")]
    pub send: String,
    #[serde(default = "nightly")]
    pub cleanup: String,
    pub resync: Option<String>,
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

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub file: Option<String>,
}

/// `[report]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    pub file: Option<String>,
}

with_target_keys! {
    /// One `[[feeds]]` table: the feed's own keys, then the target keys it
    /// overrides.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawFeed {
        pub name: Option<String>,
        pub source: Option<String>,
        pub command: Option<String>,
        pub sqlite: Option<String>,
        pub database_url_env: Option<String>,
        pub query: Option<String>,
        pub json_columns: Option<Vec<String>>,
        pub format: Option<Format>,
        pub key: Option<Vec<String>>,
        #[serde(default)]
        pub hash_exclude: Vec<String>,
        #[serde(default)]
        pub sort_arrays: Vec<String>,
        #[serde(default)]
        pub mode: Mode,
        pub keep_data: Option<bool>,
        #[serde(default = "yes")]
        pub snapshot: bool,
        #[serde(default = "default_deleted_field")]
        pub deleted_field: String,
        pub max_deletes: Option<toml::Value>,
        pub source_token_env: Option<String>,
        pub source_api_key_env: Option<String>,
        pub source_api_key_header: Option<String>,
    }
}

fn yes() -> bool {
    true
}
fn default_deleted_field() -> String {
    "deleted".into()
}
