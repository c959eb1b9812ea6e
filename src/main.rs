use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = feedsync::cli::Cli::parse();
    // Returning (rather than process::exit) lets the state file close, so
    // SQLite checkpoints and removes its -wal file.
    ExitCode::from(feedsync::app::main(cli))
}
