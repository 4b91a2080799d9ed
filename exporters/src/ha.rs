//! HA state in Patroni's `/metrics` names (labels `{scope,name}`), plus
//! pgpilot's own lease and failover figures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::family::{Family, Kind};

/// This member's HA state at scrape time, filled by the sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HaInput {
    /// Cluster scope and member name: the `scope` and `name` labels.
    pub scope: String,
    pub name: String,
    /// PostgreSQL's state, in Patroni's list (`patroni_postgres_state`;
    /// `Running` gives `patroni_postgres_running 1`).
    pub postgres_state: PostgresState,
    pub postmaster_start_time: Option<SystemTime>,
    /// The role PostgreSQL runs in (`patroni_primary`, `patroni_master`,
    /// `patroni_replica`, `patroni_standby_leader`).
    pub role: HaRole,
    /// Listed as a synchronous standby in the `sync` key.
    pub sync_standby: bool,
    /// WAL positions as byte offsets (`pg_wal_lsn_diff(lsn, '0/0')`):
    /// the flush position on a primary; received and replayed on a replica.
    /// `None` reads as 0, as Patroni does.
    pub wal_flush_lsn: Option<u64>,
    pub wal_received_lsn: Option<u64>,
    pub wal_replayed_lsn: Option<u64>,
    /// `pg_last_xact_replay_timestamp()`.
    pub last_replay_time: Option<SystemTime>,
    pub replay_paused: bool,
    /// How a replica gets its WAL (streaming or from the archive).
    pub replication_state: Option<ReplicationState>,
    /// `server_version_num` (e.g. 150008), 0 when PostgreSQL does not run.
    pub server_version: u32,
    /// No member holds the leader key.
    pub cluster_unlocked: bool,
    pub timeline: u32,
    /// Last successful exchange with etcd.
    pub dcs_last_seen: Option<SystemTime>,
    pub pending_restart: bool,
    /// Maintenance mode.
    pub paused: bool,
    /// 0 when tagged `nofailover`, else the `failover_priority` tag.
    pub failover_priority: i64,
    /// This member holds the leader key, and for how much longer its lease
    /// provably runs (`pgpilot_leader_*`).
    pub leader_key_held: bool,
    pub leader_lease_remaining: Option<Duration>,
    /// Since this sidecar started: failovers and switchovers this member
    /// completed by taking the leader key, and lease renewals that failed.
    pub failovers: u64,
    pub switchovers: u64,
    pub lease_renewal_failures: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HaRole {
    Primary,
    Replica,
    /// Leads a standby cluster.
    StandbyLeader,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationState {
    Streaming,
    InArchiveRecovery,
}

/// Patroni's `PostgresqlState`, in the order `patroni_postgres_state`
/// numbers it (`Unknown` is -1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PostgresState {
    Initdb,
    InitdbFailed,
    CustomBootstrap,
    CustomBootstrapFailed,
    CreatingReplica,
    Running,
    Starting,
    BootstrapStarting,
    StartFailed,
    Restarting,
    RestartFailed,
    Stopping,
    Stopped,
    StopFailed,
    Crashed,
    #[default]
    Unknown,
}

impl PostgresState {
    pub fn patroni_index(self) -> i32 {
        match self {
            PostgresState::Unknown => -1,
            other => other as i32,
        }
    }
}

/// Patroni's encoding of its version: two digits per part (4.1.0 → 40100).
pub fn version_number(version: &str) -> f64 {
    let mut number = 0.0;
    for part in version.split(['.', '-', '+']).take(3) {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        number = number * 100.0 + digits.parse::<f64>().unwrap_or(0.0);
    }
    number
}

