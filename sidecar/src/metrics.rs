//! `GET /metrics`: this member's PostgreSQL, HA and backup metrics in one
//! scrape. `pgpilot-exporters` collects PostgreSQL and writes the text; this
//! module configures it (`[metrics]`) and fills its HA and backup inputs from
//! the sidecar's own state, so a scrape never waits on etcd or on the
//! backup repository.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backup::command::watch::RepoState;
use crate::backup::model::manifest::BackupType;
use crate::cluster::{PgState, Role};
use crate::state::Shared;
use crate::status::NodeStatus;
use pgpilot_exporters::{
    ArchiveStats, BackupInput, BackupKind, BackupRecord, HaInput, HaRole, PostgresState,
    ReplicationState,
};

pub mod exporter;

/// The HA input from the member status served at `/patroni` at the same
/// moment, and the HA loop's counters.
pub fn ha_input(shared: &Shared, status: &NodeStatus) -> HaInput {
    let snap = shared.snapshot();
    let config = shared.config();
    let me = config.cluster.name.as_str();
    let running = status.state == PgState::Running;
    let xlog = status.xlog.as_ref();
    let now = tokio::time::Instant::now();
    let holds_key = shared.holds_leader_key();
    let tags = &config.tags;
    HaInput {
        scope: config.cluster.scope.clone(),
        name: me.to_string(),
        postgres_state: postgres_state(status.state),
        postmaster_start_time: status
            .postmaster_start_time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok()),
        role: match status.role {
            Role::Primary if running => HaRole::Primary,
            Role::Replica if running => HaRole::Replica,
            _ => HaRole::Unknown,
        },
        sync_standby: snap
            .view
            .sync
            .as_ref()
            .is_some_and(|s| s.standbys().iter().any(|n| n == me)),
        wal_flush_lsn: xlog.and_then(|x| x.location),
        wal_received_lsn: xlog.and_then(|x| x.received_location),
        wal_replayed_lsn: xlog.and_then(|x| x.replayed_location),
        last_replay_time: snap
            .observation
            .as_ref()
            .and_then(|o| o.last_replay_epoch)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0))),
        replay_paused: xlog.and_then(|x| x.paused).unwrap_or(false),
        replication_state: match status.replication_state.as_deref() {
            Some("streaming") => Some(ReplicationState::Streaming),
            Some(_) => Some(ReplicationState::InArchiveRecovery),
            None => None,
        },
        server_version: status.server_version.unwrap_or(0).max(0) as u32,
        cluster_unlocked: status.cluster_unlocked,
        timeline: status.timeline.unwrap_or(0),
        dcs_last_seen: snap.dcs_last_seen,
        pending_restart: status.pending_restart,
        paused: status.pause,
        failover_priority: if tags.nofailover {
            0
        } else {
            i64::from(tags.failover_priority)
        },
        leader_key_held: holds_key,
        leader_lease_remaining: shared
            .lease
            .deadline()
            .filter(|_| holds_key)
            .map(|d| d.saturating_duration_since(now)),
        failovers: shared.counters.failovers.load(Relaxed),
        switchovers: shared.counters.switchovers.load(Relaxed),
        lease_renewal_failures: shared.counters.lease_renewal_failures.load(Relaxed),
    }
}

fn postgres_state(state: PgState) -> PostgresState {
    match state {
        PgState::Running => PostgresState::Running,
        PgState::Starting => PostgresState::Starting,
        PgState::Stopping => PostgresState::Stopping,
        PgState::Stopped => PostgresState::Stopped,
        PgState::Crashed => PostgresState::Crashed,
        PgState::StartFailed => PostgresState::StartFailed,
        PgState::Initializing => PostgresState::Initdb,
        PgState::InitdbFailed => PostgresState::InitdbFailed,
        PgState::CreatingReplica => PostgresState::CreatingReplica,
        PgState::Restarting => PostgresState::Restarting,
        PgState::Unknown => PostgresState::Unknown,
    }
}

/// The backup input from the repository watcher's last summary; `None`
/// before its first answer (no series rather than made-up ones).
pub fn backup_input(stanza: &str, repo: &RepoState) -> Option<BackupInput> {
    if repo.report.is_none() && repo.error.is_none() {
        return None;
    }
    let mut input = BackupInput::new(stanza);
    input.repo_ok = repo.error.is_none();
    if let Some(report) = &repo.report {
        input.pg_version = report.pg_version.clone().unwrap_or_default();
        input.wal_min_max = report.wal_min_max.clone();
        input.backups = report
            .catalog
            .backups
            .iter()
            .map(|b| BackupRecord {
                label: b.label.clone(),
                kind: match b.backup_type {
                    BackupType::Full => BackupKind::Full,
                    BackupType::Incr => BackupKind::Incr,
                },
                block_incr: false,
                prior: b.prior.clone(),
                start_time: epoch_micros(b.start_time_us),
                stop_time: epoch_micros(b.stop_time_us),
                size: b.size,
                delta: b.delta,
                repo_size: b.repo_size,
                repo_delta: b.repo_delta,
                error: b.error,
                start_lsn: b.start_lsn.clone(),
                stop_lsn: b.stop_lsn.clone(),
                start_wal: b.start_wal.clone(),
                stop_wal: b.stop_wal.clone(),
                version: crate::VERSION.to_string(),
            })
            .collect();
    }
    Some(input)
}

fn epoch_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// The push-ahead worker's counts (async archiving); synchronous pushes
/// show in `pg_stat_archiver_*` instead.
pub fn archive_stats(ahead: &crate::archive::ahead::AheadState) -> ArchiveStats {
    ArchiveStats {
        pushed: ahead.pushed,
        failed: ahead.failures,
        last_push: ahead.last_pushed_at,
        last_failure: None,
    }
}
