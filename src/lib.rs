//! feedsync: keep an external commerce service in step with a shop's own
//! catalog. Read an export, diff it against the hashes in one SQLite state
//! file, send only the changes in batches, and never lose one.
//!
//! The way through the code: `cli` (the command line) and `config` (the
//! file: `raw` as written, `resolve`d into per-feed settings, `secrets`
//! named) → `app` (the commands) → `sync` (collect, then `deliver`), which
//! uses `source` (one file per source kind behind `source::Kind`) and
//! `format` (one file per export format), `record` and `canonical` (keys
//! and hashes), `diff` (finding changes), `state` (the SQLite file, by
//! topic), `spool` (data on its way) and `target` (the wire: one file per
//! target kind behind `target::Kind`, the rules every HTTP kind shares in
//! `target::http`, and the `file:` target). `outcome` is what a job did.
//! Around them, for operating it: `init` (a first config), `doctor`
//! (checks), `html` (the status page), `joblog` (the log file), `monitor`
//! (the metrics file and heartbeat pings) and `report` (text and JSON
//! views). Shared words: `job` (the kinds of job and their names), `error`
//! (typed failures), `exit_code` (what each means to cron), `clock` (the
//! one clock), `schedule`, `paths`, `threads` and `stop`.

pub mod app;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod diff;
pub mod doctor;
pub mod error;
pub mod exit_code;
pub mod format;
pub mod html;
pub mod init;
pub mod job;
pub mod joblog;
pub mod monitor;
pub mod outcome;
pub mod paths;
pub mod record;
pub mod report;
pub mod schedule;
pub mod source;
pub mod spool;
pub mod state;
pub mod stop;
pub mod sync;
pub mod target;
pub mod threads;
