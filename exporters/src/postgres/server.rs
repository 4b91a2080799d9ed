//! Instance-wide collectors, run on the main monitoring session. Names,
//! labels and collector names are postgres_exporter's; numeric columns are
//! cast to float8 in SQL so that every value reads the same way.

use tokio::time::Instant;

use super::conn::{float, text, Conn, PgError};
use super::replication;
use super::settings::{normalise, Setting};
use crate::family::{lint_safe_kind, Family, Kind};

/// What every collector may need.
pub struct Ctx {
    /// `server_version_num`, e.g. 150008.
    pub version: i32,
    /// Backend pids of our own sessions.
    pub own_pids: Vec<i32>,
    pub deadline: Instant,
}

/// The collectors of the main session, in the order they run (and are
/// admitted under the series budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collector {
    Settings,
    StatDatabase,
    Database,
    Locks,
    StatActivity,
    Roles,
    StatBgwriter,
    StatArchiver,
    Replication,
    ReplicationSlots,
    StatReplication,
    Wal,
    StatProgressVacuum,
    StatSsl,
}

impl Collector {
    pub const ALL: [Collector; 14] = [
        Collector::Settings,
        Collector::StatDatabase,
        Collector::Database,
        Collector::Locks,
        Collector::StatActivity,
        Collector::Roles,
        Collector::StatBgwriter,
        Collector::StatArchiver,
        Collector::Replication,
        Collector::ReplicationSlots,
        Collector::StatReplication,
        Collector::Wal,
        Collector::StatProgressVacuum,
        Collector::StatSsl,
    ];

    /// The `collector` label of `pg_scrape_collector_*`.
    pub fn name(self) -> &'static str {
        match self {
            Collector::Settings => "settings",
            Collector::StatDatabase => "stat_database",
            Collector::Database => "database",
            Collector::Locks => "locks",
            Collector::StatActivity => "stat_activity",
            Collector::Roles => "roles",
            Collector::StatBgwriter => "stat_bgwriter",
            Collector::StatArchiver => "stat_archiver",
            Collector::Replication => "replication",
            Collector::ReplicationSlots => "replication_slots",
            Collector::StatReplication => "stat_replication",
            Collector::Wal => "wal",
            Collector::StatProgressVacuum => "stat_progress_vacuum",
            Collector::StatSsl => "stat_ssl",
        }
    }

    pub async fn run(self, conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
        match self {
            Collector::Settings => settings(conn, ctx).await,
            Collector::StatDatabase => stat_database(conn, ctx).await,
            Collector::Database => database(conn, ctx).await,
            Collector::Locks => locks(conn, ctx).await,
            Collector::StatActivity => stat_activity(conn, ctx).await,
            Collector::Roles => roles(conn, ctx).await,
            Collector::StatBgwriter => stat_bgwriter(conn, ctx).await,
            Collector::StatArchiver => replication::stat_archiver(conn, ctx).await,
            Collector::Replication => replication::replication(conn, ctx).await,
            Collector::ReplicationSlots => replication::replication_slots(conn, ctx).await,
            Collector::StatReplication => replication::stat_replication(conn, ctx).await,
            Collector::Wal => replication::wal(conn, ctx).await,
            Collector::StatProgressVacuum => stat_progress_vacuum(conn, ctx).await,
            Collector::StatSsl => stat_ssl(conn, ctx).await,
        }
    }
}

/// What the first query of a scrape learns; it decides `pg_up`.
pub struct Probe {
    pub version: i32,
    pub database: String,
    pub families: Vec<Family>,
}

