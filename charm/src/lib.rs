//! The Juju charm of charmed-postgresql: one binary, installed as the
//! charm's `dispatch` (docs/charm.md).
//!
//! Layers, bottom up:
//!
//! - plain data: [`context`] (the hook environment as one typed event),
//!   [`status`], [`config`] (options and their checks), [`peer`] (the peer
//!   databags), [`etcd_client`] (the `etcd` relation's fields),
//!   [`relation`] (the other applications' relations),
//!   [`etcd`] and [`cluster`] (what etcdctl and patronictl print),
//!   [`extensions`] (the plugin options' extensions: SQL and what it reads),
//!   [`client`] (the `database` endpoint: requests, SQL, answers),
//!   [`cos`] (what a unit publishes to the COS agent), [`s3`] and
//!   [`backup`] (the S3 relation, backups and restores),
//!   [`tls`] (the `certificates` relation's requests and certificates),
//!   [`plan`] (steps);
//! - drivers behind traits: [`tools`] (Juju's hook tools), [`snap`] (the
//!   `snap` client), and [`host`] (clock, memory, randomness);
//! - the decision: [`observe`] reads one snapshot, [`reconcile`] and
//!   [`actions`] are pure functions of it, [`apply`] carries the plan out;
//! - [`dispatch`]: one run, and its exit status; `main.rs` wires the real
//!   drivers.

pub mod actions;
pub mod apply;
pub mod backup;
pub mod client;
pub mod cluster;
pub mod config;
pub mod context;
pub mod cos;
pub mod dispatch;
pub mod etcd;
pub mod etcd_client;
pub mod etcd_tls;
pub mod extensions;
pub mod host;
pub mod observe;
pub mod peer;
pub mod plan;
pub mod reconcile;
pub mod relation;
pub mod s3;
pub mod snap;
pub mod status;
pub mod tls;
pub mod tools;

#[cfg(test)]
mod testing;
