//! Creating this member's data directory from a copy rather than initdb:
//!
//! - a replica, with `postgresql.create_replica_methods` tried in order:
//!   `backup` (the newest backup of this cluster from the repository; the
//!   standby replays the archived WAL, then streams from the leader) and
//!   `basebackup` (pg_basebackup from the leader). A method that fails
//!   leaves an empty data directory for the next one;
//! - a new cluster from a backup (`[bootstrap_from] method = "backup"`):
//!   restore, recover to the target, promote onto a new timeline, restart
//!   without the recovery settings, then record the system identifier.

use super::*;
use crate::backup::command::restore;
use crate::backup::model::catalog::{self, Entry};
use crate::backup::model::lineage::{self, Lineage};
use crate::backup::model::request::{RestoreRequest, StartAs};
use crate::backup::{BackupError, Context};
use crate::config::bootstrap_from::BootstrapFrom;
use crate::config::target::Target;
use crate::config::ReplicaMethod;

/// Recovery of a cluster bootstrapped from a backup that replays nothing
/// for this long is stuck (a restore_command that hangs, a paused server).
const RECOVERY_STALL: Duration = Duration::from_secs(600);
/// How often the bootstrap's recovery reports its progress.
const RECOVERY_REPORT: Duration = Duration::from_secs(10);

impl<D: Dcs> Ha<D> {
    /// The repository of `[backup]`, for the daemon's own restores, with
    /// where it is for messages.
    fn repository(&self) -> Result<(Context, String), String> {
        let config = self.shared.config();
        let backup = config
            .backup
            .clone()
            .ok_or("no [backup] section: no repository to restore from")?;
        let location = format!(
            "repository {} (stanza {})",
            backup.location(),
            backup.stanza(&config.cluster.scope)
        );
        let source = config.source.clone().unwrap_or_default();
        let context = Context::with((*config).clone(), backup, &source)
            .map_err(|e| format!("{location}: {e}"))?;
        Ok((context, location))
    }