pub async fn probe(conn: &mut Conn, deadline: Instant) -> Result<Probe, PgError> {
    // The next xid comes from the snapshot's xmax: reading it never assigns
    // an xid (txid_current() would burn one per scrape) and works on
    // replicas.
    let sql =
        "SELECT version(), current_setting('server_version_num')::int4, current_database()::text, \
               extract(epoch FROM pg_postmaster_start_time())::float8, \
               pg_snapshot_xmax(pg_current_snapshot())::text::float8";
    let rows = conn.query(sql, &[], deadline).await?;
    let row = rows.first().ok_or(PgError::NoTimeLeft)?;
    let full_version = text(row, 0)?;
    let version: i32 = row
        .try_get(1)
        .map_err(|source| PgError::Decode { column: 1, source })?;
    let database = text(row, 2)?;
    let mut families = Vec::new();
    let mut stat = Family::with_labels(
        "pg_static",
        "Version string as reported by postgres",
        Kind::Untyped,
        &["short_version", "version"],
    );
    stat.push(&[&short_version(version), &full_version], 1.0);
    families.push(stat);
    if let Some(start) = float(row, 3)? {
        families.push(Family::single(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            Kind::Gauge,
            start,
        ));
    }
    if let Some(xid) = float(row, 4)? {
        families.push(Family::single(
            "pg_txid_current",
            "Next transaction id to be assigned (xmax of the current snapshot); never consumes one",
            Kind::Gauge,
            xid,
        ));
    }
    Ok(Probe {
        version,
        database,
        families,
    })
}

/// 150008 → "15.8.0" (postgres_exporter's semver form).
pub fn short_version(num: i32) -> String {
    format!("{}.{}.0", num / 10000, num % 10000)
}

async fn settings(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT name, setting, COALESCE(unit, ''), vartype FROM pg_settings \
               WHERE vartype IN ('bool', 'integer', 'real') ORDER BY name";
    let mut out = Vec::new();
    for row in conn.query(sql, &[], ctx.deadline).await? {
        let setting = Setting {
            name: text(&row, 0)?,
            setting: text(&row, 1)?,
            unit: text(&row, 2)?,
            vartype: text(&row, 3)?,
        };
        match normalise(&setting) {
            Ok((name, help, value)) => {
                // Two parameters could map to one name (`a.b` and `a_b`):
                // the first wins, as for any duplicate.
                if out.iter().all(|f: &Family| f.name() != name) {
                    let kind = lint_safe_kind(&name, Kind::Gauge);
                    out.push(Family::single(&name, &help, kind, value));
                }
            }
            Err(why) => tracing::debug!(setting = %setting.name, %why, "setting not exported"),
        }
    }
    Ok(out)
}

