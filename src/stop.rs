//! Cooperative shutdown for `daemon`: SIGTERM and SIGINT set a flag that the
//! jobs check between batches, so the batch in flight is finished and
//! recorded before the process exits.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Routes SIGTERM and SIGINT to the flag instead of killing the process.
pub fn install() -> std::io::Result<()> {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, &STOP)?;
    }
    Ok(())
}

/// Whether a shutdown was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
