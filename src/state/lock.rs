//! The run lock beside the state file: one run at a time, freed by the
//! kernel when a run dies, and naming its holder for `doctor`.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The run lock: an advisory lock on `<state>.lock`, held for the whole run.
/// The kernel drops it when the process dies, so a killed run frees it.
/// The holder writes its pid and start time into the file, so that
/// `doctor` can name a run that holds it too long.
pub struct RunLock {
    _file: File,
}

/// Who holds the run lock, as the holder wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// When it took the lock (unix seconds, by `clock`).
    pub since: i64,
}

fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn try_lock(state: &Path) -> Result<File> {
    let path = lock_path(state);
    let _ = std::fs::create_dir_all(crate::paths::parent_dir(&path));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::State(format!("lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked(path.display().to_string())),
        Err(TryLockError::Error(e)) => {
            Err(Error::State(format!("lock file {}: {e}", path.display())))
        }
    }
}

/// Takes the run lock, or fails with [`Error::Locked`] at once.
pub fn lock(state: &Path) -> Result<RunLock> {
    use std::os::unix::fs::FileExt;
    let file = try_lock(state)?;
    // Only a hint for doctor: a full disk must not stop the run here.
    let record = format!("{} {}\n", std::process::id(), crate::clock::now_secs());
    let _ = file
        .set_len(0)
        .and_then(|_| file.write_all_at(record.as_bytes(), 0));
    Ok(RunLock { _file: file })
}

/// Whether the run lock is free, taking and releasing it (and writing
/// nothing) when it is.
pub fn probe_lock(state: &Path) -> Result<()> {
    try_lock(state).map(drop)
}

/// The holder the lock file names, if that process is alive. (Only
/// meaningful while the lock is held: a finished run's record stays
/// behind, and a holder that could not write its own leaves the last.)
pub fn lock_holder(state: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(lock_path(state)).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let since = words.next()?.parse().ok()?;
    alive(pid).then_some(Holder { pid, since })
}

/// Whether a process with this pid exists (one of another user counts).
pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks without sending anything.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}