async fn stat_database(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let active_time = if ctx.version >= 140000 {
        "d.active_time::float8"
    } else {
        "NULL::float8"
    };
    let sql = format!(
        "SELECT d.datid::text, d.datname::text, d.numbackends::float8, d.xact_commit::float8, \
         d.xact_rollback::float8, d.blks_read::float8, d.blks_hit::float8, d.tup_returned::float8, \
         d.tup_fetched::float8, d.tup_inserted::float8, d.tup_updated::float8, d.tup_deleted::float8, \
         d.conflicts::float8, d.temp_files::float8, d.temp_bytes::float8, d.deadlocks::float8, \
         d.blk_read_time::float8, d.blk_write_time::float8, \
         COALESCE(extract(epoch FROM d.stats_reset), 0)::float8, {active_time}, \
         c.confl_tablespace::float8, c.confl_lock::float8, c.confl_snapshot::float8, \
         c.confl_bufferpin::float8, c.confl_deadlock::float8 \
         FROM pg_stat_database d LEFT JOIN pg_stat_database_conflicts c ON c.datid = d.datid \
         WHERE d.datname IS NOT NULL ORDER BY d.datid"
    );
    const LABELS: &[&str] = &["datid", "datname"];
    // (column, name, help, kind)
    let columns: [(usize, &str, &str, Kind); 22] = [
        (
            2,
            "numbackends",
            "Number of backends currently connected to this database",
            Kind::Gauge,
        ),
        (
            3,
            "xact_commit",
            "Number of transactions in this database that have been committed",
            Kind::Untyped,
        ),
        (
            4,
            "xact_rollback",
            "Number of transactions in this database that have been rolled back",
            Kind::Untyped,
        ),
        (
            5,
            "blks_read",
            "Number of disk blocks read in this database",
            Kind::Untyped,
        ),
        (
            6,
            "blks_hit",
            "Number of times disk blocks were found already in the buffer cache",
            Kind::Untyped,
        ),
        (
            7,
            "tup_returned",
            "Number of rows returned by queries in this database",
            Kind::Untyped,
        ),
        (
            8,
            "tup_fetched",
            "Number of rows fetched by queries in this database",
            Kind::Untyped,
        ),
        (
            9,
            "tup_inserted",
            "Number of rows inserted by queries in this database",
            Kind::Untyped,
        ),
        (
            10,
            "tup_updated",
            "Number of rows updated by queries in this database",
            Kind::Untyped,
        ),
        (
            11,
            "tup_deleted",
            "Number of rows deleted by queries in this database",
            Kind::Untyped,
        ),
        (
            12,
            "conflicts",
            "Number of queries canceled due to conflicts with recovery in this database",
            Kind::Untyped,
        ),
        (
            13,
            "temp_files",
            "Number of temporary files created by queries in this database",
            Kind::Untyped,
        ),
        (
            14,
            "temp_bytes",
            "Total amount of data written to temporary files by queries in this database",
            Kind::Untyped,
        ),
        (
            15,
            "deadlocks",
            "Number of deadlocks detected in this database",
            Kind::Untyped,
        ),
        (
            16,
            "blk_read_time",
            "Time spent reading data file blocks by backends in this database, in milliseconds",
            Kind::Untyped,
        ),
        (
            17,
            "blk_write_time",
            "Time spent writing data file blocks by backends in this database, in milliseconds",
            Kind::Untyped,
        ),
        (
            18,
            "stats_reset",
            "Time at which these statistics were last reset",
            Kind::Untyped,
        ),
        (
            20,
            "conflicts_confl_tablespace",
            "Queries canceled due to dropped tablespaces",
            Kind::Untyped,
        ),
        (
            21,
            "conflicts_confl_lock",
            "Queries canceled due to lock timeouts",
            Kind::Untyped,
        ),
        (
            22,
            "conflicts_confl_snapshot",
            "Queries canceled due to old snapshots",
            Kind::Untyped,
        ),
        (
            23,
            "conflicts_confl_bufferpin",
            "Queries canceled due to pinned buffers",
            Kind::Untyped,
        ),
        (
            24,
            "conflicts_confl_deadlock",
            "Queries canceled due to deadlocks",
            Kind::Untyped,
        ),
    ];
    let mut families: Vec<Family> = columns
        .iter()
        .map(|(_, name, help, kind)| {
            Family::with_labels(format!("pg_stat_database_{name}"), *help, *kind, LABELS)
        })
        .collect();
    let mut active = Family::with_labels(
        "pg_stat_database_active_time_seconds_total",
        "Time spent executing SQL statements in this database, in seconds",
        Kind::Counter,
        LABELS,
    );
    for row in conn.query(&sql, &[], ctx.deadline).await? {
        let labels = [text(&row, 0)?, text(&row, 1)?];
        let labels = [labels[0].as_str(), labels[1].as_str()];
        for (family, (column, ..)) in families.iter_mut().zip(columns.iter()) {
            if let Some(v) = float(&row, *column)? {
                family.push(&labels, v);
            }
        }
        if let Some(ms) = float(&row, 19)? {
            active.push(&labels, ms / 1000.0);
        }
    }
    families.push(active);
    Ok(families)
}

async fn database(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    // pg_database_size needs CONNECT (or pg_read_all_stats): skip the
    // others rather than fail the whole collector.
    let sql = "SELECT datname::text, datconnlimit::float8, \
               CASE WHEN has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE') \
               THEN pg_database_size(oid)::float8 END \
               FROM pg_database ORDER BY oid";
    let mut size = Family::with_labels(
        "pg_database_size_bytes",
        "Disk space used by the database",
        Kind::Gauge,
        &["datname"],
    );
    let mut limit = Family::with_labels(
        "pg_database_connection_limit",
        "Connection limit set for the database",
        Kind::Gauge,
        &["datname"],
    );
    for row in conn.query(sql, &[], ctx.deadline).await? {
        let name = text(&row, 0)?;
        if let Some(v) = float(&row, 1)? {
            limit.push(&[&name], v);
        }
        if let Some(v) = float(&row, 2)? {
            size.push(&[&name], v);
        }
    }
    Ok(vec![size, limit])
}

