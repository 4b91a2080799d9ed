//! pgpilot: a high-availability and backup companion for PostgreSQL.
//!
//! The library holds everything; `main.rs` only parses the command line
//! and sets up the process. Public modules are those the binary and the
//! tests crate use (docs/design.md has the module map and its layers); the
//! others are the crate's own. The storage conformance suite is compiled
//! only for tests and with the `testing` feature, which the tests crate
//! enables.

pub mod api;
pub mod archive;
pub mod backup;
pub mod client;
pub(crate) mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub(crate) mod dcs;
pub mod demo;
pub mod dynamic;
pub mod ha;
pub mod logging;
pub mod lsn;
pub(crate) mod member_file;
pub(crate) mod metrics;
pub(crate) mod pidfile;
pub(crate) mod postgres;
pub mod repo;
pub(crate) mod secret;
pub mod snap;
pub(crate) mod state;
pub(crate) mod status;
pub mod timestamp;
pub mod tls;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes shared by every command.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Runtime failure.
    pub const FAILURE: i32 = 1;
    /// Bad configuration or arguments, or a start-up precondition not met
    /// (etcd unreachable, duplicate member): nothing was started.
    pub const USAGE: i32 = 2;
}
