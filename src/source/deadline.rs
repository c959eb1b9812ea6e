//! The bound on one read of a source (`source_timeout_secs`, guarantee 8),
//! so a source that trickles or never ends cannot hold the run, and with
//! it the lock, for ever. One mechanism serves every kind: the stream
//! checks the [`Deadline`] on every read, and a [`Watchdog`] cuts off at
//! the deadline whatever could block a read past it, by the kind's own
//! means.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;

/// The bound on one read of a source, from its opening to the end of its
/// stream, whatever the source does meanwhile: send a byte a second,
/// fall silent, or never exit. The stream checks it on every read
/// ([`Deadline::reader`]); what could block a read past it is cut off at
/// the deadline by the source's own means — ureq's global timeout for
/// HTTP, a [`Watchdog`] that kills a command's process group or
/// interrupts a query (a database source cancels its query on the server
/// the same way).
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    /// Set by a watchdog that cut the source off, in case its clock ran a
    /// little ahead of ours.
    cut: Arc<AtomicBool>,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the deadline has passed, or a watchdog cut the source off.
    pub fn passed(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || Instant::now() >= self.at
    }

    /// The time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Why a source that ran out of time failed, for its message.
    pub fn reason(&self) -> String {
        format!(
            "did not finish within `source_timeout_secs` ({} s)",
            self.limit.as_secs()
        )
    }

    /// The source error for `what` (the source as messages name it).
    pub fn error(&self, what: &str) -> Error {
        Error::source(format!("{what}: {}", self.reason()))
    }

    /// `reader`, failing once the deadline has passed: a read after it,
    /// and an end or error that the cut-off caused.
    pub fn reader<R: Read + Send + 'static>(&self, reader: R) -> Box<dyn Read + Send> {
        Box::new(Timed {
            inner: reader,
            deadline: self.clone(),
        })
    }

    /// Runs `cut` at the deadline, unless the watchdog is dropped first.
    pub fn watch(&self, cut: impl FnOnce() + Send + 'static) -> Watchdog {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let deadline = self.clone();
        let thread = std::thread::spawn(move || {
            let mut wait = deadline.remaining();
            // Dropping the sender wakes us with `Disconnected`.
            while let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(wait) {
                wait = deadline.remaining();
                if wait.is_zero() {
                    deadline.cut.store(true, Ordering::SeqCst);
                    cut();
                    return;
                }
            }
        });
        Watchdog {
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

/// A thread waiting for a deadline; dropping it disarms it.
pub struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Timed<R> {
    inner: R,
    deadline: Deadline,
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let late = || io::Error::new(io::ErrorKind::TimedOut, self.deadline.reason());
        if self.deadline.passed() {
            return Err(late());
        }
        match self.inner.read(buf) {
            Ok(n) if n > 0 => Ok(n),
            // A killed command's pipe ends, a timed-out HTTP body fails:
            // either way the deadline is the news, not the end or error.
            _ if self.deadline.passed() => Err(late()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_fails_the_stream_once_passed_and_a_dropped_watchdog_never_fires() {
        let deadline = Deadline::after(Duration::from_secs(3600));
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        drop(deadline.watch(move || flag.store(true, Ordering::SeqCst)));
        assert!(!fired.load(Ordering::SeqCst));
        let mut r = deadline.reader(&b"abc"[..]);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"abc");

        let deadline = Deadline::after(Duration::ZERO);
        let _armed = deadline.watch(|| {});
        let e = deadline.reader(&b"abc"[..]).read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("`source_timeout_secs` (0 s)"), "{e}");
    }
}
