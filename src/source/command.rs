//! A command source: `sh -c` in the config's folder, its stdout read as the
//! export. A non-zero exit is a source error with the tail of its stderr;
//! at the deadline a watchdog kills its whole process group.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use super::{Context, Deadline, End, Finish, Kind, Opened, Source, Watchdog};
use crate::config::{Feed, Format};
use crate::error::{Error, Result};

/// How much of a failing command's stderr is shown.
const STDERR_TAIL: usize = 2048;

/// A feed whose source is a `command`.
pub struct CommandSource<'a> {
    pub command: &'a str,
}

impl Kind for CommandSource<'_> {
    fn open(&self, feed: &Feed, cx: &Context<'_>, deadline: Deadline) -> Result<Opened> {
        let command = self.command;
        // Its own process group, so that the watchdog reaches everything the
        // command started (`sh -c` children, their background jobs), whatever
        // holds the pipes.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .process_group(0)
            .current_dir(cx.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::source(format!("command `{command}`: cannot start: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        // Drain stderr as it comes (a full pipe would stall the command) and
        // keep its tail for the error message.
        let stderr = std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
            tail
        });
        let group = child.id() as libc::pid_t;
        // The group outlives its leader while any member lives, and its id is
        // not reused until then; the watchdog is disarmed once the command has
        // been waited for.
        let watchdog = deadline.watch(move || unsafe {
            libc::kill(-group, libc::SIGKILL);
        });
        Ok(Opened::Stream(Source {
            reader: deadline.reader(stdout),
            format: feed.format.unwrap_or(Format::Ndjson),
            size: None,
            file: None,
            end: End::Finish(Box::new(Exit {
                child,
                command: command.to_string(),
                stderr,
                deadline,
                watchdog,
            })),
        }))
    }
}

/// A running command: its exit status, and the tail of its stderr for
/// errors, are judged once its stdout was read; its watchdog stays armed
/// until it has been waited for.
struct Exit {
    child: Child,
    command: String,
    stderr: JoinHandle<Vec<u8>>,
    deadline: Deadline,
    watchdog: Watchdog,
}

impl Finish for Exit {
    fn finish(self: Box<Self>, complete: bool) -> Result<()> {
        let Exit {
            mut child,
            command,
            stderr,
            deadline,
            watchdog,
        } = *self;
        // Both waits end by the deadline at the latest: the watchdog
        // kills the whole group, and with it whatever holds stderr.
        let status = child
            .wait()
            .map_err(|e| Error::source(format!("command `{command}`: {e}")))?;
        let tail = stderr.join().unwrap_or_default();
        drop(watchdog);
        if deadline.passed() {
            return Err(Error::source(format!(
                "command `{command}`: {}; it was killed with its process group",
                deadline.reason()
            )));
        }
        if status.success() {
            return Ok(());
        }
        // Abandoned early, the command may die of the closed pipe;
        // that is our doing, not its failure.
        if !complete && status.signal() == Some(libc::SIGPIPE) {
            return Ok(());
        }
        let tail = String::from_utf8_lossy(&tail);
        let tail = tail.trim();
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".into(),
        };
        Err(Error::source(if tail.is_empty() {
            format!("command `{command}` {how}")
        } else {
            format!("command `{command}` {how}: {tail}")
        }))
    }
}
