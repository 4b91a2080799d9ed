//! An in-process cluster store with etcd's semantics that matter to HA:
//! leases that expire on tokio's clock, create-if-absent and compare-and-swap,
//! and a per-member switch that cuts that member off (a partition).
//! For unit tests; several handles share one store, one per member.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{keys, view_from_entries, Dcs, DcsError, DcsResult, RawEntry};
use crate::cluster::{ClusterView, FailoverRequest, HistoryEntry, LeaderStatus, MemberStatus};
use crate::dynamic::DynamicConfig;

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    lease: Option<u64>,
}

#[derive(Debug, Default)]
struct Store {
    revision: i64,
    next_lease: u64,
    entries: BTreeMap<String, Entry>,
    leases: BTreeMap<u64, Instant>,
}

impl Store {
    /// Drop expired leases and every key attached to them.
    fn expire(&mut self, now: Instant) -> bool {
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, expiry)| **expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        let before = self.entries.len();
        for id in &dead {
            self.leases.remove(id);
        }
        self.entries
            .retain(|_, e| e.lease.is_none_or(|l| !dead.contains(&l)));
        if self.entries.len() != before {
            self.revision += 1;
        }
        self.entries.len() != before
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<u64>) {
        self.revision += 1;
        let revision = self.revision;
        let create_revision = self
            .entries
            .get(key)
            .map(|e| e.create_revision)
            .unwrap_or(revision);
        self.entries.insert(
            key.to_string(),
            Entry {
                value,
                create_revision,
                mod_revision: revision,
                lease,
            },
        );
    }

    fn delete(&mut self, key: &str) -> bool {
        let removed = self.entries.remove(key).is_some();
        if removed {
            self.revision += 1;
        }
        removed
    }
}

/// The shared store; hand out one [`MemoryDcs`] per member with [`MemoryStore::member`].
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn member(&self, name: &str, ttl: Duration) -> MemoryDcs {
        MemoryDcs {
            store: self.clone(),
            member: name.to_string(),
            ttl: Mutex::new(ttl),
            lease: Mutex::new(0),
            reachable: AtomicBool::new(true),
        }
    }

    /// Snapshot as any member would see it (expired leases applied).
    pub fn view(&self) -> ClusterView {
        let mut store = self.inner.lock().unwrap();
        store.expire(Instant::now());
        view_from_entries(store.entries.iter().map(|(k, e)| RawEntry {
            key: k,
            value: &e.value,
            revision: e.mod_revision,
            lease: e.lease.unwrap_or(0) as i64,
        }))
        .expect("memory store holds only what pgpilot wrote")
    }

    /// Write a raw key, as an operator or another tool might.
    #[allow(dead_code)] // for tests that store a value as a buggy member would
    pub fn put_raw(&self, key: &str, value: &str) {
        self.inner
            .lock()
            .unwrap()
            .put(key, value.as_bytes().to_vec(), None);
        self.changed.notify_waiters();
    }
}

pub struct MemoryDcs {
    store: MemoryStore,
    member: String,
    ttl: Mutex<Duration>,
    lease: Mutex<u64>,
    reachable: AtomicBool,
}

impl MemoryDcs {
    pub fn member_name(&self) -> &str {
        &self.member
    }

    /// Cut this member off from the store (true) or heal the cut (false).
    pub fn set_partitioned(&self, cut: bool) {
        self.reachable.store(!cut, Ordering::SeqCst);
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store, &mut u64) -> T) -> DcsResult<T> {
        if !self.reachable.load(Ordering::SeqCst) {
            return Err(DcsError::Unavailable("partitioned (test)".into()));
        }
        let mut store = self.store.inner.lock().unwrap();
        let now = Instant::now();
        let expired = store.expire(now);
        let mut lease = self.lease.lock().unwrap();
        if *lease != 0 && !store.leases.contains_key(&lease) {
            *lease = 0;
        }
        let before = store.revision;
        let out = f(&mut store, &mut lease);
        let changed = expired || store.revision != before;
        drop(store);
        if changed {
            self.store.changed.notify_waiters();
        }
        Ok(out)
    }

    fn lease_for_write(&self, store: &mut Store, lease: &mut u64) -> u64 {
        if *lease == 0 {
            store.next_lease += 1;
            *lease = store.next_lease;
            store
                .leases
                .insert(*lease, Instant::now() + self.lease_ttl());
        }
        *lease
    }

    fn compare_and_put(&self, key: &str, value: Vec<u8>, expected: Option<i64>) -> DcsResult<bool> {
        self.with_store(|store, _| {
            let current = store.entries.get(key).map(|e| e.mod_revision);
            let ok = match expected {
                None => current.is_none(),
                Some(rev) => current == Some(rev),
            };
            if ok {
                store.put(key, value, None);
            }
            ok
        })
    }

    fn member_key(&self) -> String {
        format!("{}{}", keys::MEMBERS, self.member)
    }
}

