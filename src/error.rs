//! Typed errors of the library. Each variant says what failed, and so which
//! exit code DESIGN.md promises for it ([`Error::exit_code`]); callers
//! decide by variant, never by an error's text.

use std::fmt;

use crate::exit_code::ExitCode;

/// A failure, by the part of the world it happened in.
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
    /// The state file cannot be opened, is corrupt, or cannot be written;
    /// the message names the file.
    #[error("{0}")]
    State(String),
    /// A SQLite call on the state file failed. Its text does not name the
    /// file; `State::open` and `backup_to` turn it into [`Error::State`]
    /// with the path. (Not marked as the error's source: its text is
    /// already in this one's, and `{:#}` would print it twice.)
    #[error("state file: {0}")]
    Sqlite(rusqlite::Error),
    /// The mass-delete guard stopped a feed.
    #[error("{0}")]
    DeleteGuard(String),
    /// Another run holds the lock (on the named file).
    #[error("another feedsync run holds the lock on {0}")]
    Locked(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Config,
            Error::Source(_) => ExitCode::Source,
            Error::TargetRefused(_) => ExitCode::TargetRefused,
            Error::State(_) | Error::Sqlite(_) => ExitCode::State,
            Error::DeleteGuard(_) => ExitCode::DeleteGuard,
            Error::Locked(_) => ExitCode::Locked,
        }
    }

    /// An error that stops the whole job, not only its feed: the state
    /// file cannot be trusted, or the lock is gone.
    pub fn stops_job(&self) -> bool {
        matches!(self.exit_code(), ExitCode::State | ExitCode::Locked)
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
        Error::Sqlite(e)
    }
}

/// The exit code for an error that reached the command line: that of the
/// first typed [`Error`] in its chain (context added on the way keeps it),
/// else [`ExitCode::Internal`], never 1 ("items failed").
pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(ExitCode::Internal, Error::exit_code)
}

/// Whether an error that reached the command line is [`Error::Locked`].
pub fn is_locked(e: &anyhow::Error) -> bool {
    exit_code_of(e) == ExitCode::Locked
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn typed_errors_keep_their_code_through_context() {
        let e: anyhow::Error = Err::<(), _>(Error::source("feed.csv: line 3: bad quote"))
            .context("reading feed products")
            .unwrap_err();
        assert_eq!(exit_code_of(&e), ExitCode::Source);
        let e = anyhow::Error::from(Error::Locked("x.lock".into())).context("tick");
        assert!(is_locked(&e));
    }

    #[test]
    fn an_untyped_error_is_internal_not_items_failed() {
        let e = anyhow::Error::from(std::io::Error::other("signal handler"));
        assert_eq!(exit_code_of(&e), ExitCode::Internal);
        assert_ne!(exit_code_of(&e), ExitCode::ItemsFailed);
    }

    #[test]
    fn sqlite_errors_are_state_errors() {
        let e = Error::from(rusqlite::Error::InvalidQuery);
        assert_eq!(e.exit_code(), ExitCode::State);
        assert!(e.stops_job());
        assert!(e.to_string().starts_with("state file: "), "{e}");
        // Said once, as before the variant existed.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e))
                .matches("state file")
                .count(),
            1
        );
        assert!(!Error::source("x").stops_job());
    }
}
