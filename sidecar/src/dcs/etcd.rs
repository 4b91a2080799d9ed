//! etcd v3 (gRPC) implementation of the cluster store.

use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::watch;

use super::{keys, view_from_entries, Dcs, DcsError, DcsResult};
use crate::cluster::{ClusterView, FailoverRequest, HistoryEntry, LeaderStatus, MemberStatus};
use crate::config::DcsSection;
use crate::dynamic::DynamicConfig;

/// Connection settings, separated from the member file so ctl can build them too.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<crate::config::DcsTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl EtcdSettings {
    pub fn from_section(section: &DcsSection, request_timeout: Duration) -> Self {
        EtcdSettings {
            endpoints: section.endpoints.clone(),
            username: section.username.clone(),
            password: section.password.clone(),
            tls: section.tls.clone(),
            connect_timeout: Duration::from_secs(section.connect_timeout),
            request_timeout,
        }
    }
}

fn map_err(e: etcd_client::Error) -> DcsError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => match status.code() {
            tonic_code::Unauthenticated
            | tonic_code::PermissionDenied
            | tonic_code::InvalidArgument => DcsError::Refused(status.message().to_string()),
            _ => DcsError::Unavailable(format!(
                "{}: {}",
                code_name(status.code()),
                status.message()
            )),
        },
        E::InvalidArgs(m) | E::EndpointError(m) => DcsError::Refused(m),
        E::InvalidUri(u) => DcsError::Refused(u.to_string()),
        other => DcsError::Unavailable(other.to_string()),
    }
}

use tonic::Code as tonic_code;

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

/// Open a client (used by the daemon and by ctl).
pub async fn connect(settings: &EtcdSettings) -> DcsResult<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_timeout(settings.request_timeout)
        .with_keep_alive(Duration::from_secs(2), settings.request_timeout)
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &settings.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| DcsError::Refused(format!("cannot read {}: {e}", p.display())))
        };
        let mut tls_options =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            tls_options = tls_options.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &tls.domain {
            tls_options = tls_options.domain_name(domain.clone());
        }
        options = options.with_tls(tls_options);
    }
    let connecting = Client::connect(settings.endpoints.clone(), Some(options));
    let mut client = tokio::time::timeout(settings.connect_timeout, connecting)
        .await
        .map_err(|_| {
            DcsError::Unavailable(format!(
                "no answer from {} within {:?}",
                settings.endpoints.join(", "),
                settings.connect_timeout
            ))
        })?
        .map_err(map_err)?;
    // The channel connects lazily: prove the store answers before going on.
    tokio::time::timeout(settings.connect_timeout, client.status())
        .await
        .map_err(|_| {
            DcsError::Unavailable(format!(
                "no answer from {} within {:?}",
                settings.endpoints.join(", "),
                settings.connect_timeout
            ))
        })?
        .map_err(map_err)?;
    Ok(client)
}

/// Read the whole prefix once, linearizably (used by ctl and the API's `/cluster`).
pub async fn load_view(client: &Client, prefix: &str) -> DcsResult<ClusterView> {
    let mut kv = client.kv_client();
    let response = kv
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(map_err)?;
    let mut entries = Vec::with_capacity(response.kvs().len());
    for kv in response.kvs() {
        let key = kv.key_str().map_err(map_err)?;
        let relative = key.strip_prefix(prefix).unwrap_or(key);
        entries.push(super::RawEntry {
            key: relative,
            value: kv.value(),
            revision: kv.mod_revision(),
            lease: kv.lease(),
        });
    }
    view_from_entries(entries)
}

pub struct EtcdDcs {
    client: Client,
    prefix: String,
    member: String,
    ttl: std::sync::Mutex<Duration>,
    /// Current lease id; 0 when it must be granted before the next write.
    /// The mutex serializes grants; `current_lease` mirrors it for sync readers.
    lease: tokio::sync::Mutex<i64>,
    current_lease: std::sync::atomic::AtomicI64,
    /// Bumped by the watch task whenever the leader key changes.
    leader_changes: watch::Receiver<u64>,
    watch_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for EtcdDcs {
    fn drop(&mut self) {
        if let Some(task) = self.watch_task.lock().unwrap().take() {
            task.abort();
        }
    }
}

impl EtcdDcs {
    pub async fn connect(
        settings: &EtcdSettings,
        namespace: &str,
        scope: &str,
        member: &str,
        ttl: Duration,
    ) -> DcsResult<Self> {
        let client = connect(settings).await?;
        let prefix = keys::prefix(namespace, scope);
        let (tx, rx) = watch::channel(0u64);
        let task = tokio::spawn(watch_leader(
            client.clone(),
            format!("{prefix}{}", keys::LEADER),
            tx,
        ));
        Ok(EtcdDcs {
            client,
            prefix,
            member: member.to_string(),
            ttl: std::sync::Mutex::new(ttl),
            lease: tokio::sync::Mutex::new(0),
            current_lease: std::sync::atomic::AtomicI64::new(0),
            leader_changes: rx,
            watch_task: Mutex::new(Some(task)),
        })
    }

