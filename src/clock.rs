//! The one place that reads the wall clock. Schedules, backoff, Retry-After
//! and run records all ask here, so `FEEDSYNC_NOW` (RFC 3339) can freeze time
//! for tests and replays.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{Error, Result};

static FIXED: OnceLock<Option<DateTime<Utc>>> = OnceLock::new();

/// Reads `FEEDSYNC_NOW` once. Call it early so a bad value is a config error
/// instead of a surprise halfway through a run.
pub fn init() -> Result<()> {
    if FIXED.get().is_some() {
        return Ok(());
    }
    let fixed = match std::env::var("FEEDSYNC_NOW") {
        Ok(v) if !v.is_empty() => Some(
            DateTime::parse_from_rfc3339(&v)
                .map_err(|e| Error::config(format!("FEEDSYNC_NOW={v:?} is not RFC 3339: {e}")))?
                .with_timezone(&Utc),
        ),
        _ => None,
    };
    let _ = FIXED.set(fixed);
    Ok(())
}

pub fn now() -> DateTime<Utc> {
    match FIXED.get() {
        Some(Some(t)) => *t,
        _ => Utc::now(),
    }
}

/// Seconds since the epoch, the unit the state file stores.
pub fn now_secs() -> i64 {
    now().timestamp()
}

/// How times appear in JSON output and text reports.
pub fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The real wall clock in unix seconds, for pacing the daemon's sleep (a
/// frozen `FEEDSYNC_NOW` must not freeze the loop).
pub fn wall_secs() -> i64 {
    Utc::now().timestamp()
}
