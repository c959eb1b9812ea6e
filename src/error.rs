//! Typed errors of the library, each mapped to the exit code DESIGN.md
//! promises, so every caller agrees on what a failure means to cron.

use std::fmt;

/// Exit codes, as listed in DESIGN.md. Scripts depend on these numbers.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ITEMS_FAILED: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const SOURCE: u8 = 3;
    pub const TARGET_REFUSED: u8 = 4;
    pub const STATE: u8 = 5;
    pub const DELETE_GUARD: u8 = 6;
    pub const LOCKED: u8 = 75;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Usage or config error: nothing was read or sent.
    #[error("{0}")]
    Config(String),
    /// A source could not be read or parsed; the message names the place.
    #[error("{0}")]
    Source(String),
    /// The target refused us as a client (401/403/404/405, TLS).
    #[error("{0}")]
    TargetRefused(String),
    /// The state file cannot be opened, is corrupt, or cannot be written.
    #[error("{0}")]
    State(String),
    /// The mass-delete guard stopped a feed.
    #[error("{0}")]
    DeleteGuard(String),
    /// Another run holds the lock.
    #[error("another feedsync run holds the lock on {0}")]
    Locked(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Source(_) => exit::SOURCE,
            Error::TargetRefused(_) => exit::TARGET_REFUSED,
            Error::State(_) => exit::STATE,
            Error::DeleteGuard(_) => exit::DELETE_GUARD,
            Error::Locked(_) => exit::LOCKED,
        }
    }

    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }

    pub fn source(msg: impl fmt::Display) -> Self {
        Error::Source(msg.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::State(format!("state file: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Error texts are kept to 1 KB, cut at a character boundary.
pub fn clip(s: &str) -> &str {
    if s.len() <= 1024 {
        return s;
    }
    let mut end = 1024;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
