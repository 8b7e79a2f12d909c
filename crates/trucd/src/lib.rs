#![forbid(unsafe_code)]
//! `trucd`, the relay daemon: the gRPC service for unit adapters over mutual TLS, on the
//! engine of `truc-relay` and the store of `truc-store`.
//!
//! [`run`] has the shape tests need: it takes a bound listener (port 0 in tests) and a
//! shutdown future.

pub mod config;
pub mod grpc;
pub mod link;
pub mod server;
pub mod tls;

pub use config::Config;
pub use server::run;
