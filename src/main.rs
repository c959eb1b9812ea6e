use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = feedsync::cli::Cli::parse();
    // Returning (rather than process::exit) lets the state file close, so
    // SQLite checkpoints and removes its -wal file.
    feedsync::app::main(cli).into()
}
