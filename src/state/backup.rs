//! `backup`: a consistent copy of the state file, made beside a running
//! sync, that appears at its destination only once complete; and the
//! clean-up of what killed backups left behind.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::Connection;

use super::lock::alive;
use super::runs::put_meta;
use super::{State, quick_check};
use crate::error::{Error, Result};

/// The meta row a copy made by `backup` carries: when it was taken. A run
/// that finds it knows the target may hold newer versions than this file
/// remembers, and resends everything once (see `app`).
pub const BACKUP_TAKEN_AT: &str = "backup_taken_at";

impl State {
    /// Writes a consistent copy of the state file to `dest` (mode 0600),
    /// marked with [`BACKUP_TAKEN_AT`]. Safe while a run is writing: the
    /// copy is made in one step, under one read transaction, which WAL lets
    /// run beside the writer. The copy appears at `dest` only once complete.
    pub fn backup_to(&self, dest: &Path, taken_at: i64) -> Result<()> {
        let fail = |what: &dyn std::fmt::Display| {
            Error::State(format!("backup to {}: {what}", dest.display()))
        };
        let name = dest
            .file_name()
            .ok_or_else(|| fail(&"names no file"))?
            .to_string_lossy()
            .into_owned();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        remove_stale_temps(dest, &name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(&e))?;
        let result = (|| -> Result<()> {
            let mut copy = Connection::open(&tmp)?;
            {
                let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
                // -1: every page in one step. Smaller steps would restart
                // whenever the run commits a batch, and might never finish.
                let mut tries = 0;
                loop {
                    match backup.step(-1)? {
                        rusqlite::backup::StepResult::Done => break,
                        _ if tries >= 600 => {
                            return Err(Error::State(
                                "the state file stayed busy for a minute".into(),
                            ));
                        }
                        _ => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                }
            }
            put_meta(&copy, BACKUP_TAKEN_AT, &taken_at.to_string())?;
            let problems = quick_check(&copy)?;
            if !problems.is_empty() {
                return Err(Error::State(format!(
                    "the copy failed its check: {}",
                    problems.join("; ")
                )));
            }
            // Closing checkpoints the copy's WAL into the file and removes it.
            copy.close().map_err(|(_, e)| e)?;
            let io = |e: std::io::Error| Error::State(e.to_string());
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, dest).map_err(io)?;
            // The rename is durable once its folder is.
            let _ = File::open(crate::paths::parent_dir(dest)).and_then(|d| d.sync_all());
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            for ext in ["-wal", "-shm", "-journal"] {
                let mut p = tmp.clone().into_os_string();
                p.push(ext);
                let _ = std::fs::remove_file(p);
            }
        }
        result.map_err(|e| match e {
            Error::State(m) => fail(&m),
            Error::Sqlite(e) => fail(&e),
            e => e,
        })
    }
}

/// Removes what killed backups to `dest` left: the temp copy `.NAME.tmp-PID`
/// (as big as the state file) and SQLite's `-journal`/`-wal`/`-shm` beside
/// it, for every PID that is gone — or is this process, whose name the
/// copy is about to take (a hot journal left under it would be rolled
/// into the new copy). A backup still running keeps its files.
fn remove_stale_temps(dest: &Path, name: &str) {
    let dir = crate::paths::parent_dir(dest);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = ["-journal", "-wal", "-shm"]
            .iter()
            .find_map(|ext| rest.strip_suffix(ext))
            .unwrap_or(rest);
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if (pid == std::process::id() || !alive(pid))
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            log::warn!(
                "cannot remove {}, left by a killed backup: {e}",
                entry.path().display()
            );
        }
    }
}
