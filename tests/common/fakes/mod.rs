//! Loopback fakes of the services feedsync speaks natively, each written
//! from the service's own API reference.

pub mod meilisearch;
