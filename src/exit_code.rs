//! The exit codes DESIGN.md promises, as one type. Cron, scripts and the
//! run history depend on these numbers; the rule for combining several
//! outcomes into one ("the first problem wins") is written here once.

use std::fmt;

/// How a command ended, as the process exit status (`as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ExitCode {
    /// Done: every change was delivered, or nothing was due.
    #[default]
    Ok = 0,
    /// Done, but some items failed in this run (now `retry` or `failed`).
    ItemsFailed = 1,
    /// Usage or config error: nothing was read or sent.
    Config = 2,
    /// A source could not be read or parsed.
    Source = 3,
    /// The target refused us as a client, or failed TLS verification.
    TargetRefused = 4,
    /// The state file cannot be opened, is corrupt, or cannot be written.
    State = 5,
    /// The mass-delete guard stopped a feed.
    DeleteGuard = 6,
    /// An error feedsync has no class for: a bug, or a failure of
    /// something that is neither source, target nor state (installing a
    /// signal handler, encoding a JSON document). Not 1, which says "items
    /// failed" and sends the user looking at items; 70 is `EX_SOFTWARE`
    /// from sysexits.h, the family 75 (`EX_TEMPFAIL`) already comes from.
    Internal = 70,
    /// Another run holds the lock; nothing was done.
    Locked = 75,
}

impl ExitCode {
    /// Every code, in the order of DESIGN.md's table.
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Ok,
        ExitCode::ItemsFailed,
        ExitCode::Config,
        ExitCode::Source,
        ExitCode::TargetRefused,
        ExitCode::State,
        ExitCode::DeleteGuard,
        ExitCode::Internal,
        ExitCode::Locked,
    ];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code behind a number, as stored in a run record.
    pub fn from_code(code: u8) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn is_ok(self) -> bool {
        self == ExitCode::Ok
    }

    /// Combines this outcome with a later one: the first problem wins, so
    /// a job's code is that of the first feed that had a problem, and a
    /// command's that of its first job with one.
    #[must_use]
    pub fn then(self, later: ExitCode) -> ExitCode {
        if self.is_ok() { later } else { self }
    }

    /// [`ExitCode::then`] in place.
    pub fn absorb(&mut self, later: ExitCode) {
        *self = self.then(later);
    }

    /// A word for the code, so the log file reads without the table.
    pub fn word(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::ItemsFailed => "items_failed",
            ExitCode::Config => "config_error",
            ExitCode::Source => "source_error",
            ExitCode::TargetRefused => "target_refused",
            ExitCode::State => "state_error",
            ExitCode::DeleteGuard => "delete_guard",
            ExitCode::Internal => "internal_error",
            ExitCode::Locked => "locked",
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

impl serde::Serialize for ExitCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_designs() {
        let numbers: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 70, 75]);
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ExitCode::from_code(7), None);
    }

    #[test]
    fn the_first_problem_wins() {
        use ExitCode::*;
        assert_eq!(Ok.then(Ok), Ok);
        assert_eq!(Ok.then(Source), Source);
        assert_eq!(ItemsFailed.then(Source), ItemsFailed);
        assert_eq!(TargetRefused.then(ItemsFailed), TargetRefused);
        assert_eq!(Source.then(Ok), Source);
        let mut code = Ok;
        for later in [Ok, DeleteGuard, ItemsFailed, Ok, State] {
            code.absorb(later);
        }
        assert_eq!(code, DeleteGuard);
    }

    #[test]
    fn each_code_has_its_own_word() {
        let mut words: Vec<&str> = ExitCode::ALL.iter().map(|c| c.word()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), ExitCode::ALL.len());
        assert_eq!(ExitCode::Ok.word(), "ok");
        assert_eq!(ExitCode::Locked.word(), "locked");
    }
}
