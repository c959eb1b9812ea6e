//! Loopback fakes of the services feedsync speaks to natively (DESIGN.md,
//! "Target kinds"), one file each, each written from the service's own
//! API reference (paths, content types, auth headers, answer shapes), not
//! from feedsync's code, and each able to misbehave on demand.

pub mod algolia;
pub mod elasticsearch;
pub mod meilisearch;
pub mod typesense;