const LOCK_MODES: [&str; 9] = [
    "accesssharelock",
    "rowsharelock",
    "rowexclusivelock",
    "shareupdateexclusivelock",
    "sharelock",
    "sharerowexclusivelock",
    "exclusivelock",
    "accessexclusivelock",
    "sireadlock",
];

async fn locks(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT d.datname::text, m.mode, COALESCE(l.n, 0)::float8 \
               FROM pg_database d CROSS JOIN unnest($1::text[]) AS m(mode) \
               LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS n FROM pg_locks \
                          WHERE database IS NOT NULL GROUP BY 1, 2) l \
               ON l.database = d.oid AND l.mode = m.mode ORDER BY d.oid, m.mode";
    let modes: Vec<&str> = LOCK_MODES.to_vec();
    let mut family = Family::with_labels(
        "pg_locks_count",
        "Number of locks",
        Kind::Untyped,
        &["datname", "mode"],
    );
    for row in conn.query(sql, &[&modes], ctx.deadline).await? {
        family.push(
            &[&text(&row, 0)?, &text(&row, 1)?],
            float(&row, 2)?.unwrap_or(0.0),
        );
    }
    Ok(vec![family])
}

const ACTIVITY_STATES: [&str; 6] = [
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
];

async fn stat_activity(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    // Sessions grouped by their labels, then a zero row for every
    // (database, state) pair without sessions, as postgres_exporter does.
    let sql = "WITH a AS ( \
                 SELECT datname::text AS datname, COALESCE(state, '') AS state, COALESCE(usename::text, '') AS usename, \
                   COALESCE(application_name, '') AS app, COALESCE(backend_type, '') AS btype, \
                   COALESCE(wait_event_type, '') AS wtype, COALESCE(wait_event, '') AS wevent, \
                   count(*)::float8 AS n, \
                   COALESCE(max(extract(epoch FROM now() - xact_start)), 0)::float8 AS max_tx \
                 FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> ALL($1::int4[]) \
                 GROUP BY 1, 2, 3, 4, 5, 6, 7) \
               SELECT * FROM a \
               UNION ALL \
               SELECT d.datname::text, s.state, '', '', '', '', '', 0, 0 \
               FROM pg_database d CROSS JOIN unnest($2::text[]) AS s(state) \
               WHERE NOT EXISTS (SELECT 1 FROM a WHERE a.datname = d.datname AND a.state = s.state)";
    const LABELS: &[&str] = &[
        "datname",
        "state",
        "usename",
        "application_name",
        "backend_type",
        "wait_event_type",
        "wait_event",
    ];
    let states: Vec<&str> = ACTIVITY_STATES.to_vec();
    let mut count = Family::with_labels(
        "pg_stat_activity_count",
        "number of connections in this state",
        Kind::Untyped,
        LABELS,
    );
    let mut max_tx = Family::with_labels(
        "pg_stat_activity_max_tx_duration",
        "max duration in seconds any active transaction has been running",
        Kind::Gauge,
        LABELS,
    );
    for row in conn
        .query(sql, &[&ctx.own_pids, &states], ctx.deadline)
        .await?
    {
        let labels = (0..7)
            .map(|i| text(&row, i))
            .collect::<Result<Vec<_>, _>>()?;
        count.add(labels.clone(), float(&row, 7)?.unwrap_or(0.0));
        max_tx.add(labels, float(&row, 8)?.unwrap_or(0.0));
    }
    Ok(vec![count, max_tx])
}

