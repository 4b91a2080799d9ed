//! What is in the repository and what a restore is asked to do: the
//! formats and the rules over them, read and written whole.
//!
//! | module | does |
//! |---|---|
//! | [`manifest`] | the manifest: what a backup holds; restore and verify read a backup only through it |
//! | [`catalog`] | `backup.json`: the list of complete backups, rebuilt from the manifests when damaged |
//! | [`walrange`] | WAL positions, segment names, timelines, what the archive holds |
//! | [`lineage`] | archived timelines: which a backup recovers along; the backup for a new replica |
//! | [`request`] | what a restore is asked to do (from `pgpilot restore`, the HA loop, `[bootstrap_from]`) |
//! | [`bootstrap`] | `[bootstrap_from]`: the request that creates a cluster from a backup |
//! | [`recovery`] | the recovery settings a request becomes in `postgresql.auto.conf` |
//!
//! Imports nothing from [`super::command`] or [`super::data`]; only the
//! shared items of [`super`] (the error, the context), the repository
//! driver and plain data.

pub(crate) mod bootstrap;
pub(crate) mod catalog;
pub(crate) mod lineage;
pub(crate) mod manifest;
pub(crate) mod recovery;
pub(crate) mod request;
pub(crate) mod walrange;
