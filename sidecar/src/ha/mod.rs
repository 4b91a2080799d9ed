//! The HA loop: observe the store and the local instance once per cycle,
//! call the pure [`decide::decide`], execute its actions in order, publish
//! this member's status. The lease is renewed by its own task ([`lease`]).

pub mod callbacks;
mod commands;
mod create;
pub(crate) mod decide;
mod execute;
pub(crate) mod fence;
pub mod guard;
mod handover;
pub(crate) mod lease;
mod promote;
mod rejoin;
pub(crate) mod reload;
mod slots;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{ClusterView, MemberStatus, PgState, Role};
use crate::config::ParamValue;
use crate::dcs::Dcs;
use crate::dynamic::DynamicConfig;
use crate::postgres::conf::{Parameters, Upstream};
use crate::postgres::{Observation, PgError, StopMode};
use crate::state::Shared;
use crate::status::NodeStatus;
use callbacks::Event;
use decide::{DataDir, Decision, Inputs, LocalPg, PeerReport, StoppedAs};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Dcs(#[from] crate::dcs::DcsError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("{0}")]
    Fatal(String),
    /// Making this member's data directory from a copy (a backup,
    /// pg_basebackup) failed: why, in words for the log.
    #[error("{0}")]
    Creation(String),
}

/// Failed bootstraps (initdb): how many in a row, when the next may start, why.
struct BootstrapRetry {
    failures: u32,
    at: tokio::time::Instant,
    why: String,
}

pub struct Ha<D: Dcs> {
    dcs: Arc<D>,
    shared: Arc<Shared>,
    /// `cluster.name` (never changes while pgpilot runs).
    me: String,
    /// For peers' `/patroni` (http or https, with this member's TLS client settings).
    http: crate::client::ApiClient,
    /// Leader the running standby's primary_conninfo points at.
    following: Option<String>,
    /// System identifier of the data directory, read once per data directory.
    system_id: Option<String>,
    last_status_written: Option<u64>,
    /// Since when PostgreSQL has been down while this member led.
    primary_down_since: Option<Instant>,
    /// pg_rewind failed for this data directory (cleared when it is re-created).
    rewind_failed: bool,
    /// The bootstrap from a backup failed: not retried until a restart.
    bootstrap_failed: bool,
    /// The last bootstraps failed: when the next may start, and why.
    bootstrap_retry: Option<BootstrapRetry>,
    /// The `create_replica_methods` entry (its index) that made the data
    /// directory, until the replica has started once.
    replica_made_by: Option<usize>,
    /// Entries skipped at the next replica creation: a replica they made
    /// did not start.
    replica_methods_skip: usize,
    /// Standbys PostgreSQL is told to wait for (sync mode, leader only).
    sync_standbys: Vec<String>,
    /// Leader only: slots kept for members that left, since when ([`slots::plan`]).
    slot_departures: BTreeMap<String, Instant>,
    /// Where the WAL of a crashed former primary ends, by (timeline,
    /// checkpoint): read once per stop ([`rejoin::last_record`]).
    wal_end: Option<((u32, u64), Option<u64>)>,
    /// The store answered this cycle's read (nothing is written to it otherwise).
    store_reachable: bool,
    /// The last decision logged at info while the store did not answer,
    /// and when: repeats are logged once a minute.
    unreachable_logged: Option<(String, Instant)>,
}

