//! `feedsync init`: a first config that works as written. It comes with the
//! Luma sample store's exports (embedded in the binary) and a `file:`
//! target, so `feedsync init && feedsync sync` in an empty folder is a real
//! sync a newcomer can look at, then edit towards their own shop.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The sample exports, written beside the config under `exports/`.
const SAMPLES: [(&str, &[u8]); 2] = [
    (
        "exports/products.csv",
        include_bytes!("../examples/luma/products.csv"),
    ),
    (
        "exports/categories.csv",
        include_bytes!("../examples/luma/categories.csv"),
    ),
];

/// The license the sample data ships under, kept with it.
const SAMPLE_LICENSE: (&str, &[u8]) = (
    "exports/LICENSE_AFL.txt",
    include_bytes!("../examples/luma/LICENSE_AFL.txt"),
);

/// The example config. Every commented value is the default; the rest
/// points at the sample exports and a `file:` target, so it runs as is.
pub const EXAMPLE: &str = r#"# feedsync config, written by `feedsync init`. Paths are relative to this file.
# It syncs the Luma sample store (exports/*.csv, real Magento sample data) to
# NDJSON files under out/. Try it:
#
#   feedsync sync -v      # sends every item; run it again and nothing is sent
#   feedsync status       # per-feed counts
#   feedsync doctor       # checks this setup
#
# Then point `source` at your own exports and `url` at your receiver.
# The full reference is DESIGN.md; every commented value below is the default.

state = "feedsync.sqlite"            # the state file: feedsync's whole memory (mode 0600)
# tombstone_days = 7                 # `cleanup` drops delivered deletions older than this
# max_record_bytes = 16777216        # a larger record is a source error (exit 3)
# source_timeout_secs = 900          # a source still being read after this is a source error (exit 3)

[target]
url = "file:out/{feed}.ndjson"       # or "https://ingest.example.com/feeds/{feed}"
# kind = "webhook"                   # feedsync's envelope; or a search service's own API:
#                                    # elasticsearch | opensearch | meilisearch | typesense | algolia
#                                    # (url = the service's base URL; see the README per kind)
# index = "{feed}"                   # service kinds: the index (Typesense: collection) at the service
# app_id = "…"                       # algolia only; id_field = "id": meilisearch only
# max_batch_bytes = 10000000         # a batch also closes before its body passes this size
# signature = "feedsync"             # webhook: or "standard" (Standard Webhooks, whsec_… secret)
# Secrets are never written here: these *name* environment variables.
# token_env = "FEEDSYNC_TOKEN"       # Authorization: Bearer $FEEDSYNC_TOKEN
# api_key_env = "FEEDSYNC_API_KEY"   # sent as header `api_key_header`
# api_key_header = "x-api-key"
# signing_secret_env = "FEEDSYNC_SECRET"   # X-Feedsync-Signature: sha256=<HMAC of the body>
# gzip = true                        # (false by default for the service kinds)
# timeout_secs = 30
# batch_size = 500
# max_attempts = 0                   # 0: retry for ever; N: an item becomes `failed` after N attempts
# retry_base_secs = 60               # backoff: base * 2^(attempts-1), plus jitter,
# retry_max_secs = 3600              # capped here; a later Retry-After wins

# [targets.search]                   # more targets: a feed picks one with target = "search"
# kind = "elasticsearch"
# url = "http://127.0.0.1:9200"
# api_key_env = "ES_API_KEY"

[schedule]                           # what `feedsync run` (cron, every minute) starts; local time
# sync = "* * * * *"
# send = "*/5 * * * *"
# retry = "*/5 * * * *"
# cleanup = "0 2 * * *"
# resync = "0 3 * * 0"               # optional weekly full sync (0 and 7 = Sunday)

[log]
# file = "feedsync.log"              # JSON lines: one per feed per job

[report]
# file = "status.html"               # an HTML status page, rewritten after every `run` that did work

[metrics]
# file = "feedsync.prom"             # Prometheus text format for node_exporter's textfile collector,
                                     # rewritten atomically after every job

[notify]
# ping_url_env = "FEEDSYNC_PING_URL" # heartbeat pings, healthchecks.io style: {url}/start, {url}, {url}/fail

[[feeds]]
name = "products"
source = "exports/products.csv"      # a file path (csv, ndjson or json)
key = ["sku"]                        # one or more fields that identify an item
hash_exclude = ["updated_at"]        # sent, but a new timestamp alone is not a change
# format = "csv"                     # default: from the file's extension
# sort_arrays = []                   # arrays whose order means nothing
# mode = "immediate"                 # or "legacy": `sync` collects, `send` delivers
# max_deletes = "20%"                # mass-delete guard: a count, or a share of the live items

[[feeds]]
name = "categories"
source = "exports/categories.csv"
key = ["url_key"]
"#;

/// What `init` wrote, for the message it prints.
#[derive(Debug)]
pub struct Written {
    pub config: PathBuf,
    /// Sample files written (those already present are kept).
    pub samples: Vec<PathBuf>,
}

/// Writes the example config at `path` and the sample exports beside it.
/// An existing config is kept unless `force`; an existing sample file is
/// never overwritten, since it may be a real export by now.
pub fn write(path: &Path, force: bool) -> Result<Written> {
    if path.is_dir() {
        return Err(Error::config(format!(
            "{} is a folder; give the config file's path, e.g. {}",
            path.display(),
            path.join("feedsync.toml").display()
        )));
    }
    if path.exists() && !force {
        return Err(Error::config(format!(
            "{} already exists and was kept; pass --force to overwrite it",
            path.display()
        )));
    }
    let dir = crate::paths::parent_dir(path);
    let io =
        |p: &Path, e: std::io::Error| Error::config(format!("cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut samples = Vec::new();
    for (rel, bytes) in SAMPLES.iter().chain([&SAMPLE_LICENSE]) {
        let p = dir.join(rel);
        if p.exists() {
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
        samples.push(p);
    }
    std::fs::write(path, EXAMPLE).map_err(|e| io(path, e))?;
    Ok(Written {
        config: path.to_path_buf(),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let c = crate::config::Config::parse(EXAMPLE, Path::new("/srv/shop/feedsync.toml"))
            .expect("the example config is valid");
        assert_eq!(c.feeds.len(), 2);
        assert!(
            c.feeds[0].target.secrets.token_env.is_none(),
            "no secret needed to try it"
        );
    }
}
