//! The cluster store: the key layout under `/<namespace>/<scope>/` and the
//! operations the HA loop needs, behind one trait. `etcd` is the real store;
//! `memory` is an in-process store with leases for unit tests.

pub mod etcd;
/// The in-memory store of the unit tests (the HA decision's tables):
/// compiled only for them, never into the release binary.
#[cfg(test)]
pub mod memory;

use std::future::Future;
use std::time::Duration;

use crate::cluster::{
    ClusterView, FailoverRequest, HistoryEntry, LeaderKey, LeaderStatus, Member, MemberStatus,
};
use crate::dynamic::DynamicConfig;

#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// The store could not be reached or did not answer in time: retry later.
    #[error("etcd is unreachable: {0}")]
    Unavailable(String),
    /// The store refused the request (auth, permission, bad request): retrying will not help.
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// A value in the store is not what pgpilot wrote.
    #[error("key {key} holds an unreadable value: {message}")]
    Corrupt { key: String, message: String },
}

impl DcsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DcsError::Unavailable(_))
    }
}

pub type DcsResult<T> = Result<T, DcsError>;

/// Key names relative to the cluster prefix.
pub mod keys {
    pub const INITIALIZE: &str = "initialize";
    pub const LEADER: &str = "leader";
    pub const CONFIG: &str = "config";
    pub const FAILOVER: &str = "failover";
    pub const STATUS: &str = "status";
    pub const HISTORY: &str = "history";
    pub const SYNC: &str = "sync";
    pub const MEMBERS: &str = "members/";

    /// `/<namespace>/<scope>/`
    pub fn prefix(namespace: &str, scope: &str) -> String {
        format!("/{namespace}/{scope}/")
    }
}

/// Everything the HA loop, the API and ctl do with the store.
///
/// Each member has one lease; its member key and (when leader) the leader
/// key are attached to it, so both vanish when the member stops renewing.
pub trait Dcs: Send + Sync + 'static {
    /// One consistent read of the whole cluster prefix.
    fn load(&self) -> impl Future<Output = DcsResult<ClusterView>> + Send;

    /// This member's current lease id (0: none granted yet or it expired).
    fn lease_id(&self) -> i64;

    /// Re-attach the leader key, still holding our name, to our current
    /// lease (after a restart or a lease re-grant); true when done.
    fn reclaim_leader(&self, seen_revision: i64) -> impl Future<Output = DcsResult<bool>> + Send;

    /// TTL of the leases this member is granted.
    fn lease_ttl(&self) -> Duration;

    /// Move this member's keys (member key, and the leader key if it holds
    /// it) onto a new lease of `ttl`, atomically, then drop the old lease.
    fn change_lease_ttl(&self, ttl: Duration) -> impl Future<Output = DcsResult<()>> + Send;

    /// Renew this member's lease once (granting one if it has none) and
    /// return its TTL; `Ok(None)` when the lease had already expired (keys on
    /// it are gone; a new lease is granted for later writes).
    fn keepalive(&self) -> impl Future<Output = DcsResult<Option<Duration>>> + Send;

    /// Publish this member's status under `members/<name>` on its lease.
    fn touch_member(&self, status: &MemberStatus) -> impl Future<Output = DcsResult<()>> + Send;

    /// Remove this member's key (clean shutdown).
    fn delete_member(&self) -> impl Future<Output = DcsResult<()>> + Send;

    /// Create `initialize` (empty) if absent; true when this member won the race.
    fn race_initialize(&self) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Record the system identifier after a successful initdb.
    fn set_initialize(&self, system_id: &str) -> impl Future<Output = DcsResult<()>> + Send;

    /// Undo a won race whose bootstrap failed, so another member may try.
    fn cancel_initialize(&self) -> impl Future<Output = DcsResult<()>> + Send;

    /// Take the leader key if nobody holds it; true when taken.
    fn acquire_leader(&self) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Delete the leader key if this member holds it; true when deleted.
    fn release_leader(&self) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Write the dynamic configuration. `expected_revision`: `None` creates it
    /// only if absent, `Some(rev)` replaces it only if unchanged since `rev`.
    fn write_config(
        &self,
        config: &DynamicConfig,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Leader-only bookkeeping: last WAL position.
    fn write_status(&self, status: &LeaderStatus) -> impl Future<Output = DcsResult<()>> + Send;

    /// New timeline history (written by a member right after it promoted).
    fn write_history(&self, history: &[HistoryEntry])
        -> impl Future<Output = DcsResult<()>> + Send;

    /// Write the `sync` key: `expected_revision` `None` creates it only if
    /// absent, `Some(rev)` replaces it only if unchanged since `rev`.
    fn write_sync(
        &self,
        sync: &crate::cluster::SyncState,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Write or clear (`None`) the pending switchover/failover request.
    fn write_failover(
        &self,
        request: Option<&FailoverRequest>,
    ) -> impl Future<Output = DcsResult<()>> + Send;

    /// Wait until the leader key changes or `timeout` passes.
    fn wait_leader_change(&self, timeout: Duration) -> impl Future<Output = ()> + Send;
}

/// One key as the store returned it, relative to the cluster prefix.
pub struct RawEntry<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub revision: i64,
    /// Lease id the key is attached to, 0 for none.
    pub lease: i64,
}