pub fn epoch_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The families, each one series labelled `{scope,name}`.
pub fn families(input: &HaInput) -> Vec<Family> {
    let labels = [input.scope.as_str(), input.name.as_str()];
    let running = input.postgres_state == PostgresState::Running;
    let primary = input.role == HaRole::Primary;
    let replica = input.role == HaRole::Replica;
    let lsn = |v: Option<u64>| v.unwrap_or(0) as f64;
    let time = |t: Option<SystemTime>| t.map(epoch_seconds).unwrap_or(0.0);
    let version = env!("CARGO_PKG_VERSION");
    let rows: Vec<(&str, &str, Kind, f64)> = vec![
        ("patroni_version", "Patroni-compatible version number (pgpilot's).", Kind::Gauge, version_number(version)),
        ("patroni_postgres_running", "Value is 1 if PostgreSQL is running, 0 otherwise.", Kind::Gauge, flag(running)),
        ("patroni_postmaster_start_time", "Epoch seconds since PostgreSQL started.", Kind::Gauge, time(input.postmaster_start_time)),
        ("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", Kind::Gauge, flag(primary)),
        ("patroni_master", "Value is 1 if this node is the leader, 0 otherwise (Patroni 3 name of patroni_primary).", Kind::Gauge, flag(primary)),
        ("patroni_xlog_location", "Current location of the PostgreSQL transaction log, 0 if this node is not the leader.", Kind::Untyped, if primary { lsn(input.wal_flush_lsn) } else { 0.0 }),
        ("patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.", Kind::Gauge, flag(input.role == HaRole::StandbyLeader)),
        ("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", Kind::Gauge, flag(replica)),
        ("patroni_sync_standby", "Value is 1 if this node is a sync standby, 0 otherwise.", Kind::Gauge, flag(input.sync_standby)),
        ("patroni_xlog_received_location", "Current location of the received PostgreSQL transaction log, 0 if this node is not a replica.", Kind::Untyped, if primary { 0.0 } else { lsn(input.wal_received_lsn) }),
        ("patroni_xlog_replayed_location", "Current location of the replayed PostgreSQL transaction log, 0 if this node is not a replica.", Kind::Untyped, if primary { 0.0 } else { lsn(input.wal_replayed_lsn) }),
        ("patroni_xlog_replayed_timestamp", "Current timestamp of the replayed PostgreSQL transaction log, 0 if null.", Kind::Gauge, time(input.last_replay_time)),
        ("patroni_xlog_paused", "Value is 1 if the replay of WAL is paused, 0 otherwise.", Kind::Gauge, flag(input.replay_paused)),
        ("patroni_postgres_streaming", "Value is 1 if the replica is streaming, 0 otherwise.", Kind::Gauge, flag(input.replication_state == Some(ReplicationState::Streaming))),
        ("patroni_postgres_in_archive_recovery", "Value is 1 if the replica restores WAL from the archive, 0 otherwise.", Kind::Gauge, flag(input.replication_state == Some(ReplicationState::InArchiveRecovery))),
        ("patroni_postgres_server_version", "Version of PostgreSQL (server_version_num), 0 if it is not running.", Kind::Gauge, input.server_version as f64),
        ("patroni_cluster_unlocked", "Value is 1 if the cluster is unlocked (no leader), 0 if locked.", Kind::Gauge, flag(input.cluster_unlocked)),
        ("patroni_failsafe_mode_is_active", "Value is 1 if failsafe mode is active (never: pgpilot has no failsafe mode).", Kind::Gauge, 0.0),
        ("patroni_postgres_timeline", "PostgreSQL timeline of this node, 0 if unknown.", Kind::Gauge, input.timeline as f64),
        ("patroni_dcs_last_seen", "Epoch seconds of the last successful exchange with the DCS, 0 if none.", Kind::Gauge, time(input.dcs_last_seen)),
        ("patroni_pending_restart", "Value is 1 if PostgreSQL needs a restart to apply its configuration.", Kind::Gauge, flag(input.pending_restart)),
        ("patroni_is_paused", "Value is 1 if the cluster is in maintenance mode, 0 otherwise.", Kind::Gauge, flag(input.paused)),
        ("patroni_postgres_state", "PostgreSQL state: 0 initdb, 1 initdb failed, 2 custom bootstrap, 3 custom bootstrap failed, 4 creating replica, 5 running, 6 starting, 7 bootstrap starting, 8 start failed, 9 restarting, 10 restart failed, 11 stopping, 12 stopped, 13 stop failed, 14 crashed, -1 unknown.", Kind::Gauge, input.postgres_state.patroni_index() as f64),
        ("patroni_failover_priority", "Failover priority of this node, 0 if it never takes over (nofailover).", Kind::Gauge, input.failover_priority as f64),
        ("pgpilot_leader_key_held", "Value is 1 if this member holds the leader key.", Kind::Gauge, flag(input.leader_key_held)),
        ("pgpilot_leader_lease_remaining_seconds", "Seconds the leader lease provably still runs, 0 if this member does not hold it.", Kind::Gauge, input.leader_lease_remaining.filter(|_| input.leader_key_held).map_or(0.0, |d| d.as_secs_f64())),
        ("pgpilot_failovers_total", "Failovers this member completed by taking the leader key, since the sidecar started.", Kind::Counter, input.failovers as f64),
        ("pgpilot_switchovers_total", "Switchovers this member completed by taking the leader key, since the sidecar started.", Kind::Counter, input.switchovers as f64),
        ("pgpilot_lease_renewal_failures_total", "Leader lease renewals that failed, since the sidecar started.", Kind::Counter, input.lease_renewal_failures as f64),
    ];
    let mut out: Vec<Family> = rows
        .into_iter()
        .map(|(name, help, kind, value)| {
            let mut family = Family::with_labels(name, help, kind, &["scope", "name"]);
            family.push(&labels, value);
            family
        })
        .collect();
    let mut info = Family::with_labels(
        "pgpilot_build_info",
        "pgpilot's version, as a label; value 1.",
        Kind::Gauge,
        &["scope", "name", "version"],
    );
    info.push(&[labels[0], labels[1], version], 1.0);
    out.push(info);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name`'s only series, checking its `{scope,name}` labels.
    fn value(f: &[prometheus::proto::MetricFamily], name: &str) -> f64 {
        let family = f.iter().find(|f| f.name() == name).expect(name);
        let m = &family.get_metric()[0];
        let labels: Vec<(&str, &str)> = m
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(&labels[..2], &[("scope", "main"), ("name", "pg1")]);
        match family.get_field_type() {
            prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
            _ => m.get_gauge().get_value(),
        }
    }

    fn render(input: &HaInput) -> Vec<prometheus::proto::MetricFamily> {
        families(input)
            .into_iter()
            .map(Family::into_proto)
            .collect()
    }

    fn base() -> HaInput {
        HaInput {
            scope: "main".into(),
            name: "pg1".into(),
            postgres_state: PostgresState::Running,
            server_version: 150008,
            timeline: 3,
            ..HaInput::default()
        }
    }

    #[test]
    fn a_primary_reports_its_flush_position_and_both_leader_names() {
        let input = HaInput {
            role: HaRole::Primary,
            wal_flush_lsn: Some(0x3000060),
            wal_received_lsn: Some(5),
            leader_key_held: true,
            leader_lease_remaining: Some(Duration::from_millis(25_500)),
            ..base()
        };
        let f = render(&input);
        assert_eq!(value(&f, "patroni_primary"), 1.0);
        assert_eq!(value(&f, "patroni_master"), 1.0);
        assert_eq!(value(&f, "patroni_replica"), 0.0);
        assert_eq!(value(&f, "patroni_xlog_location"), 50331744.0);
        assert_eq!(value(&f, "patroni_xlog_received_location"), 0.0);
        assert_eq!(value(&f, "patroni_postgres_running"), 1.0);
        assert_eq!(value(&f, "patroni_postgres_state"), 5.0);
        assert_eq!(value(&f, "patroni_postgres_timeline"), 3.0);
        assert_eq!(value(&f, "pgpilot_leader_lease_remaining_seconds"), 25.5);
    }

    #[test]
    fn a_streaming_replica() {
        let input = HaInput {
            role: HaRole::Replica,
            wal_flush_lsn: Some(99),
            wal_received_lsn: Some(2000),
            wal_replayed_lsn: Some(1000),
            replication_state: Some(ReplicationState::Streaming),
            last_replay_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            leader_lease_remaining: Some(Duration::from_secs(9)),
            failovers: 2,
            ..base()
        };
        let f = render(&input);
        assert_eq!(value(&f, "patroni_primary"), 0.0);
        assert_eq!(value(&f, "patroni_replica"), 1.0);
        assert_eq!(value(&f, "patroni_xlog_location"), 0.0);
        assert_eq!(value(&f, "patroni_xlog_received_location"), 2000.0);
        assert_eq!(value(&f, "patroni_xlog_replayed_location"), 1000.0);
        assert_eq!(
            value(&f, "patroni_xlog_replayed_timestamp"),
            1_700_000_000.0
        );
        assert_eq!(value(&f, "patroni_postgres_streaming"), 1.0);
        assert_eq!(value(&f, "patroni_postgres_in_archive_recovery"), 0.0);
        // A lease it does not hold is not reported as time left.
        assert_eq!(value(&f, "pgpilot_leader_lease_remaining_seconds"), 0.0);
        assert_eq!(value(&f, "pgpilot_failovers_total"), 2.0);
    }

    #[test]
    fn stopped_and_unknown_states() {
        let input = HaInput {
            postgres_state: PostgresState::Unknown,
            server_version: 0,
            cluster_unlocked: true,
            ..base()
        };
        let f = render(&input);
        assert_eq!(value(&f, "patroni_postgres_running"), 0.0);
        assert_eq!(value(&f, "patroni_postgres_state"), -1.0);
        assert_eq!(value(&f, "patroni_cluster_unlocked"), 1.0);
        assert_eq!(value(&f, "patroni_postmaster_start_time"), 0.0);
        assert_eq!(PostgresState::Crashed.patroni_index(), 14);
        assert_eq!(PostgresState::Stopped.patroni_index(), 12);
    }

    #[test]
    fn versions_are_encoded_like_patroni() {
        assert_eq!(version_number("4.1.0"), 40100.0);
        assert_eq!(version_number("0.1.0"), 100.0);
        assert_eq!(version_number("3.3.2"), 30302.0);
        assert_eq!(version_number("1.2.3-rc1"), 10203.0);
    }
}