impl<D: Dcs> Ha<D> {
    pub fn new(dcs: Arc<D>, shared: Arc<Shared>) -> Self {
        // 2 s per request, 1 s to connect; trusts api.tls.ca_file and shows
        // this member's certificate when the API uses TLS. The files were
        // read when the configuration was loaded, so this does not fail in
        // practice; without them only plain-http peers could be asked.
        let http = crate::client::ApiClient::for_member(&shared.config()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot set up TLS towards other members' APIs");
            crate::client::ApiClient::new(
                &Default::default(),
                Duration::from_secs(2),
                Duration::from_secs(1),
            )
            .expect("a client without TLS material builds")
        });
        Ha {
            me: shared.config().cluster.name.clone(),
            dcs,
            shared,
            http,
            following: None,
            system_id: None,
            last_status_written: None,
            primary_down_since: None,
            rewind_failed: false,
            bootstrap_failed: false,
            bootstrap_retry: None,
            replica_made_by: None,
            replica_methods_skip: 0,
            sync_standbys: Vec::new(),
            slot_departures: BTreeMap::new(),
            wal_end: None,
            store_reachable: true,
            unreachable_logged: None,
        }
    }

    fn me(&self) -> &str {
        &self.me
    }

    /// Run cycles until `shutdown` flips, then stop gracefully.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), HaError> {
        loop {
            let started = Instant::now();
            if let Err(e) = self.cycle().await {
                if let HaError::Fatal(_) = e {
                    // Leave PostgreSQL as it is: a foreign data directory is not ours to stop.
                    return Err(e);
                }
                tracing::warn!(error = %e, "HA cycle failed");
            }
            self.shared.update(|s| s.last_cycle = Instant::now());
            self.shared.exporter().observe_ha_cycle(started.elapsed());
            // While etcd does not answer, look again every second (a read
            // costs nothing), so the member notices at once when it does.
            let loop_wait = match self.shared.dynamic().loop_wait() {
                wait if self.store_reachable => wait,
                wait => wait.min(Duration::from_secs(1)),
            };
            let nap = loop_wait.saturating_sub(started.elapsed());
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.dcs.wait_leader_change(nap) => {}
                _ = self.shared.wake.notified() => {}
                _ = self.shared.postgres.exited.notified() => {}
            }
        }
        self.shutdown().await;
        Ok(())
    }

    async fn load_view(&self) -> Option<ClusterView> {
        let timeout = self.shared.dynamic().retry_timeout();
        match tokio::time::timeout(timeout, self.dcs.load()).await {
            Ok(Ok(mut view)) => {
                self.shared
                    .update(|s| s.dcs_last_seen = Some(SystemTime::now()));
                // A configuration written around the REST API's checks
                // (etcdctl, a buggy member) is not applied: the one in use stays.
                if let Some(Err(invalid)) = view.config.as_ref().map(|c| c.validate("")) {
                    tracing::error!(
                        key = %invalid.key,
                        "ignoring the configuration in etcd, it is invalid: {}; keeping the one in use",
                        invalid.message
                    );
                    view.config = Some(self.shared.dynamic());
                }
                Some(view)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster from etcd");
                None
            }
            Err(_) => {
                tracing::warn!("reading the cluster from etcd timed out after {timeout:?}");
                None
            }
        }
    }

    async fn observe_pg(&self) -> (LocalPg, Option<Observation>) {
        let pg = &self.shared.postgres;
        if !pg.is_running() {
            return (LocalPg::Stopped, None);
        }
        match pg.observe().await {
            Ok(o) => {
                let local = LocalPg::Running {
                    in_recovery: o.in_recovery,
                    wal_position: o
                        .flush_lsn
                        .unwrap_or(0)
                        .max(o.received_lsn.unwrap_or(0))
                        .max(o.replayed_lsn.unwrap_or(0)),
                    timeline: o.timeline.unwrap_or(1),
                };
                (local, Some(o))
            }
            Err(e) => {
                tracing::debug!(error = %e, "PostgreSQL does not answer");
                (LocalPg::Unresponsive, None)
            }
        }
    }

    /// pg_controldata of the stopped instance, for the rejoin decision.
    /// `rejoining`: another member leads, so a former primary that crashed
    /// needs to know where its WAL ends (not read otherwise: a crashed
    /// leader restarting in place must not wait for it).
    async fn stopped_as(&mut self, rejoining: bool) -> Option<StoppedAs> {
        match self.shared.postgres.controldata().await {
            Ok(cd) => {
                // A fresh pg_basebackup copy carries the source's "in
                // production" state but also a backup_label: not a primary.
                let was_primary =
                    matches!(cd.cluster_state.as_str(), "shut down" | "in production")
                        && !self
                            .shared
                            .postgres
                            .data_dir()
                            .join("backup_label")
                            .exists();
                let clean = cd.cluster_state.starts_with("shut down");
                let last_record = if rejoining && was_primary && !clean {
                    self.crashed_wal_end(cd.timeline, cd.checkpoint_lsn).await
                } else {
                    None
                };
                Some(StoppedAs {
                    was_primary,
                    clean,
                    timeline: cd.timeline,
                    checkpoint_lsn: cd.checkpoint_lsn,
                    last_record,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pg_controldata");
                None
            }
        }
    }

    /// Where the last WAL record of a crashed former primary starts on its
    /// timeline (pg_waldump), once per stop; `None` when it cannot be told.
    async fn crashed_wal_end(&mut self, timeline: u32, checkpoint: u64) -> Option<u64> {
        if let Some((key, end)) = self.wal_end {
            if key == (timeline, checkpoint) {
                return end;
            }
        }
        let end = match self
            .shared
            .postgres
            .last_wal_record(timeline, checkpoint)
            .await
        {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read where this former primary's WAL ends");
                None
            }
        };
        if let Some(lsn) = end {
            tracing::info!(
                last_record = %crate::lsn::format_lsn(lsn),
                timeline,
                "this former primary stopped without a shutdown checkpoint; its last WAL record"
            );
        }
        self.wal_end = Some(((timeline, checkpoint), end));
        end
    }

    async fn data_dir_state(
        &mut self,
        observation: Option<&Observation>,
    ) -> Result<DataDir, HaError> {
        let pg = &self.shared.postgres;
        if !pg.is_running() {
            pg.check_data_dir()
                .map_err(|e| HaError::Fatal(e.to_string()))?;
        }
        if !pg.is_initialized() {
            self.system_id = None;
            return Ok(DataDir::Empty);
        }
        if let Some(o) = observation {
            self.system_id = Some(o.system_id.clone());
        }
        if self.system_id.is_none() {
            self.system_id = Some(pg.controldata().await?.system_id);
        }
        Ok(DataDir::Initialized {
            system_id: self.system_id.clone().unwrap_or_default(),
        })
    }

    /// Has this member's data directory streamed from a leader since it was
    /// made? Forgets that it was new once its WAL receiver streams (or it
    /// runs as a primary); tells the API what it is.
    fn note_streaming(&self, observation: Option<&Observation>, data: &DataDir) -> bool {
        let pg = &self.shared.postgres;
        let streamed = observation
            .is_some_and(|o| !o.in_recovery || (o.streaming && o.received_lsn.is_some()));
        if streamed && pg.not_streamed() {
            match pg.clear_not_streamed() {
                Ok(()) => tracing::info!("this replica streams from a leader now"),
                Err(e) => tracing::warn!(error = %e, "cannot record that this replica streamed"),
            }
        }
        let not_streamed = *data != DataDir::Empty && pg.not_streamed();
        self.shared.update(|s| s.not_streamed = not_streamed);
        not_streamed
    }

    /// Ask every other member's API for its status, in parallel.
    async fn poll_peers(&self, view: &ClusterView) -> Vec<PeerReport> {
        let me = self.me().to_string();
        let requests = view.members.iter().filter(|m| m.name != me).map(|m| {
            let http = self.http.clone();
            let url = m.status.api_url.clone();
            let name = m.name.clone();
            async move {
                let status: NodeStatus = http.get_json(&url).await.ok()?;
                Some(PeerReport {
                    name,
                    role: if status.state == PgState::Running {
                        status.role
                    } else {
                        Role::Demoted
                    },
                    wal_position: status.wal_position(),
                    tags: status.tags,
                    not_streamed: status.not_streamed_since_clone,
                })
            }
        });
        futures_util::future::join_all(requests)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn cycle(&mut self) -> Result<(), HaError> {
        if let Some((command, reply)) = self.shared.take_command() {
            tracing::info!(command = command.name(), "carrying out an operator request");
            let outcome = self.run_command(&command).await;
            match &outcome {
                Ok(m) => tracing::info!(command = command.name(), "{m}"),
                Err(m) => tracing::warn!(command = command.name(), "{m}"),
            }
            self.shared.finish_command();
            let _ = reply.send(outcome);
        }
        let fresh_view = self.load_view().await;
        if fresh_view.is_some() != self.store_reachable {
            if fresh_view.is_some() {
                tracing::info!("etcd answers again");
            } else {
                tracing::warn!(
                    "etcd does not answer: deciding on the last view read, with nothing that \
                     needs etcd; PostgreSQL stays read-only unless this member's lease is \
                     provably alive"
                );
            }
            self.store_reachable = fresh_view.is_some();
            self.unreachable_logged = None;
        }
        let view = fresh_view
            .clone()
            .unwrap_or_else(|| self.shared.snapshot().view);
        let dynamic = view
            .config
            .clone()
            .unwrap_or_else(|| self.shared.config().bootstrap.clone());
        self.shared.update(|s| s.dynamic = dynamic.clone());

        let announced = self.shared.callbacks.generation();
        let (local_pg, observation) = self.observe_pg().await;
        if let LocalPg::Running { in_recovery, .. } = local_pg {
            // Announces only what was not yet: a PostgreSQL this sidecar
            // did not start, or one that came up after its start timed out.
            let role = if in_recovery {
                Role::Replica
            } else {
                Role::Primary
            };
            self.shared
                .callbacks
                .notify_observed(Event::FoundRunning(role), announced);
        }
        let data = self.data_dir_state(observation.as_ref()).await?;
        let not_streamed = self.note_streaming(observation.as_ref(), &data);
        let stopped_as = match (&local_pg, &data) {
            (LocalPg::Stopped, DataDir::Initialized { .. }) => {
                let rejoining = view.leader_name().is_some_and(|l| l != self.me());
                self.stopped_as(rejoining).await
            }
            _ => None,
        };
        let leading = view.leader_name() == Some(self.me());
        if !leading {
            // A later leadership counts departures afresh.
            self.slot_departures.clear();
        }
        self.primary_down_since = match (&local_pg, leading) {
            (LocalPg::Stopped, true) => self.primary_down_since.or(Some(Instant::now())),
            _ => None,
        };
        if data == DataDir::Empty {
            self.rewind_failed = false;
        }
        let peers = match local_pg {
            LocalPg::Running {
                in_recovery: true, ..
            } if view.leader.is_none() && fresh_view.is_some() => self.poll_peers(&view).await,
            _ => Vec::new(),
        };
        let config = self.shared.config();
        let decision = decide::decide(&Inputs {
            me: &config.cluster.name,
            tags: &config.tags,
            view: &view,
            dynamic: &dynamic,
            data,
            pg: local_pg,
            stopped_as,
            my_lease: self.dcs.lease_id(),
            lease_deadline: self.shared.lease.deadline(),
            now: Instant::now(),
            wall_now: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            primary_down_since: self.primary_down_since,
            peers: &peers,
            not_streamed,
            following: self.following.as_deref(),
            rewind_failed: self.rewind_failed,
            bootstrap_failed: self.bootstrap_failed,
            bootstrap_retry: self.bootstrap_retry.as_ref().and_then(|r| {
                let now = tokio::time::Instant::now();
                (r.at > now).then(|| (r.at - now, r.why.as_str()))
            }),
            store_reachable: self.store_reachable,
            lease_ttl: self.dcs.lease_ttl(),
            never_received: observation
                .as_ref()
                .is_some_and(|o| o.in_recovery && o.received_lsn.is_none()),
        });
        self.log_decision(&decision);
        let my_lease = self.dcs.lease_id();
        self.shared.update(|s| {
            s.view = view.clone();
            s.observation = observation.clone();
            s.my_lease = my_lease;
        });

        let outcome = self.execute(&decision, &view, &dynamic).await;

        // Keep the running instance's configuration current (cluster-wide
        // parameters, upstream) and publish what we are, whatever happened.
        if outcome.is_ok() && self.shared.postgres.is_running() {
            if let Err(e) = self.refresh_conf(&view, &dynamic).await {
                tracing::warn!(error = %e, "cannot refresh PostgreSQL configuration");
            }
        }
        if let Some(view) = &fresh_view {
            self.publish(Some(view)).await;
        }
        outcome
    }

    /// `ttl` changed in the cluster configuration: move our keys to a lease
    /// of the new length, without giving up the leader key.
    pub(super) async fn apply_new_ttl(&self, view: &ClusterView, ttl: Duration) -> bool {
        let sent = Instant::now();
        match self.dcs.change_lease_ttl(ttl).await {
            Ok(()) => {
                self.shared.lease.replaced(sent, ttl);
                if view.leader_name() == Some(self.me()) {
                    self.note_leader_key();
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot apply the new ttl yet");
                false
            }
        }
    }

    /// We now hold the key on our lease: let the API know before the next read.
    fn note_leader_key(&self) {
        let name = self.me().to_string();
        let lease = self.dcs.lease_id();
        self.shared.update(|s| {
            let revision = s.view.leader.as_ref().map(|l| l.revision).unwrap_or(0);
            s.view.leader = Some(crate::cluster::LeaderKey {
                name,
                revision,
                lease,
            });
            s.my_lease = lease;
        });
    }

    /// Tell the callbacks what just happened to PostgreSQL (returns at once).
    fn announce(&self, event: Event) {
        self.shared.callbacks.notify(event);
    }

    /// What the local PostgreSQL runs (or ran) as, by its data directory: a
    /// standby (standby.signal) or the primary.
    fn pg_role(&self) -> Role {
        if self.shared.postgres.is_standby_configured() {
            Role::Replica
        } else {
            Role::Primary
        }
    }

    fn set_pg_state(&self, state: PgState, role: Role) {
        self.shared.update(|s| {
            s.pg_state = state;
            s.role = role;
        });
    }

    /// Cluster-wide parameters plus what the HA state dictates.
    fn cluster_parameters(&self, dynamic: &DynamicConfig) -> Parameters {
        let mut ha = BTreeMap::new();
        if dynamic.synchronous_mode {
            let names = if self.sync_standbys.is_empty() && dynamic.synchronous_mode_strict {
                // Strict: until standbys are named, no commit is acknowledged.
                "*".to_string()
            } else {
                sync::standby_names(&self.sync_standbys)
            };
            ha.insert("synchronous_standby_names".into(), ParamValue::Text(names));
        }
        Parameters {
            cluster: dynamic.postgresql.parameters.clone(),
            ha,
        }
    }

    fn upstream_of(view: &ClusterView, leader: Option<&str>) -> Option<Upstream> {
        let member = view.member(leader?)?;
        let (host, port) = member.status.host_port();
        Some(Upstream {
            host,
            port: port.unwrap_or(5432),
        })
    }

    /// Write `members/<me>` with what we are now, unless `seen` (the view
    /// read this cycle) already holds exactly that.
    async fn publish(&self, seen: Option<&ClusterView>) {
        if !self.store_reachable {
            // It would only wait out its timeout; published when etcd answers.
            return;
        }
        let snap = self.shared.snapshot();
        let config = self.shared.config();
        let obs = snap
            .observation
            .as_ref()
            .filter(|_| self.shared.postgres.is_running());
        let role = crate::status::role_of(obs, snap.role);
        let status = MemberStatus {
            conn_url: config.conn_url(),
            api_url: config.api_url(),
            state: if obs.is_some() {
                PgState::Running
            } else {
                snap.pg_state
            },
            role,
            version: crate::VERSION.to_string(),
            xlog_location: obs.filter(|o| !o.in_recovery).and_then(|o| o.flush_lsn),
            received_location: obs.filter(|o| o.in_recovery).and_then(|o| o.received_lsn),
            replayed_location: obs.filter(|o| o.in_recovery).and_then(|o| o.replayed_lsn),
            timeline: obs.and_then(|o| o.timeline),
            replication_state: obs.filter(|o| o.in_recovery).map(|o| {
                if o.streaming {
                    "streaming"
                } else {
                    "in archive recovery"
                }
                .to_string()
            }),
            tags: config.tags.clone(),
            pending_restart: obs.is_some_and(|o| o.pending_restart),
            postmaster_start_time: self
                .shared
                .postgres
                .postmaster_start_time()
                .filter(|_| obs.is_some())
                .map(crate::status::format_epoch),
        };
        if seen
            .and_then(|v| v.member(self.me()))
            .is_some_and(|m| m.status == status)
        {
            return;
        }
        match self.dcs.touch_member(&status).await {
            Ok(()) => self.shared.update(|s| s.published = Some(status)),
            Err(e) => tracing::warn!(error = %e, "cannot publish member status"),
        }
    }
}

impl<D: Dcs> Ha<D> {
    /// Log the decision at info; while etcd does not answer, the same
    /// decision again only once a minute (at debug in between).
    fn log_decision(&mut self, decision: &Decision) {
        const REPEAT: Duration = Duration::from_secs(60);
        let actions: Vec<String> = decision.actions.iter().map(|a| format!("{a:?}")).collect();
        let actions = actions.join(",");
        if !self.store_reachable {
            let key = format!("{actions}|{}", decision.reason);
            let now = Instant::now();
            let repeat = self
                .unreachable_logged
                .as_ref()
                .is_some_and(|(last, at)| *last == key && now.duration_since(*at) < REPEAT);
            if repeat {
                tracing::debug!(actions = %actions, "{}", decision.reason);
                return;
            }
            self.unreachable_logged = Some((key, now));
        }
        tracing::info!(actions = %actions, "{}", decision.reason);
    }
}