    /// Create this replica's data directory with each configured method in
    /// turn, until one works. `leader` runs at `source`.
    pub(super) async fn create_replica(
        &mut self,
        view: &ClusterView,
        leader: &str,
        source: &Upstream,
    ) -> Result<(), HaError> {
        let pg = self.shared.postgres.clone();
        let methods = self
            .shared
            .config()
            .postgresql
            .create_replica_methods
            .clone();
        let mut failures = Vec::new();
        let skip = std::mem::take(&mut self.replica_methods_skip);
        for (index, method) in methods.into_iter().enumerate().skip(skip) {
            let started = Instant::now();
            let outcome = match method {
                ReplicaMethod::Backup => self
                    .replica_from_backup(view, leader)
                    .await
                    .map(|label| format!("from backup {label}")),
                ReplicaMethod::Basebackup => {
                    tracing::info!(from = %leader, host = %source.host, port = source.port, "cloning with pg_basebackup");
                    pg.basebackup(source)
                        .await
                        .map(|()| format!("with pg_basebackup from {leader}"))
                        .map_err(|e| e.to_string())
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            match outcome {
                Ok(how) => {
                    tracing::info!(method = method.as_str(), seconds, "replica created {how}");
                    self.replica_made_by = Some(index);
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(
                        method = method.as_str(),
                        seconds,
                        "cannot create the replica with method {}: {why}",
                        method.as_str()
                    );
                    // The next method (or PostgreSQL) must never find a partial copy.
                    pg.wipe_data_dir()?;
                    failures.push(format!("{}: {why}", method.as_str()));
                }
            }
        }
        Err(HaError::Creation(format!(
            "no replica creation method worked ({})",
            failures.join("; ")
        )))
    }

    /// Restore the newest usable backup of this cluster as a standby; the
    /// backup's label.
    async fn replica_from_backup(
        &self,
        view: &ClusterView,
        leader: &str,
    ) -> Result<String, String> {
        let system_id = view
            .system_id()
            .ok_or("the cluster's system identifier is not recorded yet")?;
        let timeline = view
            .member(leader)
            .and_then(|m| m.status.timeline)
            .unwrap_or_else(|| view.timeline());
        let (context, location) = self.repository()?;
        let in_repo = |e: BackupError| format!("{location}: {e}");
        let catalog = catalog::load_or_rebuild(&context).await.map_err(in_repo)?;
        let segment_size = catalog
            .backups
            .last()
            .map(|e| e.wal_segment_size)
            .unwrap_or(16 << 20);
        let lineage = Lineage::load(&context, segment_size)
            .await
            .map_err(in_repo)?;
        let entry = lineage::choose_for_replica(&catalog, &lineage, system_id, timeline)
            .map_err(|why| format!("{location}: {why}"))?;
        tracing::info!(
            backup = %entry.label,
            stop_lsn = %entry.stop_lsn,
            %timeline,
            "creating the replica from a backup, then streaming from {leader}"
        );
        let pg = &self.shared.postgres;
        pg.prepare_dirs().map_err(|e| e.to_string())?;
        pg.begin_creation().map_err(|e| e.to_string())?;
        let request = RestoreRequest {
            set: entry.label.clone(),
            target: Target::End,
            target_action: None,
            target_exclusive: false,
            target_timeline: None,
            delta: false,
            data_dir: pg.data_dir().to_path_buf(),
            start_as: StartAs::Standby,
        };
        let restored = restore::restore(&context, &request).await;
        pg.end_creation();
        restored.map(|r| r.label).map_err(in_repo)
    }

    /// [`Self::create_cluster_from_backup`], its outcome stored in the
    /// repository beside the backups as `<stanza>/log/restore-<time>.log`
    /// (best effort: a repository that does not take it within 30 s is
    /// only logged).
    pub(super) async fn create_cluster_from_backup_logged(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
        from: &BootstrapFrom,
    ) -> Result<String, HaError> {
        let started_at = crate::backup::now_micros();
        let started = Instant::now();
        let result = self.create_cluster_from_backup(view, dynamic, from).await;
        let target = from
            .parsed_target()
            .map(|t| restore::describe_target(&t))
            .unwrap_or_default();
        let outcome = match &result {
            Ok(id) => format!("finished: the cluster runs with system identifier {id}"),
            Err(e) => format!("failed (everything undone; the member tries again): {e}"),
        };
        let text = format!(
            "restore of backup {}{target} by member {}\nstarted {}, {:.1} s\n{outcome}\n",
            from.set(),
            self.me,
            crate::backup::pg_time(started_at),
            started.elapsed().as_secs_f64()
        );
        if let Ok((context, location)) = self.repository() {
            let name = format!(
                "restore-{}.log",
                crate::backup::label_time(started_at.div_euclid(1_000_000))
            );
            let key = crate::backup::command::chores::log_key(context.layout.stanza(), &name);
            let put = context.storage().put(
                &key,
                text.into_bytes().into(),
                crate::repo::PutMode::Overwrite,
            );
            match tokio::time::timeout(Duration::from_secs(30), put).await {
                Ok(Ok(_)) => tracing::info!(%key, "the restore's log is in {location}"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot store the restore's log in {location}")
                }
                Err(_) => tracing::warn!("storing the restore's log in {location} took over 30 s"),
            }
        }
        result
    }

    /// Create the cluster from a backup; its system identifier. The caller
    /// holds `initialize` and the leader key, and undoes everything if this fails.
    pub(super) async fn create_cluster_from_backup(
        &mut self,
        view: &ClusterView,
        dynamic: &DynamicConfig,
        from: &BootstrapFrom,
    ) -> Result<String, HaError> {
        let pg = self.shared.postgres.clone();
        let config = self.shared.config();
        let (context, location) = self
            .repository()
            .map_err(|e| HaError::Creation(format!("bootstrap from a backup: {e}")))?;
        let failed = |e: BackupError| {
            HaError::Creation(format!("bootstrap from a backup in {location}: {e}"))
        };
        let target = from.parsed_target().map_err(HaError::Creation)?;
        let catalog = catalog::load_or_rebuild(&context).await.map_err(failed)?;
        let entry: Entry = restore::choose(&catalog, from.set(), &target)
            .map_err(failed)?
            .clone();
        // Follow the newest timeline through the backup unless the file says otherwise.
        let timeline = match &from.target_timeline {
            Some(_) => None,
            None => Some(
                Lineage::load(&context, entry.wal_segment_size)
                    .await
                    .map_err(failed)?
                    .newest_through(&entry),
            ),
        };
        let mut request = from
            .request(pg.data_dir(), timeline)
            .map_err(HaError::Creation)?;
        request.set = entry.label.clone();
        tracing::info!(
            backup = %entry.label,
            target_timeline = request.target_timeline.as_deref().unwrap_or("latest"),
            "creating the cluster from a backup in {location}, recovering{}",
            restore::describe_target(&request.target)
        );
        pg.prepare_dirs()?;
        pg.begin_creation()?;
        let started = Instant::now();
        restore::restore(&context, &request).await.map_err(failed)?;

        // Recover with the cluster's settings, the repository's WAL and no
        // synchronous standby (as after initdb).
        let bootstrap_parameters = Parameters {
            ha: Default::default(),
            ..self.cluster_parameters(dynamic)
        };
        pg.write_config(&bootstrap_parameters, None, false)?;
        pg.start().await?;
        let timeline = self.wait_for_promotion(&entry).await?;
        tracing::info!(
            %timeline,
            seconds = started.elapsed().as_secs_f64(),
            "recovery from backup {} done: promoted",
            entry.label
        );
        // Put the new timeline in pg_control, then restart without the
        // recovery settings so nothing (a clone, a later standby start)
        // stops at that target again.
        pg.with_client(async |c| {
            c.batch_execute("CHECKPOINT")
                .await
                .map_err(|e| PgError::Sql(e.to_string()))
        })
        .await?;
        pg.stop(StopMode::Fast).await?;
        pg.clear_recovery_settings()?;
        pg.write_config(&bootstrap_parameters, None, false)?;
        pg.start().await?;
        pg.with_client(async |c| crate::postgres::probe::ensure_roles(c, &config, false).await)
            .await
            .map_err(|e| {
                HaError::Creation(format!(
                    "{e}: the roles and passwords come with the backup, so \
                     postgresql.authentication must match those of the cluster it was taken from"
                ))
            })?;
        let system_id = pg.controldata().await?.system_id;
        self.system_id = Some(system_id.clone());
        self.dcs.set_initialize(&system_id).await?;
        pg.end_creation();
        self.dcs.write_config(dynamic, None).await?;
        self.set_pg_state(PgState::Running, Role::Primary);
        if let Ok(observation) = pg.observe().await {
            self.shared.update(|s| s.observation = Some(observation));
        }
        if let Err(e) = self.record_history(view, entry.stop_timeline).await {
            tracing::warn!(error = %e, "cannot record the timeline history");
        }
        Ok(system_id)
    }

    /// Wait until PostgreSQL, recovering a restored backup, has promoted;
    /// its new timeline.
    async fn wait_for_promotion(&self, entry: &Entry) -> Result<u32, HaError> {
        let pg = &self.shared.postgres;
        let mut replayed = 0;
        let mut progress_at = Instant::now();
        let mut reported_at = Instant::now();
        loop {
            if !pg.is_running() {
                return Err(HaError::Creation(format!(
                    "PostgreSQL stopped while recovering backup {}; last log lines: {}",
                    entry.label,
                    pg.log_tail()
                )));
            }
            match pg.observe().await {
                Ok(o) if !o.in_recovery => {
                    let timeline = o.timeline.unwrap_or(0);
                    if timeline <= entry.stop_timeline {
                        return Err(HaError::Creation(format!(
                            "recovery of backup {} ended on timeline {timeline}, not on a new one",
                            entry.label
                        )));
                    }
                    return Ok(timeline);
                }
                Ok(o) if o.replay_paused => {
                    return Err(HaError::Creation(format!(
                        "recovery of backup {} paused at {} instead of promoting (PostgreSQL \
                         pauses when a setting such as max_connections is lower than on the \
                         server the backup was taken from); last log lines: {}",
                        entry.label,
                        crate::lsn::format_lsn(o.replayed_lsn.unwrap_or(0)),
                        pg.log_tail()
                    )));
                }
                Ok(o) => {
                    let now = o.replayed_lsn.unwrap_or(0);
                    if now > replayed {
                        replayed = now;
                        progress_at = Instant::now();
                    }
                    if reported_at.elapsed() >= RECOVERY_REPORT {
                        reported_at = Instant::now();
                        tracing::info!(
                            replayed = %crate::lsn::format_lsn(replayed),
                            "recovering backup {} from the archive",
                            entry.label
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "PostgreSQL does not answer yet"),
            }
            if progress_at.elapsed() >= RECOVERY_STALL {
                return Err(HaError::Creation(format!(
                    "recovery of backup {} replayed nothing for {} s (stuck at {}); last log \
                     lines: {}",
                    entry.label,
                    RECOVERY_STALL.as_secs(),
                    crate::lsn::format_lsn(replayed),
                    pg.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