impl Dcs for MemoryDcs {
    async fn load(&self) -> DcsResult<ClusterView> {
        self.with_store(|_, _| ())?;
        Ok(self.store.view())
    }

    fn lease_id(&self) -> i64 {
        *self.lease.lock().unwrap() as i64
    }

    fn lease_ttl(&self) -> Duration {
        *self.ttl.lock().unwrap()
    }

    async fn change_lease_ttl(&self, ttl: Duration) -> DcsResult<()> {
        *self.ttl.lock().unwrap() = ttl;
        let member_key = self.member_key();
        let name = self.member.as_bytes().to_vec();
        self.with_store(|store, lease| {
            let old = *lease;
            *lease = 0;
            let new = self.lease_for_write(store, lease);
            for key in [member_key.as_str(), keys::LEADER] {
                let ours = store.entries.get(key).is_some_and(|e| {
                    e.lease == Some(old) && (key != keys::LEADER || e.value == name)
                });
                if ours {
                    let value = store.entries[key].value.clone();
                    store.put(key, value, Some(new));
                }
            }
            store.leases.remove(&old);
        })
    }

    async fn reclaim_leader(&self, seen_revision: i64) -> DcsResult<bool> {
        let name = self.member.as_bytes().to_vec();
        self.with_store(|store, lease| {
            let ok = store
                .entries
                .get(keys::LEADER)
                .is_some_and(|e| e.value == name && e.mod_revision == seen_revision);
            if ok {
                let id = self.lease_for_write(store, lease);
                store.put(keys::LEADER, name, Some(id));
            }
            ok
        })
    }

    async fn keepalive(&self) -> DcsResult<Option<Duration>> {
        let ttl = self.lease_ttl();
        let had_lease = *self.lease.lock().unwrap() != 0;
        self.with_store(|store, lease| {
            if had_lease && *lease == 0 {
                return None; // expired since the last renewal
            }
            let id = self.lease_for_write(store, lease);
            store.leases.insert(id, Instant::now() + ttl);
            Some(ttl)
        })
    }

    async fn touch_member(&self, status: &MemberStatus) -> DcsResult<()> {
        let value = serde_json::to_vec(status).expect("member status serializes");
        let key = self.member_key();
        self.with_store(|store, lease| {
            let id = self.lease_for_write(store, lease);
            store.put(&key, value, Some(id));
        })
    }

    async fn delete_member(&self) -> DcsResult<()> {
        let key = self.member_key();
        self.with_store(|store, _| {
            store.delete(&key);
        })
    }

    async fn race_initialize(&self) -> DcsResult<bool> {
        self.with_store(|store, lease| {
            if store.entries.contains_key(keys::INITIALIZE) {
                return false;
            }
            let id = self.lease_for_write(store, lease);
            store.put(keys::INITIALIZE, Vec::new(), Some(id));
            true
        })
    }

    async fn set_initialize(&self, system_id: &str) -> DcsResult<()> {
        self.with_store(|store, _| store.put(keys::INITIALIZE, system_id.as_bytes().to_vec(), None))
    }

    async fn cancel_initialize(&self) -> DcsResult<()> {
        self.with_store(|store, _| {
            if store
                .entries
                .get(keys::INITIALIZE)
                .is_some_and(|e| e.value.is_empty())
            {
                store.delete(keys::INITIALIZE);
            }
        })
    }

    async fn acquire_leader(&self) -> DcsResult<bool> {
        let name = self.member.clone().into_bytes();
        self.with_store(|store, lease| {
            if store.entries.contains_key(keys::LEADER) {
                return false;
            }
            let id = self.lease_for_write(store, lease);
            store.put(keys::LEADER, name, Some(id));
            true
        })
    }

