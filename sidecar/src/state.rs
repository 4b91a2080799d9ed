//! What the HA loop knows, shared with the REST API. The API only reads it,
//! so it keeps answering while the loop waits on a slow store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::cluster::{ClusterView, MemberStatus, PgState, Role};
use crate::config::{Config, LiveConfig};
use crate::dynamic::DynamicConfig;
use crate::postgres::{Observation, Postgres};

/// The leader lease as this member knows it, kept by the lease task.
#[derive(Debug, Default)]
pub struct LeaseClock {
    deadline: Mutex<Option<Instant>>,
}

impl LeaseClock {
    /// A renewal sent at `sent` succeeded for a lease of `ttl`.
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        let mut d = self.deadline.lock().unwrap();
        let new = sent + ttl;
        // Never move the deadline back because of a slow, late answer.
        if d.is_none_or(|old| new > old) {
            *d = Some(new);
        }
    }

    /// A new lease, granted at `sent`, replaces the old one (which may have
    /// had a later deadline).
    pub fn replaced(&self, sent: Instant, ttl: Duration) {
        *self.deadline.lock().unwrap() = Some(sent + ttl);
    }

    /// The lease expired in the store: nothing attached to it survives.
    pub fn lost(&self) {
        *self.deadline.lock().unwrap() = None;
    }

    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap()
    }
}

/// Running totals of what the HA loop and the lease keeper did, for
/// `/metrics`. Written by one task each, read at scrape time.
#[derive(Debug, Default)]
pub struct HaCounters {
    /// Promotions of this member without an operator's request.
    pub failovers: AtomicU64,
    /// Promotions of this member asked for by a switchover or manual failover.
    pub switchovers: AtomicU64,
    /// Lease renewals that failed or timed out.
    pub lease_renewal_failures: AtomicU64,
}

/// The last cycle's picture, replaced whole at the end of each cycle.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub view: ClusterView,
    pub dynamic: DynamicConfig,
    pub pg_state: PgState,
    pub role: Role,
    pub observation: Option<Observation>,
    /// When the store last answered.
    pub dcs_last_seen: Option<SystemTime>,
    /// When the loop last finished a cycle (for /liveness).
    pub last_cycle: Instant,
    /// The status this member last published.
    pub published: Option<MemberStatus>,
    /// This member's lease id when the view was taken.
    pub my_lease: i64,
    /// Its data directory was made (cloned, restored) and has not streamed
    /// from a leader since.
    pub not_streamed: bool,
}

/// An operator request the HA loop carries out between cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCommand {
    /// Restart PostgreSQL in its current role.
    Restart,
    /// Throw the data directory away and clone the leader again.
    Reinitialize,
    /// Re-render postgresql.conf and reload PostgreSQL.
    Reload,
}

impl MemberCommand {
    pub fn name(&self) -> &'static str {
        match self {
            MemberCommand::Restart => "restart",
            MemberCommand::Reinitialize => "reinitialize",
            MemberCommand::Reload => "reload",
        }
    }
}

/// The outcome reported back to whoever asked: a message either way.
pub type CommandResult = Result<String, String>;

type Pending = (MemberCommand, tokio::sync::oneshot::Sender<CommandResult>);

/// The metrics exporter and the login its PostgreSQL connection uses.
struct ExporterSlot {
    exporter: pgpilot_exporters::Exporter,
    login: (String, String),
}

/// A restart scheduled with `POST /restart {"schedule": ...}`.
pub struct ScheduledRestart {
    /// When, in epoch seconds.
    pub at: u64,
    /// The request's conditions (role, restart_pending, postgres_version) as given.
    pub conditions: serde_json::Map<String, serde_json::Value>,
    /// The task that waits for `at`; aborted by `DELETE /restart`.
    pub task: tokio::task::AbortHandle,
}