async fn roles(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT rolname::text, rolconnlimit::float8 FROM pg_roles ORDER BY oid";
    let mut family = Family::with_labels(
        "pg_roles_connection_limit",
        "Connection limit set for the role",
        Kind::Gauge,
        &["rolname"],
    );
    for row in conn.query(sql, &[], ctx.deadline).await? {
        if let Some(v) = float(&row, 1)? {
            family.push(&[&text(&row, 0)?], v);
        }
    }
    Ok(vec![family])
}

/// Counter families named `<prefix><column>_total` from one row.
async fn counters_total(
    conn: &mut Conn,
    ctx: &Ctx,
    prefix: &str,
    view: &str,
    columns: &[(&str, &str)],
) -> Result<Vec<Family>, PgError> {
    let select: Vec<String> = columns
        .iter()
        .map(|(c, _)| {
            if *c == "stats_reset" {
                "COALESCE(extract(epoch FROM stats_reset), 0)::float8".to_string()
            } else {
                format!("{c}::float8")
            }
        })
        .collect();
    let sql = format!("SELECT {} FROM {view}", select.join(", "));
    let rows = conn.query(&sql, &[], ctx.deadline).await?;
    let mut out = Vec::new();
    if let Some(row) = rows.first() {
        for (i, (column, help)) in columns.iter().enumerate() {
            if let Some(v) = float(row, i)? {
                out.push(Family::single(
                    &format!("{prefix}{column}_total"),
                    help,
                    Kind::Counter,
                    v,
                ));
            }
        }
    }
    Ok(out)
}

async fn stat_bgwriter(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    if ctx.version >= 170000 {
        // PostgreSQL 17 moved the checkpoint columns to pg_stat_checkpointer.
        let mut out = counters_total(
            conn,
            ctx,
            "pg_stat_bgwriter_",
            "pg_stat_bgwriter",
            &[
                ("buffers_clean", "Number of buffers written by the background writer"),
                ("maxwritten_clean", "Number of times the background writer stopped a cleaning scan because it had written too many buffers"),
                ("buffers_alloc", "Number of buffers allocated"),
                ("stats_reset", "Time at which these statistics were last reset"),
            ],
        )
        .await?;
        out.extend(
            counters_total(
                conn,
                ctx,
                "pg_stat_checkpointer_",
                "pg_stat_checkpointer",
                &[
                    ("num_timed", "Number of scheduled checkpoints due to timeout"),
                    ("num_requested", "Number of requested checkpoints"),
                    ("restartpoints_timed", "Number of scheduled restartpoints due to timeout or after a failed attempt"),
                    ("restartpoints_req", "Number of requested restartpoints"),
                    ("restartpoints_done", "Number of restartpoints that have been performed"),
                    ("write_time", "Time spent writing files to disk during checkpoints and restartpoints, in milliseconds"),
                    ("sync_time", "Time spent synchronizing files to disk during checkpoints and restartpoints, in milliseconds"),
                    ("buffers_written", "Number of buffers written during checkpoints and restartpoints"),
                    ("stats_reset", "Time at which these statistics were last reset"),
                ],
            )
            .await?,
        );
        return Ok(out);
    }
    counters_total(
        conn,
        ctx,
        "pg_stat_bgwriter_",
        "pg_stat_bgwriter",
        &[
            ("checkpoints_timed", "Number of scheduled checkpoints that have been performed"),
            ("checkpoints_req", "Number of requested checkpoints that have been performed"),
            ("checkpoint_write_time", "Time spent writing files to disk during checkpoints, in milliseconds"),
            ("checkpoint_sync_time", "Time spent synchronizing files to disk during checkpoints, in milliseconds"),
            ("buffers_checkpoint", "Number of buffers written during checkpoints"),
            ("buffers_clean", "Number of buffers written by the background writer"),
            ("maxwritten_clean", "Number of times the background writer stopped a cleaning scan because it had written too many buffers"),
            ("buffers_backend", "Number of buffers written directly by a backend"),
            ("buffers_backend_fsync", "Number of times a backend had to execute its own fsync call"),
            ("buffers_alloc", "Number of buffers allocated"),
            ("stats_reset", "Time at which these statistics were last reset"),
        ],
    )
    .await
}

