//! The shared test harness: a scratch directory with a config, the real
//! `feedsync` binary run as a process, the loopback receiver, and readers
//! for the state file and the fixtures.
#![allow(dead_code, unused_imports)]
pub mod receiver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value};

pub use receiver::{Behavior, Export, Receiver};

/// The real Magento sample export: 1,994 products, HTML with newlines in
/// quoted fields.
pub fn luma_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/luma/products.csv")
}

/// A CSV file read by an independent parser (the `csv` crate): header and
/// rows as string maps, in file order.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Map<String, Value>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(|v| Value::String(v.to_string())))
                .collect()
        })
        .collect();
    (header, rows)
}

pub fn write_csv(path: &Path, header: &[String], rows: &[Map<String, Value>]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    for row in rows {
        w.write_record(header.iter().map(|h| row[h].as_str().unwrap()))
            .unwrap();
    }
    w.flush().unwrap();
}

pub fn write_ndjson(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// How one run of the binary went.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A scratch installation: a directory holding `feedsync.toml`, the
/// exports and the state file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub envs: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            envs: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("feedsync.toml")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn config(&self, text: &str) {
        self.write("feedsync.toml", text);
    }

    pub fn set_env(&mut self, k: &str, v: &str) {
        self.envs.retain(|(n, _)| n != k);
        self.envs.push((k.into(), v.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_feedsync"));
        c.current_dir(self.dir.path())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("FEEDSYNC_NOW")
            .env_remove("FEEDSYNC_CONFIG");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs feedsync to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().unwrap().into()
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("feedsync.sqlite")
    }

    /// Opens the state file for inspection.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state_path()).unwrap()
    }

    /// Every item row of a feed as text, for "the state is unchanged".
    pub fn dump(&self) -> Vec<String> {
        if !self.state_path().exists() {
            return Vec::new();
        }
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT f.name, i.id, hex(i.hash), hex(i.raw_hash), i.deleted, i.status,
                        i.attempts, i.error, i.data
                 FROM items i JOIN feeds f ON f.id = i.feed_id ORDER BY f.name, i.id",
            )
            .unwrap();
        stmt.query_map([], |r| {
            let cols: Vec<String> = (0..9)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                        .unwrap()
                })
                .collect();
            Ok(cols.join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// id → status for a feed, as `items` shows them.
    pub fn statuses(&self, feed: &str) -> BTreeMap<String, String> {
        self.statuses_via_cli(feed)
    }

    /// Makes the state file one an older feedsync (schema 1) left behind:
    /// the items table of then (text statuses, every key stored), without
    /// the tables, columns, index and triggers later versions added.
    pub fn downgrade_to_schema_1(&self) {
        self.db()
            .execute_batch(
                "CREATE TABLE items_v1 (
                     feed_id INTEGER NOT NULL REFERENCES feeds(id), id TEXT NOT NULL,
                     key TEXT NOT NULL, hash BLOB NOT NULL, raw_hash BLOB,
                     deleted INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
                     modified_at INTEGER NOT NULL, sent_at INTEGER, next_attempt_at INTEGER,
                     data TEXT, UNIQUE (feed_id, id));
                 INSERT INTO items_v1 (rowid, feed_id, id, key, hash, raw_hash, deleted, status,
                                       attempts, error, modified_at, sent_at, next_attempt_at, data)
                 SELECT i.rowid, i.feed_id, i.id, coalesce(i.key, json_object(f.key_field, i.id)),
                        i.hash, i.raw_hash, i.deleted,
                        CASE WHEN i.status = 0 AND i.rowid BETWEEN f.unconfirmed_from
                                  AND f.unconfirmed_to THEN 'pending'
                             ELSE CASE i.status WHEN 0 THEN 'sent' WHEN 1 THEN 'pending'
                                  WHEN 2 THEN 'retry' ELSE 'failed' END END,
                        i.attempts, i.error, i.modified_at, i.sent_at, i.next_attempt_at, i.data
                 FROM items i JOIN feeds f ON f.id = i.feed_id;
                 DROP TABLE items;
                 ALTER TABLE items_v1 RENAME TO items;
                 DROP TABLE feed_counts; DROP TABLE feed_metrics; DROP TABLE tasks;
                 ALTER TABLE feeds DROP COLUMN key_field;
                 ALTER TABLE feeds DROP COLUMN unconfirmed_from;
                 ALTER TABLE feeds DROP COLUMN unconfirmed_to;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
    }
}

/// A small deterministic PRNG (xorshift64*), so a failing seed can be
/// replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for a child process to exit, at most `limit`.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let mut status = None;
    wait_for("the process to exit", limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

pub mod config;
pub mod targets;

pub use config::{ConfigBuilder, FeedConfig, TargetConfig};
pub use targets::{FileTarget, TargetFake, TargetKind};

impl Env {
    /// Writes `feedsync.toml` from a builder.
    pub fn write_config(&self, config: &ConfigBuilder) {
        self.config(&config.to_toml());
    }

    /// id → status for a feed, as `items --json` reports them (tombstones
    /// included): what a user sees, for tests of behaviour. `statuses`
    /// reads the file itself, for tests about the file.
    pub fn statuses_via_cli(&self, feed: &str) -> BTreeMap<String, String> {
        let run = self.run(&["items", "--feed", feed, "--json", "--limit", "1000000000"]);
        run.assert_code(0);
        run.json()["items"]
            .as_array()
            .expect("items --json has an items array")
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// How many items of `feed` have `status`, via `items --json`.
    pub fn count_via_cli(&self, feed: &str, status: &str) -> usize {
        self.statuses_via_cli(feed)
            .values()
            .filter(|s| *s == status)
            .count()
    }
}

pub mod db;
pub mod fakes;
pub mod pg;
pub mod rss;
