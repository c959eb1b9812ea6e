//! Every integration test in one binary, as `just` does (`tests/lib.rs`):
//! the harness is compiled once, and all areas link against it instead of
//! eleven binaries each rebuilding it. Run one area with
//! `cargo test --test integration sync::`, one test by its name.

mod common;

/// One module per area of behaviour.
mod suite {
    mod algolia;
    mod backup;
    mod crash;
    mod database;
    mod delivery;
    mod doctor;
    mod elasticsearch;
    mod fastpath;
    mod formats;
    mod jobs;
    mod meilisearch;
    mod monitoring;
    mod ops;
    mod postgres;
    mod receiver_selftest;
    mod schema;
    mod sources;
    mod sync;
    mod target_config;
    mod target_kinds;
    mod typesense;
}