    /// TTL for leases granted from now on.
    pub fn set_ttl(&mut self, ttl: Duration) {
        *self.ttl.lock().unwrap() = ttl;
    }

    fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    fn member_key(&self) -> String {
        format!("{}{}{}", self.prefix, keys::MEMBERS, self.member)
    }

    /// The current lease, granting one if there is none.
    async fn ensure_lease(&self) -> DcsResult<i64> {
        let mut lease = self.lease.lock().await;
        if *lease == 0 {
            let granted = self
                .client
                .lease_client()
                .grant(self.lease_ttl().as_secs().max(1) as i64, None)
                .await
                .map_err(map_err)?;
            *lease = granted.id();
            self.current_lease
                .store(*lease, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(*lease)
    }

    async fn put(&self, relative: &str, value: String) -> DcsResult<()> {
        self.client
            .kv_client()
            .put(self.key(relative), value, None)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn txn(&self, txn: Txn) -> DcsResult<bool> {
        let response = self.client.kv_client().txn(txn).await.map_err(map_err)?;
        Ok(response.succeeded())
    }

    /// Put `value` at `relative` if the key is absent (`expected` None) or
    /// unchanged since revision `expected`; true when written.
    async fn compare_and_put(
        &self,
        relative: &str,
        value: String,
        expected: Option<i64>,
    ) -> DcsResult<bool> {
        let key = self.key(relative);
        let compare = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
        };
        self.txn(
            Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value, None)]),
        )
        .await
    }
}