pub struct Shared {
    /// The member configuration in force (see [`Shared::config`]).
    pub live: Arc<LiveConfig>,
    pub postgres: Arc<Postgres>,
    pub lease: LeaseClock,
    pub counters: HaCounters,
    /// Collects and renders `/metrics` (the HA loop times its cycles into
    /// it); rebuilt when the monitoring login changes ([`Shared::exporter`]).
    exporter: RwLock<ExporterSlot>,
    /// A reload changed a role password: the leader gives PostgreSQL's
    /// roles the new passwords (`ALTER ROLE`) at its next cycle.
    roles_pending: AtomicBool,
    /// The backup repository's summary, when `[backup]` is configured.
    pub repo_watch: Option<Arc<crate::backup::command::watch::RepoWatch>>,
    /// The async WAL push-ahead worker's state, when it runs.
    pub archive_ahead: std::sync::OnceLock<Arc<crate::archive::ahead::AheadStatus>>,
    /// The REST API's TLS configuration in force, once the API serves: a
    /// reload replaces it.
    pub api_tls: std::sync::OnceLock<crate::tls::TlsSlot>,
    snapshot: RwLock<Snapshot>,
    pending: Mutex<Option<Pending>>,
    /// The command being carried out (taken from `pending`, not finished).
    running: Mutex<Option<MemberCommand>>,
    /// Wakes the HA loop early (a command, a switchover request).
    pub wake: tokio::sync::Notify,
    /// The restart `POST /restart` scheduled, if any (one at a time).
    scheduled_restart: Mutex<Option<ScheduledRestart>>,
    /// `[postgresql.callbacks]`: told what happens to PostgreSQL, runs the
    /// configured programs in the background.
    pub callbacks: crate::ha::callbacks::Callbacks,
}

impl Shared {
    pub fn new(live: Arc<LiveConfig>, postgres: Arc<Postgres>) -> Arc<Self> {
        let config = live.get();
        let dynamic = config.bootstrap.clone();
        let exporter = ExporterSlot {
            exporter: crate::metrics::exporter::exporter(&config),
            login: crate::metrics::exporter::monitoring_login(&config),
        };
        let repo_watch = config.backup.as_ref().map(|_| Default::default());
        let callbacks = crate::ha::callbacks::Callbacks::new(&config);
        Arc::new(Shared {
            live,
            postgres,
            lease: LeaseClock::default(),
            counters: HaCounters::default(),
            exporter: RwLock::new(exporter),
            roles_pending: AtomicBool::new(false),
            repo_watch,
            archive_ahead: std::sync::OnceLock::new(),
            api_tls: std::sync::OnceLock::new(),
            snapshot: RwLock::new(Snapshot {
                view: ClusterView::default(),
                dynamic,
                pg_state: PgState::Stopped,
                role: Role::Uninitialized,
                observation: None,
                dcs_last_seen: None,
                last_cycle: Instant::now(),
                published: None,
                my_lease: 0,
                not_streamed: false,
            }),
            pending: Mutex::new(None),
            running: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            scheduled_restart: Mutex::new(None),
            callbacks,
        })
    }

    /// The scheduled restart's slot (see [`ScheduledRestart`]).
    pub fn scheduled_restart(&self) -> std::sync::MutexGuard<'_, Option<ScheduledRestart>> {
        self.scheduled_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The member configuration in force: what pgpilot started with, plus
    /// the credentials and callbacks of the last reload. Take it once and
    /// use that value whole.
    pub fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    /// The metrics exporter. After a reload changed the monitoring login it
    /// is rebuilt with the new one (its sessions then reconnect), once
    /// PostgreSQL takes it: for the superuser, once a local session has
    /// logged in with the new password; until then the old sessions go on.
    pub fn exporter(&self) -> pgpilot_exporters::Exporter {
        let config = self.config();
        let wanted = crate::metrics::exporter::monitoring_login(&config);
        let as_superuser = config.metrics.username.is_none();
        {
            let slot = self.exporter.read().unwrap_or_else(|e| e.into_inner());
            if slot.login == wanted || (as_superuser && self.live.superuser_unconfirmed()) {
                return slot.exporter.clone();
            }
        }
        let mut slot = self.exporter.write().unwrap_or_else(|e| e.into_inner());
        if slot.login != wanted {
            tracing::info!("metrics: the monitoring connection logs in with the new credentials");
            *slot = ExporterSlot {
                exporter: crate::metrics::exporter::exporter(&config),
                login: wanted,
            };
        }
        slot.exporter.clone()
    }

