//! pgpilot: a high-availability and backup companion for PostgreSQL.
//!
//! The library holds everything; `main.rs` only parses the command line.

pub mod api;
pub mod archive;
pub mod backup;
pub mod client;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dcs;
pub mod demo;
pub mod dynamic;
pub mod ha;
pub mod logging;
pub mod member_file;
pub mod metrics;
pub mod pidfile;
pub mod postgres;
pub mod repo;
pub mod secret;
pub mod snap;
pub mod state;
pub mod status;
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
