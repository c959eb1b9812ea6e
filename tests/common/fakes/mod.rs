//! Loopback fakes of the services feedsync speaks natively (DESIGN.md,
//! "Target kinds"), one file per service, each built from that service's
//! own API reference and able to misbehave on demand.

pub mod algolia;
pub mod typesense;