    /// Put a reloaded configuration in force. `roles`: a role password
    /// changed, so the leader must change PostgreSQL's roles.
    pub fn apply_reload(&self, config: Arc<Config>, roles: bool, callbacks: bool) {
        if callbacks {
            self.callbacks.update(&config);
        }
        // In force first, then pending: the leader never marks the roles
        // done with the configuration before this one.
        self.live.replace(config);
        if roles {
            self.roles_pending.store(true, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    /// Does PostgreSQL still have to learn a role password from a reload?
    pub fn roles_pending(&self) -> bool {
        self.roles_pending.load(Ordering::SeqCst)
    }

    /// The leader changed the roles for the configuration of `generation`.
    pub fn roles_done(&self, generation: u64) {
        if self.live.generation() == generation {
            self.roles_pending.store(false, Ordering::SeqCst);
        }
    }

    /// Queue a command for the HA loop; one at a time. The receiver yields
    /// the outcome once the loop has carried it out.
    pub fn submit(
        &self,
        command: MemberCommand,
    ) -> Result<tokio::sync::oneshot::Receiver<CommandResult>, String> {
        let mut pending = self.pending.lock().unwrap();
        let running = self.running.lock().unwrap().clone();
        if let Some(busy) = pending.as_ref().map(|(c, _)| c.clone()).or(running) {
            return Err(format!("{} already in progress", busy.name()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        *pending = Some((command, tx));
        drop(pending);
        self.wake.notify_one();
        Ok(rx)
    }

    /// The HA loop takes the queued command, if any; it counts as in
    /// progress until [`Shared::finish_command`].
    pub fn take_command(&self) -> Option<Pending> {
        let taken = self.pending.lock().unwrap().take();
        if let Some((command, _)) = &taken {
            *self.running.lock().unwrap() = Some(command.clone());
        }
        taken
    }

    pub fn finish_command(&self) {
        *self.running.lock().unwrap() = None;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().unwrap().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.write().unwrap())
    }

    pub fn dynamic(&self) -> DynamicConfig {
        self.snapshot.read().unwrap().dynamic.clone()
    }

    /// Does the last view show the leader key as this member's, on its current lease?
    pub fn holds_leader_key(&self) -> bool {
        let me = self.config();
        let snap = self.snapshot.read().unwrap();
        Self::key_is_mine(&snap, &me.cluster.name)
    }

    fn key_is_mine(snap: &Snapshot, me: &str) -> bool {
        snap.view
            .leader
            .as_ref()
            .is_some_and(|k| k.name == me && k.lease == snap.my_lease && k.lease != 0)
    }

    /// Does this member hold the leader key with a lease that still allows writes?
    pub fn holds_leader_lease(&self, now: Instant) -> bool {
        let deadline = self.own_lease_deadline();
        let snap = self.snapshot.read().unwrap();
        crate::ha::decide::lease_allows_writes(deadline, now, &snap.dynamic)
    }

    /// Until when this member's lease is known to live, while the leader
    /// key is on it; `None` when the key is another's, absent or on no lease.
    pub fn own_lease_deadline(&self) -> Option<Instant> {
        let me = self.config();
        let snap = self.snapshot.read().unwrap();
        Self::key_is_mine(&snap, &me.cluster.name)
            .then(|| self.lease.deadline())
            .flatten()
    }
}