/// Build a [`ClusterView`] from the raw key/values under the prefix (relative
/// keys, mod_revision). Shared by every store so they parse alike.
pub fn view_from_entries<'a>(
    entries: impl IntoIterator<Item = RawEntry<'a>>,
) -> DcsResult<ClusterView> {
    let mut view = ClusterView::default();
    for RawEntry {
        key,
        value,
        revision,
        lease,
    } in entries
    {
        let corrupt = |e: &dyn std::fmt::Display| DcsError::Corrupt {
            key: key.to_string(),
            message: e.to_string(),
        };
        let text = match std::str::from_utf8(value) {
            Ok(text) => text,
            // Another member's key, unreadable: skipped below like bad JSON.
            Err(e) if key.starts_with(keys::MEMBERS) => {
                tracing::warn!(key, error = %e, "ignoring a member key that is not UTF-8");
                continue;
            }
            Err(e) => return Err(corrupt(&e)),
        };
        match key {
            keys::INITIALIZE => view.initialize = Some(text.to_string()),
            keys::LEADER => {
                view.leader = Some(LeaderKey {
                    name: text.to_string(),
                    revision,
                    lease,
                })
            }
            keys::CONFIG => {
                view.config = Some(serde_json::from_str(text).map_err(|e| corrupt(&e))?);
                view.config_revision = revision;
            }
            keys::FAILOVER if !text.trim().is_empty() => {
                view.failover = Some(serde_json::from_str(text).map_err(|e| corrupt(&e))?)
            }
            keys::SYNC if !text.trim().is_empty() => {
                view.sync = Some(serde_json::from_str(text).map_err(|e| corrupt(&e))?);
                view.sync_revision = revision;
            }
            keys::STATUS => view.status = serde_json::from_str(text).map_err(|e| corrupt(&e))?,
            keys::HISTORY => view.history = serde_json::from_str(text).map_err(|e| corrupt(&e))?,
            _ => {
                if let Some(name) = key.strip_prefix(keys::MEMBERS) {
                    // A member key we cannot read is skipped, not fatal: one
                    // bad writer must not blind the whole cluster.
                    match serde_json::from_str::<MemberStatus>(text) {
                        Ok(status) => view.members.push(Member {
                            name: name.to_string(),
                            status,
                        }),
                        Err(e) => {
                            tracing::warn!(member = name, error = %e, "ignoring unreadable member key")
                        }
                    }
                }
            }
        }
    }
    view.members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(view)
}