    async fn release_leader(&self) -> DcsResult<bool> {
        let name = self.member.as_bytes();
        self.with_store(|store, _| {
            if store
                .entries
                .get(keys::LEADER)
                .is_some_and(|e| e.value == name)
            {
                store.delete(keys::LEADER)
            } else {
                false
            }
        })
    }

    async fn write_config(&self, config: &DynamicConfig, expected: Option<i64>) -> DcsResult<bool> {
        let value = serde_json::to_vec(config).expect("config serializes");
        self.compare_and_put(keys::CONFIG, value, expected)
    }

    async fn write_sync(
        &self,
        sync: &crate::cluster::SyncState,
        expected: Option<i64>,
    ) -> DcsResult<bool> {
        let value = serde_json::to_vec(sync).expect("sync serializes");
        self.compare_and_put(keys::SYNC, value, expected)
    }

    async fn write_status(&self, status: &LeaderStatus) -> DcsResult<()> {
        let value = serde_json::to_vec(status).expect("status serializes");
        self.with_store(|store, _| store.put(keys::STATUS, value, None))
    }

    async fn write_history(&self, history: &[HistoryEntry]) -> DcsResult<()> {
        let value = serde_json::to_vec(history).expect("history serializes");
        self.with_store(|store, _| store.put(keys::HISTORY, value, None))
    }

    async fn write_failover(&self, request: Option<&FailoverRequest>) -> DcsResult<()> {
        let value = request.map(|r| serde_json::to_vec(r).expect("failover serializes"));
        self.with_store(|store, _| match value {
            Some(v) => store.put(keys::FAILOVER, v, None),
            None => {
                store.delete(keys::FAILOVER);
            }
        })
    }

    async fn wait_leader_change(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.store.changed.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leader_key_expires_with_its_lease() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        let b = store.member("b", Duration::from_secs(10));
        assert!(a.acquire_leader().await.unwrap());
        assert!(!b.acquire_leader().await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(a.keepalive().await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.view().leader_name(), Some("a"));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(store.view().leader_name(), None);
        assert!(
            a.keepalive().await.unwrap().is_none(),
            "expired lease is reported"
        );
        assert!(b.acquire_leader().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_change_keeps_the_leader_key_on_a_new_lease() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        assert!(a.acquire_leader().await.unwrap());
        let old = a.lease_id();
        a.change_lease_ttl(Duration::from_secs(30)).await.unwrap();
        assert_ne!(a.lease_id(), old);
        let key = store.view().leader.unwrap();
        assert_eq!((key.name.as_str(), key.lease), ("a", a.lease_id()));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            store.view().leader_name(),
            Some("a"),
            "lives by the new ttl"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.view().leader_name(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn initialize_claim_dies_with_its_owner() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        let b = store.member("b", Duration::from_secs(10));
        assert!(a.race_initialize().await.unwrap());
        assert!(!b.race_initialize().await.unwrap());
        // a dies: no keepalive; its claim goes with its lease.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.view().initialize, None);
        assert!(b.race_initialize().await.unwrap());
        // Once the cluster exists, the key no longer depends on anyone.
        b.set_initialize("123").await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(store.view().initialize.as_deref(), Some("123"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_member_wins_initialize() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        let b = store.member("b", Duration::from_secs(10));
        assert!(a.race_initialize().await.unwrap());
        assert!(!b.race_initialize().await.unwrap());
        a.cancel_initialize().await.unwrap();
        assert!(b.race_initialize().await.unwrap());
        b.set_initialize("123").await.unwrap();
        b.cancel_initialize().await.unwrap();
        assert_eq!(store.view().system_id(), Some("123"));
    }

    #[tokio::test(start_paused = true)]
    async fn partitioned_member_cannot_write() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        a.set_partitioned(true);
        assert!(a.acquire_leader().await.unwrap_err().is_transient());
        a.set_partitioned(false);
        assert!(a.acquire_leader().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn config_compare_and_swap() {
        let store = MemoryStore::new();
        let a = store.member("a", Duration::from_secs(10));
        let cfg = DynamicConfig::default();
        assert!(a.write_config(&cfg, None).await.unwrap());
        assert!(!a.write_config(&cfg, None).await.unwrap());
        let rev = store.view().config_revision;
        assert!(a.write_config(&cfg, Some(rev)).await.unwrap());
        assert!(!a.write_config(&cfg, Some(rev)).await.unwrap());
    }
}