const VACUUM_PHASES: [&str; 7] = [
    "initializing",
    "scanning heap",
    "vacuuming indexes",
    "vacuuming heap",
    "cleaning up indexes",
    "truncating heap",
    "performing final cleanup",
];

async fn stat_progress_vacuum(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    // PostgreSQL 17 counts dead items in bytes and item ids instead.
    let (max_dead, num_dead) = if ctx.version >= 170000 {
        ("NULL::float8", "s.num_dead_item_ids::float8")
    } else {
        ("s.max_dead_tuples::float8", "s.num_dead_tuples::float8")
    };
    // A relation of another database cannot be named from here: its oid.
    let sql = format!(
        "SELECT COALESCE(d.datname::text, 'unknown'), \
         COALESCE(CASE WHEN d.datname = current_database() THEN s.relid::regclass::text END, s.relid::text), \
         s.phase, s.heap_blks_total::float8, s.heap_blks_scanned::float8, s.heap_blks_vacuumed::float8, \
         s.index_vacuum_count::float8, {max_dead}, {num_dead} \
         FROM pg_stat_progress_vacuum s LEFT JOIN pg_database d ON d.oid = s.datid ORDER BY s.pid"
    );
    const LABELS: &[&str] = &["datname", "relname"];
    let mut phase = Family::with_labels(
        "pg_stat_progress_vacuum_phase",
        "Current vacuum phase (1 for the current phase, 0 for the others)",
        Kind::Gauge,
        &["datname", "relname", "phase"],
    );
    let columns = [
        (
            3,
            "heap_blks",
            "Total number of heap blocks in the table being vacuumed.",
        ),
        (
            4,
            "heap_blks_scanned",
            "Number of heap blocks scanned so far.",
        ),
        (
            5,
            "heap_blks_vacuumed",
            "Number of heap blocks vacuumed so far.",
        ),
        (
            6,
            "index_vacuums",
            "Number of completed index vacuum cycles.",
        ),
        (
            7,
            "max_dead_tuples",
            "Maximum number of dead tuples that can be stored before cleanup is performed.",
        ),
        (
            8,
            "num_dead_tuples",
            "Current number of dead tuples found so far.",
        ),
    ];
    let mut families: Vec<Family> = columns
        .iter()
        .map(|(_, name, help)| {
            Family::with_labels(
                format!("pg_stat_progress_vacuum_{name}"),
                *help,
                Kind::Gauge,
                LABELS,
            )
        })
        .collect();
    for row in conn.query(&sql, &[], ctx.deadline).await? {
        let datname = text(&row, 0)?;
        let relname = text(&row, 1)?;
        let current = text(&row, 2)?;
        for p in VACUUM_PHASES {
            phase.push(
                &[&datname, &relname, p],
                if p == current { 1.0 } else { 0.0 },
            );
        }
        for (family, (column, ..)) in families.iter_mut().zip(columns.iter()) {
            if let Some(v) = float(&row, *column)? {
                family.push(&[&datname, &relname], v);
            }
        }
    }
    families.insert(0, phase);
    Ok(families)
}

async fn stat_ssl(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    // PostgreSQL 14 removed SSL compression (and the column).
    let value = if ctx.version >= 140000 {
        0.0
    } else {
        let sql = "SELECT count(*) FILTER (WHERE compression)::float8 FROM pg_stat_ssl";
        let rows = conn.query(sql, &[], ctx.deadline).await?;
        match rows.first() {
            Some(row) => float(row, 0)?.unwrap_or(0.0),
            None => 0.0,
        }
    };
    Ok(vec![Family::single(
        "pg_stat_ssl_compression",
        "Number of SSL connections using compression",
        Kind::Gauge,
        value,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_versions() {
        assert_eq!(short_version(150008), "15.8.0");
        assert_eq!(short_version(170000), "17.0.0");
        assert_eq!(short_version(130021), "13.21.0");
    }
}
