//! WAL, archiving and replication collectors (postgres_exporter's
//! `stat_archiver`, `replication`, `replication_slots`,
//! `stat_replication` and `wal`).

use super::conn::{boolean, float, text, Conn, PgError};
use super::server::Ctx;
use crate::family::{Family, Kind};

pub async fn stat_archiver(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT archived_count::float8, failed_count::float8, \
               extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver";
    let rows = conn.query(sql, &[], ctx.deadline).await?;
    let mut out = Vec::new();
    if let Some(row) = rows.first() {
        if let Some(v) = float(row, 0)? {
            out.push(Family::single(
                "pg_stat_archiver_archived_count",
                "Number of WAL files that have been successfully archived",
                Kind::Untyped,
                v,
            ));
        }
        if let Some(v) = float(row, 1)? {
            out.push(Family::single(
                "pg_stat_archiver_failed_count",
                "Number of failed attempts for archiving WAL files",
                Kind::Untyped,
                v,
            ));
        }
        // Absent until a first WAL file is archived (as postgres_exporter).
        if let Some(v) = float(row, 2)? {
            out.push(Family::single(
                "pg_stat_archiver_last_archive_age",
                "Time in seconds since last WAL segment was successfully archived",
                Kind::Gauge,
                v,
            ));
        }
    }
    Ok(out)
}

pub async fn replication(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                 WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                 ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp())) END::float8, \
               CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END::float8, \
               GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))::float8";
    let rows = conn.query(sql, &[], ctx.deadline).await?;
    let mut out = Vec::new();
    if let Some(row) = rows.first() {
        let rows = [
            (
                "pg_replication_lag_seconds",
                "Replication lag behind master in seconds",
            ),
            (
                "pg_replication_is_replica",
                "Indicates if the server is a replica",
            ),
            (
                "pg_replication_last_replay_seconds",
                "Age of last replay in seconds",
            ),
        ];
        for (i, (name, help)) in rows.iter().enumerate() {
            out.push(Family::single(
                name,
                help,
                Kind::Gauge,
                float(row, i)?.unwrap_or(0.0),
            ));
        }
    }
    Ok(out)
}

pub async fn replication_slots(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT slot_name::text, slot_type, COALESCE(database::text, ''), active, \
               (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END \
                 - restart_lsn)::float8, \
               (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END \
                 - '0/0')::float8, \
               (COALESCE(confirmed_flush_lsn, '0/0') - '0/0')::float8, \
               safe_wal_size::float8, wal_status \
               FROM pg_replication_slots ORDER BY slot_name";
    const BY_DB: &[&str] = &["slot_name", "database"];
    const BY_TYPE: &[&str] = &["slot_name", "slot_type"];
    let mut active = Family::with_labels(
        "pg_replication_slots_active",
        "Flag indicating if the slot is active",
        Kind::Gauge,
        BY_DB,
    );
    let mut diff = Family::with_labels(
        "pg_replication_slots_pg_wal_lsn_diff",
        "Replication lag in bytes",
        Kind::Gauge,
        BY_DB,
    );
    let mut current = Family::with_labels(
        "pg_replication_slots_slot_current_wal_lsn",
        "current wal lsn value",
        Kind::Gauge,
        BY_TYPE,
    );
    let mut flushed = Family::with_labels(
        "pg_replication_slots_slot_confirmed_flush_lsn",
        "last lsn confirmed flushed to the replication slot",
        Kind::Gauge,
        BY_TYPE,
    );
    let mut is_active = Family::with_labels(
        "pg_replication_slots_slot_is_active",
        "whether the replication slot is active or not",
        Kind::Gauge,
        BY_TYPE,
    );
    let mut safe = Family::with_labels(
        "pg_replication_slots_safe_wal_size_bytes",
        "number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost",
        Kind::Gauge,
        BY_TYPE,
    );
    let mut status = Family::with_labels(
        "pg_replication_slots_wal_status",
        "availability of WAL files claimed by this slot",
        Kind::Gauge,
        &["slot_name", "slot_type", "wal_status"],
    );
    for row in conn.query(sql, &[], ctx.deadline).await? {
        let name = text(&row, 0)?;
        let slot_type = text(&row, 1)?;
        let database = text(&row, 2)?;
        let is = boolean(&row, 3)?.unwrap_or(false);
        let flag = if is { 1.0 } else { 0.0 };
        active.push(&[&name, &database], flag);
        is_active.push(&[&name, &slot_type], flag);
        if let Some(v) = float(&row, 4)? {
            diff.push(&[&name, &database], v);
        }
        if let Some(v) = float(&row, 5)? {
            current.push(&[&name, &slot_type], v);
        }
        if let (true, Some(v)) = (is, float(&row, 6)?) {
            flushed.push(&[&name, &slot_type], v);
        }
        if let Some(v) = float(&row, 7)? {
            safe.push(&[&name, &slot_type], v);
        }
        let wal_status = text(&row, 8)?;
        if !wal_status.is_empty() {
            status.push(&[&name, &slot_type, &wal_status], 1.0);
        }
    }
    Ok(vec![
        active, diff, current, flushed, is_active, safe, status,
    ])
}

pub async fn stat_replication(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT COALESCE(r.application_name, ''), COALESCE(r.client_addr::text, ''), COALESCE(r.state, ''), \
               COALESCE(s.slot_name::text, ''), r.pid::text, \
               (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END \
                 - '0/0')::float8, \
               (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END \
                 - r.replay_lsn)::float8 \
               FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
               ORDER BY r.pid";
    const LABELS: &[&str] = &[
        "application_name",
        "client_addr",
        "state",
        "slot_name",
        "pid",
    ];
    let mut position = Family::with_labels(
        "pg_stat_replication_pg_current_wal_lsn_bytes",
        "WAL position in bytes",
        Kind::Gauge,
        LABELS,
    );
    let mut lag = Family::with_labels(
        "pg_stat_replication_pg_wal_lsn_diff",
        "Lag in bytes between master and slave",
        Kind::Gauge,
        LABELS,
    );
    for row in conn.query(sql, &[], ctx.deadline).await? {
        let labels = (0..5)
            .map(|i| text(&row, i))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(v) = float(&row, 5)? {
            position.add(labels.clone(), v);
        }
        if let Some(v) = float(&row, 6)? {
            lag.add(labels, v);
        }
    }
    Ok(vec![position, lag])
}

pub async fn wal(conn: &mut Conn, ctx: &Ctx) -> Result<Vec<Family>, PgError> {
    let sql = "SELECT count(*)::float8, COALESCE(sum(size), 0)::float8 FROM pg_ls_waldir() \
               WHERE name ~ '^[0-9A-F]{24}$'";
    let rows = conn.query(sql, &[], ctx.deadline).await?;
    let mut out = Vec::new();
    if let Some(row) = rows.first() {
        out.push(Family::single(
            "pg_wal_segments",
            "Number of WAL segments",
            Kind::Gauge,
            float(row, 0)?.unwrap_or(0.0),
        ));
        out.push(Family::single(
            "pg_wal_size_bytes",
            "Total size of WAL segments",
            Kind::Gauge,
            float(row, 1)?.unwrap_or(0.0),
        ));
    }
    Ok(out)
}
