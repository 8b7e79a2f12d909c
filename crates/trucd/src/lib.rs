#![forbid(unsafe_code)]
//! `trucd`, the relay daemon: the gRPC service for unit adapters over mutual TLS, on the
//! engine of `truc-relay` and the store of `truc-store`.
//!
//! [`run`] has the shape tests need: it takes a bound listener (port 0 in tests) and a
//! shutdown future.

pub mod admin;
pub mod check;
pub mod config;
pub mod demo;
pub mod grpc;
pub mod intake;
pub mod link;
pub mod metrics;
pub mod pki;
pub mod recut;
pub mod server;
pub mod tls;
pub mod transport_report;

pub use config::Config;
pub use server::{prepare, run, serve, Listeners, Prepared, ServeOptions};