async fn watch_leader(client: Client, key: String, changes: watch::Sender<u64>) {
    let mut counter = 0u64;
    loop {
        let mut watcher = client.watch_client();
        match watcher.watch(key.clone(), Some(WatchOptions::new())).await {
            Ok(mut stream) => {
                while let Ok(Some(response)) = stream.message().await {
                    if response.canceled() {
                        break;
                    }
                    let relevant = response
                        .events()
                        .iter()
                        .any(|e| matches!(e.event_type(), EventType::Delete | EventType::Put));
                    if relevant {
                        counter += 1;
                        let _ = changes.send(counter);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "leader watch could not start"),
        }
        if changes.is_closed() {
            return;
        }
        // Something may have changed while the watch was down: wake the loop.
        counter += 1;
        let _ = changes.send(counter);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Dcs for EtcdDcs {
    async fn load(&self) -> DcsResult<ClusterView> {
        load_view(&self.client, &self.prefix).await
    }

    fn lease_id(&self) -> i64 {
        self.current_lease.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lease_ttl(&self) -> Duration {
        *self.ttl.lock().unwrap()
    }

    async fn change_lease_ttl(&self, ttl: Duration) -> DcsResult<()> {
        let mut lease = self.lease.lock().await;
        let old = *lease;
        let granted = self
            .client
            .lease_client()
            .grant(ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(map_err)?;
        let new = granted.id();
        let mut kv = self.client.kv_client();
        let member = kv.get(self.member_key(), None).await.map_err(map_err)?;
        let leader_key = self.key(keys::LEADER);
        let mut ops = Vec::new();
        if let Some(m) = member.kvs().first() {
            ops.push(TxnOp::put(
                self.member_key(),
                m.value().to_vec(),
                Some(PutOptions::new().with_lease(new)),
            ));
        }
        // The leader key moves only if it is still ours, in the same transaction.
        let moved_leader = self
            .txn(
                Txn::new()
                    .when([Compare::value(
                        leader_key.clone(),
                        CompareOp::Equal,
                        self.member.clone(),
                    )])
                    .and_then(
                        [TxnOp::put(
                            leader_key,
                            self.member.clone(),
                            Some(PutOptions::new().with_lease(new)),
                        )]
                        .into_iter()
                        .chain(ops.clone())
                        .collect::<Vec<_>>(),
                    )
                    .or_else(ops),
            )
            .await?;
        *lease = new;
        self.current_lease
            .store(new, std::sync::atomic::Ordering::SeqCst);
        *self.ttl.lock().unwrap() = ttl;
        if old != 0 {
            let _ = self.client.lease_client().revoke(old).await;
        }
        tracing::info!(
            ttl = ttl.as_secs(),
            leader = moved_leader,
            "moved my keys to a lease with the new ttl"
        );
        Ok(())
    }

    async fn reclaim_leader(&self, seen_revision: i64) -> DcsResult<bool> {
        let key = self.key(keys::LEADER);
        let lease = self.ensure_lease().await?;
        self.txn(
            Txn::new()
                .when([
                    Compare::value(key.clone(), CompareOp::Equal, self.member.clone()),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, seen_revision),
                ])
                .and_then([TxnOp::put(
                    key,
                    self.member.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]),
        )
        .await
    }

    async fn keepalive(&self) -> DcsResult<Option<Duration>> {
        let id = self.ensure_lease().await?;
        match self.client.lease_client().keep_alive(id).await {
            Ok(_) => Ok(Some(self.lease_ttl())),
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                // Expired: keys on it are gone; the next write grants a new lease.
                let mut lease = self.lease.lock().await;
                if *lease == id {
                    *lease = 0;
                    self.current_lease
                        .store(0, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(None)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn touch_member(&self, status: &MemberStatus) -> DcsResult<()> {
        let value = serde_json::to_string(status).expect("member status serializes");
        let lease = self.ensure_lease().await?;
        self.client
            .kv_client()
            .put(
                self.member_key(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_member(&self) -> DcsResult<()> {
        self.client
            .kv_client()
            .delete(self.member_key(), None)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn race_initialize(&self) -> DcsResult<bool> {
        let key = self.key(keys::INITIALIZE);
        // The claim lives on this member's lease: if it dies before
        // set_initialize, the claim expires and another member bootstraps.
        let lease = self.ensure_lease().await?;
        self.txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    "",
                    Some(PutOptions::new().with_lease(lease)),
                )]),
        )
        .await
    }

    async fn set_initialize(&self, system_id: &str) -> DcsResult<()> {
        self.put(keys::INITIALIZE, system_id.to_string()).await
    }

    async fn cancel_initialize(&self) -> DcsResult<()> {
        let key = self.key(keys::INITIALIZE);
        self.txn(
            Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, "")])
                .and_then([TxnOp::delete(key, None)]),
        )
        .await
        .map(|_| ())
    }

    async fn acquire_leader(&self) -> DcsResult<bool> {
        let key = self.key(keys::LEADER);
        let lease = self.ensure_lease().await?;
        self.txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    self.member.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]),
        )
        .await
    }

    async fn release_leader(&self) -> DcsResult<bool> {
        let key = self.key(keys::LEADER);
        self.txn(
            Txn::new()
                .when([Compare::value(
                    key.clone(),
                    CompareOp::Equal,
                    self.member.clone(),
                )])
                .and_then([TxnOp::delete(key, None)]),
        )
        .await
    }

    async fn write_config(&self, config: &DynamicConfig, expected: Option<i64>) -> DcsResult<bool> {
        let value = serde_json::to_string(config).expect("config serializes");
        self.compare_and_put(keys::CONFIG, value, expected).await
    }

    async fn write_sync(
        &self,
        sync: &crate::cluster::SyncState,
        expected: Option<i64>,
    ) -> DcsResult<bool> {
        let value = serde_json::to_string(sync).expect("sync serializes");
        self.compare_and_put(keys::SYNC, value, expected).await
    }

    async fn write_status(&self, status: &LeaderStatus) -> DcsResult<()> {
        self.put(
            keys::STATUS,
            serde_json::to_string(status).expect("status serializes"),
        )
        .await
    }

    async fn write_history(&self, history: &[HistoryEntry]) -> DcsResult<()> {
        self.put(
            keys::HISTORY,
            serde_json::to_string(history).expect("history serializes"),
        )
        .await
    }

    async fn write_failover(&self, request: Option<&FailoverRequest>) -> DcsResult<()> {
        match request {
            Some(r) => {
                self.put(
                    keys::FAILOVER,
                    serde_json::to_string(r).expect("failover serializes"),
                )
                .await
            }
            None => {
                self.client
                    .kv_client()
                    .delete(self.key(keys::FAILOVER), None)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }
        }
    }

    async fn wait_leader_change(&self, timeout: Duration) {
        let mut changes = self.leader_changes.clone();
        changes.mark_unchanged();
        let _ = tokio::time::timeout(timeout, changes.changed()).await;
    }
}
