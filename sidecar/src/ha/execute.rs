//! Carrying out the actions `decide` returns, in order; each one is a
//! small sequence of store and PostgreSQL operations.

use super::callbacks::Event;
use super::decide::Action;
use super::decide::Decision;
use super::slots;
use super::sync;
use super::BootstrapRetry;
use super::Ha;
use super::HaError;
use crate::cluster::ClusterView;
use crate::cluster::LeaderStatus;
use crate::cluster::PgState;
use crate::cluster::Role;
use crate::dcs::Dcs;
use crate::dynamic::DynamicConfig;
use crate::postgres::conf::slot_name;
use crate::postgres::conf::Parameters;
use crate::postgres::conf::Upstream;
use crate::postgres::StopMode;
use std::time::Duration;
use tokio::time::Instant;

impl<D: Dcs> Ha<D> {
    pub(super) async fn execute(
        &mut self,
        decision: &Decision,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<(), HaError> {
        for action in &decision.actions {
            let go_on = self.act(action, view, dynamic).await?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    /// Execute one action; `Ok(false)` ends the sequence without error.
    pub(super) async fn act(
        &mut self,
        action: &Action,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<bool, HaError> {
        let pg = self.shared.postgres.clone();
        match action {
            Action::Halt => Err(HaError::Fatal(format!(
                "the data directory {} belongs to another cluster than {:?} (system ID mismatch); \
                 point postgresql.data_dir elsewhere or empty it to re-clone",
                pg.data_dir().display(),
                self.shared.config().cluster.scope
            ))),
            Action::Bootstrap => self.bootstrap(view, dynamic).await,
            Action::CloneFrom { member } => self.clone_replica(view, member).await,
            Action::WriteInitialize { system_id } => {
                self.dcs.set_initialize(system_id).await?;
                Ok(true)
            }
            Action::AcquireLeader => {
                let won = self.dcs.acquire_leader().await?;
                if won {
                    tracing::info!("acquired the leader key");
                    self.note_leader_key();
                } else {
                    tracing::info!("another member took the leader key first");
                }
                Ok(won)
            }
            Action::ReclaimLeader { revision } => {
                let done = self.dcs.reclaim_leader(*revision).await?;
                if done {
                    tracing::info!("moved the leader key to my current lease");
                    self.note_leader_key();
                } else {
                    tracing::warn!("the leader key changed before I could reclaim it");
                }
                Ok(done)
            }
            Action::StartPrimary => self.start_primary(dynamic).await,
            Action::StartReplica { leader } => {
                self.start_replica(view, dynamic, leader.as_deref()).await?;
                Ok(true)
            }
            Action::Promote => self.promote(view, dynamic).await,
            Action::Demote if pg.is_running() && pg.is_standby_configured() => {
                // The fence got there first: it runs read-only already.
                tracing::info!("PostgreSQL already runs read-only (the fence demoted it)");
                Ok(true)
            }
            Action::Demote => {
                tracing::warn!("stopping PostgreSQL immediately to stop accepting writes");
                self.stop_local(StopMode::Immediate, Role::Demoted).await
            }
            Action::StopStandby => {
                tracing::info!("stopping this standby cleanly for pg_rewind");
                self.stop_local(StopMode::Fast, Role::Replica).await
            }
            Action::ApplyTtl { ttl } => {
                if self.apply_new_ttl(view, *ttl).await {
                    // The keys moved: the next cycle, at once, decides on
                    // what the store holds now.
                    self.shared.wake.notify_one();
                }
                Ok(false)
            }
            Action::Handover { candidate } => {
                self.handover(view, candidate.as_deref()).await?;
                if dynamic.pause {
                    // Maintenance mode starts nothing by itself later, so the
                    // former primary comes back as a standby right away; it
                    // follows the successor once that one holds the key.
                    self.start_replica(view, dynamic, None).await?;
                }
                Ok(true)
            }
            Action::Rewind { leader } => self.rewind(view, dynamic, leader).await,
            Action::ClearFailover => {
                self.dcs.write_failover(None).await?;
                Ok(true)
            }
            Action::Follow { leader } => {
                let Some(up) = Self::upstream_of(view, Some(leader)) else {
                    return Ok(false);
                };
                self.ensure_own_slot(&up).await;
                self.following = Some(leader.clone());
                // refresh_conf at the end of the cycle rewrites primary_conninfo and reloads.
                Ok(true)
            }
            Action::LeaderChores => {
                self.leader_chores(view, dynamic).await?;
                Ok(true)
            }
            Action::ReleaseLeader => {
                self.dcs.release_leader().await?;
                Ok(true)
            }
        }
    }

    /// Copy the data directory from `member` (replica creation methods in
    /// order); `Ok(false)` when the member is not in the view.
    pub(super) async fn clone_replica(
        &mut self,
        view: &ClusterView,
        member: &str,
    ) -> Result<bool, HaError> {
        let pg = self.shared.postgres.clone();
        let Some(source) = Self::upstream_of(view, Some(member)) else {
            return Ok(false);
        };
        // Marked before the copy starts, so a copy cut short and made
        // again (or pgpilot restarted mid-copy) still counts as new.
        pg.mark_not_streamed()?;
        self.set_pg_state(PgState::CreatingReplica, Role::Uninitialized);
        self.publish(None).await;
        match self.create_replica(view, member, &source).await {
            Ok(()) => {
                self.system_id = None;
                self.set_pg_state(PgState::Stopped, Role::Replica);
                Ok(true)
            }
            Err(e) => {
                self.set_pg_state(PgState::Stopped, Role::Uninitialized);
                Err(e)
            }
        }
    }

    /// Stop the local PostgreSQL with `mode`, announce it, and record it
    /// stopped as `role_after`.
    async fn stop_local(&mut self, mode: StopMode, role_after: Role) -> Result<bool, HaError> {
        let pg = &self.shared.postgres;
        self.set_pg_state(PgState::Stopping, role_after);
        let (was_running, role) = (pg.is_running(), self.pg_role());
        pg.stop(mode).await?;
        if was_running {
            self.announce(Event::Stopped(role));
        }
        self.following = None;
        self.set_pg_state(PgState::Stopped, role_after);
        Ok(true)
    }

    pub(super) async fn start_replica(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
        leader: Option<&str>,
    ) -> Result<(), HaError> {
        let pg = &self.shared.postgres;
        let upstream = Self::upstream_of(view, leader);
        pg.write_config(&self.cluster_parameters(dynamic), upstream.as_ref(), true)?;
        if let Some(up) = &upstream {
            self.ensure_own_slot(up).await;
        }
        self.following = upstream.as_ref().and(leader.map(str::to_string));
        self.set_pg_state(PgState::Starting, Role::Replica);
        // Published before the start: the leader creates this member's slot
        // from its key, and the standby waits on that slot to become consistent.
        self.publish(None).await;
        match pg.start().await {
            Ok(()) => {
                self.replica_made_by = None;
                self.set_pg_state(PgState::Running, Role::Replica);
                // A former primary gets on_role_change here, not on_start.
                self.announce(Event::Started(Role::Replica));
                Ok(())
            }
            Err(e) => {
                self.set_pg_state(PgState::StartFailed, Role::Replica);
                self.announce(Event::StartFailed(Role::Replica));
                self.next_replica_method(&e.to_string()).await;
                Err(e.into())
            }
        }
    }

    /// A replica made by a `create_replica_methods` entry that does not
    /// start: when a later entry exists, empty the data directory so the
    /// next cycle creates the replica again with that one.
    async fn next_replica_method(&mut self, why: &str) {
        let Some(index) = self.replica_made_by.take() else {
            return;
        };
        let methods = self
            .shared
            .config()
            .postgresql
            .create_replica_methods
            .clone();
        let (Some(made_by), Some(next)) = (methods.get(index), methods.get(index + 1)) else {
            return;
        };
        tracing::warn!(
            "the replica created with method {} does not start ({why}): creating it again with method {}",
            made_by.as_str(),
            next.as_str()
        );
        let pg = &self.shared.postgres;
        let _ = pg.stop(StopMode::Immediate).await;
        match pg.wipe_data_dir() {
            Ok(()) => self.replica_methods_skip = index + 1,
            Err(e) => tracing::error!(error = %e, "cannot empty the data directory"),
        }
    }

    /// Race for `initialize`, then create the cluster. On failure everything
    /// is undone so another member can try.
    pub(super) async fn bootstrap(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<bool, HaError> {
        if !self.dcs.race_initialize().await? {
            tracing::info!("another member is bootstrapping the cluster");
            return Ok(false);
        }
        if !self.dcs.acquire_leader().await? {
            let _ = self.dcs.cancel_initialize().await;
            return Ok(false);
        }
        self.note_leader_key();
        let from_backup = self.shared.config().bootstrap_from_backup().cloned();
        if from_backup.is_some() {
            tracing::info!("won the bootstrap race: creating the cluster from a backup");
        } else {
            tracing::info!("won the bootstrap race: running initdb");
        }
        self.set_pg_state(PgState::Initializing, Role::Uninitialized);
        self.publish(None).await;
        let created = match &from_backup {
            Some(from) => {
                self.create_cluster_from_backup_logged(view, dynamic, from)
                    .await
            }
            None => self.create_cluster(dynamic).await,
        };
        match created {
            Ok(system_id) => {
                tracing::info!(%system_id, "cluster bootstrapped");
                self.bootstrap_retry = None;
                // The starts and stops of the bootstrap itself are not
                // announced (Patroni neither): only the primary it leaves.
                self.announce(Event::Started(Role::Primary));
                Ok(true)
            }
            Err(e) => {
                tracing::error!(error = %e, "bootstrap failed; undoing it so another member can try");
                let pg = &self.shared.postgres;
                let _ = pg.stop(StopMode::Immediate).await;
                let _ = pg.wipe_data_dir();
                pg.end_creation();
                let _ = self.dcs.release_leader().await;
                let _ = self.dcs.cancel_initialize().await;
                self.set_pg_state(PgState::InitdbFailed, Role::Uninitialized);
                // A backup that cannot be restored fails the same way again.
                self.bootstrap_failed = from_backup.is_some();
                // initdb may: try again, less and less often.
                let failures = self.bootstrap_retry.as_ref().map_or(0, |r| r.failures) + 1;
                let wait = super::decide::bootstrap_backoff(dynamic.loop_wait(), failures);
                tracing::warn!(failures, "next bootstrap attempt in {}s", wait.as_secs());
                self.bootstrap_retry = Some(BootstrapRetry {
                    failures,
                    at: tokio::time::Instant::now() + wait,
                    why: e.to_string(),
                });
                Err(e)
            }
        }
    }

    pub(super) async fn create_cluster(
        &mut self,
        dynamic: &DynamicConfig,
    ) -> Result<String, HaError> {
        let pg = self.shared.postgres.clone();
        let config = self.shared.config();
        pg.initdb().await?;
        // No synchronous standby can exist yet: bootstrap's own writes (the
        // replication role) must not wait for one, even in strict mode. The
        // leader's chores apply synchronous_standby_names right after.
        let bootstrap_parameters = Parameters {
            ha: Default::default(),
            ..self.cluster_parameters(dynamic)
        };
        pg.write_config(&bootstrap_parameters, None, false)?;
        pg.start().await?;
        pg.with_client(async |c| crate::postgres::probe::ensure_roles(c, &config, false).await)
            .await?;
        let system_id = pg.controldata().await?.system_id;
        self.system_id = Some(system_id.clone());
        self.dcs.set_initialize(&system_id).await?;
        self.dcs.write_config(dynamic, None).await?;
        self.set_pg_state(PgState::Running, Role::Primary);
        Ok(system_id)
    }

    pub(super) async fn leader_chores(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<(), HaError> {
        if self.shared.roles_pending() {
            self.change_role_passwords().await;
        }
        self.keep_slots(view, dynamic).await?;
        if let Some(optime) = self.shared.snapshot().observation.and_then(|o| o.flush_lsn) {
            if self.last_status_written != Some(optime) {
                self.dcs.write_status(&LeaderStatus { optime }).await?;
                self.last_status_written = Some(optime);
            }
        }
        self.manage_sync(view, dynamic).await
    }

    /// Slots for the members in the store; a departed member's slot is kept
    /// for `member_slots_ttl` ([`slots::plan`]).
    async fn keep_slots(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<(), HaError> {
        use crate::postgres::probe;
        let me = self.me().to_string();
        let wanted: Vec<String> = view
            .members
            .iter()
            .filter(|m| m.name != me)
            .map(|m| slot_name(&m.name))
            .collect();
        let pg = self.shared.postgres.clone();
        let existing: Vec<slots::SlotSeen> = pg
            .with_client(async |c| probe::physical_slots(c).await)
            .await?
            .into_iter()
            .map(|(name, active, lost)| slots::SlotSeen { name, active, lost })
            .collect();
        let plan = slots::plan(
            &existing,
            &wanted,
            &self.slot_departures,
            Instant::now(),
            Duration::from_secs(dynamic.member_slots_ttl),
        );
        for name in &plan.create {
            pg.with_client(async |c| probe::create_physical_slot(c, name).await)
                .await?;
            tracing::info!(slot = %name, "created replication slot");
        }
        for name in plan.departed.keys() {
            if !self.slot_departures.contains_key(name) {
                tracing::info!(
                    slot = %name,
                    member_slots_ttl = dynamic.member_slots_ttl,
                    "keeping the replication slot of a member that left, for member_slots_ttl seconds"
                );
            }
        }
        for (name, why) in &plan.drop {
            if pg
                .with_client(async |c| probe::drop_inactive_slot(c, name).await)
                .await?
            {
                match why {
                    slots::DropReason::GracePassed => tracing::info!(
                        slot = %name,
                        "dropped the replication slot of a member gone for longer than member_slots_ttl"
                    ),
                    slots::DropReason::Invalidated => tracing::warn!(
                        slot = %name,
                        "dropped the replication slot of a member that left: it held more WAL \
                         than max_slot_wal_keep_size and PostgreSQL invalidated it"
                    ),
                }
            }
        }
        self.slot_departures = plan.departed;
        Ok(())
    }

    /// Before streaming from `upstream`: make sure this member's slot exists
    /// there, so the WAL receiver's first attempt finds it. Failing that (the
    /// upstream unreachable for now), the leader creates it from our key.
    pub(super) async fn ensure_own_slot(&self, upstream: &Upstream) {
        let slot = slot_name(self.me());
        match self.shared.postgres.ensure_slot_on(upstream, &slot).await {
            Ok(true) => {
                tracing::info!(%slot, host = %upstream.host, "created my replication slot on the upstream")
            }
            Ok(false) => tracing::debug!(%slot, "my replication slot exists on the upstream"),
            Err(e) => tracing::warn!(
                %slot, error = %e,
                "cannot make sure my replication slot exists on the upstream; the leader creates it from my key"
            ),
        }
    }

    /// After a reload changed a role password: give PostgreSQL's roles the
    /// passwords of the configuration in force (idempotent). A failure is
    /// logged and tried again at the next cycle.
    pub(super) async fn change_role_passwords(&self) {
        let pg = self.shared.postgres.clone();
        let (config, generation, _) = self.shared.live.superuser_view();
        let done = pg
            .with_client(async |c| crate::postgres::probe::ensure_roles(c, &config, true).await)
            .await;
        match done {
            Ok(()) => {
                self.shared.roles_done(generation);
                pg.retry_current_password().await;
                let auth = &config.postgresql.authentication;
                tracing::info!(
                    superuser = %auth.superuser.username,
                    replication = %auth.replication.username,
                    "the roles have the passwords of the reloaded member file"
                );
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot give the roles their new passwords yet; trying again next cycle"
            ),
        }
    }

    /// Keep the `sync` key and synchronous_standby_names in step (invariant 2).
    pub(super) async fn manage_sync(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<(), HaError> {
        if !dynamic.synchronous_mode {
            self.sync_standbys.clear();
            return Ok(());
        }
        let replication = self
            .shared
            .snapshot()
            .observation
            .map(|o| o.replication)
            .unwrap_or_default();
        let plan = sync::plan(
            self.me(),
            view.sync.as_ref(),
            &replication,
            &view.members,
            dynamic.synchronous_node_count,
            &self.sync_standbys,
        );
        if let Some(key) = &plan.write_key {
            let expected = view.sync.as_ref().map(|_| view.sync_revision);
            let state = crate::cluster::SyncState::new(self.me(), key);
            if !self.dcs.write_sync(&state, expected).await? {
                // Someone changed it under us: decide again next cycle, with
                // PostgreSQL's names unchanged.
                tracing::warn!("the sync key changed concurrently; retrying next cycle");
                return Ok(());
            }
            tracing::info!(standbys = %key.join(","), "sync key updated");
        }
        if plan.names != self.sync_standbys {
            tracing::info!(standbys = %plan.names.join(","), "synchronous standbys changed");
            self.sync_standbys = plan.names;
        }
        Ok(())
    }

    /// Rewrite postgresql.conf if cluster parameters or the upstream changed, and reload.
    pub(super) async fn refresh_conf(
        &self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
    ) -> Result<(), HaError> {
        let pg = &self.shared.postgres;
        let standby = pg.data_dir().join("standby.signal").exists();
        let upstream = if standby {
            Self::upstream_of(view, self.following.as_deref())
        } else {
            None
        };
        if standby && pg.sync_passfile()? {
            tracing::info!(
                "replication password file rewritten: the WAL receiver uses the new password when it next connects"
            );
        }
        if standby && self.following.is_some() && upstream.is_none() {
            // The leader we stream from just left the store: keep streaming
            // from it until the next leader is known, rather than cut the link.
            return Ok(());
        }
        let wanted = crate::postgres::conf::render_postgresql_conf(
            &self.shared.config(),
            &self.cluster_parameters(dynamic),
            upstream.as_ref(),
        );
        let current =
            std::fs::read_to_string(pg.data_dir().join("postgresql.conf")).unwrap_or_default();
        if current != wanted {
            tracing::info!("PostgreSQL configuration changed: rewriting and reloading");
            pg.write_config(
                &self.cluster_parameters(dynamic),
                upstream.as_ref(),
                standby,
            )?;
            pg.reload().await?;
            self.announce(Event::Reloaded(self.pg_role()));
        }
        Ok(())
    }

    /// Bring a former primary onto the leader's timeline with pg_rewind.
    pub(super) async fn rewind(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
        leader: &str,
    ) -> Result<bool, HaError> {
        let Some(source) = Self::upstream_of(view, Some(leader)) else {
            return Ok(false);
        };
        let pg = self.shared.postgres.clone();
        tracing::info!(%leader, "running pg_rewind");
        match pg.rewind(&source).await {
            Ok(()) => {
                tracing::info!("pg_rewind done");
                Ok(true)
            }
            Err(e) if dynamic.postgresql.remove_data_directory_on_rewind_failure => {
                tracing::error!(error = %e, "pg_rewind failed: removing the data directory to re-clone it");
                pg.wipe_data_dir()?;
                self.system_id = None;
                Ok(false)
            }
            Err(e) => {
                self.rewind_failed = true;
                Err(e.into())
            }
        }
    }
}
