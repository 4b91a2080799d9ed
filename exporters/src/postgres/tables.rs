//! Per-database collectors: table statistics (`pg_stat_user_tables_*`,
//! `pg_statio_user_tables_*`) and invalid indexes. PostgreSQL shows these
//! only for the database a session is connected to, so each database gets
//! its own session.

use std::borrow::Borrow;
use tokio::time::Instant;

use super::conn::{float, text, Conn, PgError};
use crate::family::{Family, Kind, Labels};

/// One table's statistics, in the order of [`TABLE_COLUMNS`].
pub struct TableRow {
    pub schemaname: String,
    pub relname: String,
    pub values: Vec<Option<f64>>,
}

pub struct InvalidIndex {
    pub schemaname: String,
    pub relname: String,
    pub indexrelname: String,
    pub size: f64,
}

/// What one database's queries found.
pub struct DbTables {
    pub datname: String,
    pub tables: Vec<TableRow>,
    /// Tables the per-database cap left out.
    pub tables_left_out: usize,
    /// `Err` when the statement failed (the tables collector's status).
    pub tables_error: Option<PgError>,
    pub invalid_indexes: Vec<InvalidIndex>,
    pub indexes_error: Option<PgError>,
}

/// (family, help, kind); the family name is `pg_stat_user_tables_<name>`
/// or `pg_statio_user_tables_<name>` (entries starting with `io:`).
pub const TABLE_COLUMNS: [(&str, &str, Kind); 29] = [
    (
        "seq_scan",
        "Number of sequential scans initiated on this table",
        Kind::Untyped,
    ),
    (
        "seq_tup_read",
        "Number of live rows fetched by sequential scans",
        Kind::Untyped,
    ),
    (
        "idx_scan",
        "Number of index scans initiated on this table",
        Kind::Untyped,
    ),
    (
        "idx_tup_fetch",
        "Number of live rows fetched by index scans",
        Kind::Untyped,
    ),
    ("n_tup_ins", "Number of rows inserted", Kind::Untyped),
    ("n_tup_upd", "Number of rows updated", Kind::Untyped),
    ("n_tup_del", "Number of rows deleted", Kind::Untyped),
    (
        "n_tup_hot_upd",
        "Number of rows HOT updated (i.e., with no separate index update required)",
        Kind::Untyped,
    ),
    ("n_live_tup", "Estimated number of live rows", Kind::Gauge),
    ("n_dead_tup", "Estimated number of dead rows", Kind::Gauge),
    (
        "n_mod_since_analyze",
        "Estimated number of rows changed since last analyze",
        Kind::Gauge,
    ),
    (
        "last_vacuum",
        "Last time at which this table was manually vacuumed (not counting VACUUM FULL)",
        Kind::Gauge,
    ),
    (
        "last_autovacuum",
        "Last time at which this table was vacuumed by the autovacuum daemon",
        Kind::Gauge,
    ),
    (
        "last_analyze",
        "Last time at which this table was manually analyzed",
        Kind::Gauge,
    ),
    (
        "last_autoanalyze",
        "Last time at which this table was analyzed by the autovacuum daemon",
        Kind::Gauge,
    ),
    (
        "vacuum_count",
        "Number of times this table has been manually vacuumed (not counting VACUUM FULL)",
        Kind::Untyped,
    ),
    (
        "autovacuum_count",
        "Number of times this table has been vacuumed by the autovacuum daemon",
        Kind::Untyped,
    ),
    (
        "analyze_count",
        "Number of times this table has been manually analyzed",
        Kind::Untyped,
    ),
    (
        "autoanalyze_count",
        "Number of times this table has been analyzed by the autovacuum daemon",
        Kind::Untyped,
    ),
    (
        "index_size_bytes",
        "Total disk space used by the indexes on this table, in bytes",
        Kind::Gauge,
    ),
    (
        "table_size_bytes",
        "Total disk space used by this table, in bytes",
        Kind::Gauge,
    ),
    (
        "io:heap_blocks_read",
        "Number of disk blocks read from this table",
        Kind::Untyped,
    ),
    (
        "io:heap_blocks_hit",
        "Number of buffer hits in this table",
        Kind::Untyped,
    ),
    (
        "io:idx_blocks_read",
        "Number of disk blocks read from all indexes on this table",
        Kind::Untyped,
    ),
    (
        "io:idx_blocks_hit",
        "Number of buffer hits in all indexes on this table",
        Kind::Untyped,
    ),
    (
        "io:toast_blocks_read",
        "Number of disk blocks read from this table's TOAST table (if any)",
        Kind::Untyped,
    ),
    (
        "io:toast_blocks_hit",
        "Number of buffer hits in this table's TOAST table (if any)",
        Kind::Untyped,
    ),
    (
        "io:tidx_blocks_read",
        "Number of disk blocks read from this table's TOAST table indexes (if any)",
        Kind::Untyped,
    ),
    (
        "io:tidx_blocks_hit",
        "Number of buffer hits in this table's TOAST table indexes (if any)",
        Kind::Untyped,
    ),
];

/// Series per table.
pub const SERIES_PER_TABLE: usize = TABLE_COLUMNS.len();

/// Largest tables (by row estimate) first, so a cap keeps the ones that
/// matter. `last_*` are 0 when it never happened (the alert rules test
/// `> 0`). Sizes read the relation without waiting past `lock_timeout`.
const TABLES_SQL: &str = "SELECT s.schemaname::text, s.relname::text, \
    s.seq_scan::float8, s.seq_tup_read::float8, COALESCE(s.idx_scan, 0)::float8, COALESCE(s.idx_tup_fetch, 0)::float8, \
    s.n_tup_ins::float8, s.n_tup_upd::float8, s.n_tup_del::float8, s.n_tup_hot_upd::float8, \
    s.n_live_tup::float8, s.n_dead_tup::float8, s.n_mod_since_analyze::float8, \
    COALESCE(extract(epoch FROM s.last_vacuum), 0)::float8, COALESCE(extract(epoch FROM s.last_autovacuum), 0)::float8, \
    COALESCE(extract(epoch FROM s.last_analyze), 0)::float8, COALESCE(extract(epoch FROM s.last_autoanalyze), 0)::float8, \
    s.vacuum_count::float8, s.autovacuum_count::float8, s.analyze_count::float8, s.autoanalyze_count::float8, \
    COALESCE(pg_indexes_size(s.relid), 0)::float8, COALESCE(pg_table_size(s.relid), 0)::float8, \
    COALESCE(io.heap_blks_read, 0)::float8, COALESCE(io.heap_blks_hit, 0)::float8, \
    COALESCE(io.idx_blks_read, 0)::float8, COALESCE(io.idx_blks_hit, 0)::float8, \
    COALESCE(io.toast_blks_read, 0)::float8, COALESCE(io.toast_blks_hit, 0)::float8, \
    COALESCE(io.tidx_blks_read, 0)::float8, COALESCE(io.tidx_blks_hit, 0)::float8, \
    count(*) OVER ()::int8 \
    FROM pg_stat_user_tables s LEFT JOIN pg_statio_user_tables io ON io.relid = s.relid \
    ORDER BY s.n_live_tup + s.n_dead_tup DESC, s.relid LIMIT $1";

/// Indexes a failed `CREATE INDEX CONCURRENTLY` / `REINDEX CONCURRENTLY`
/// left behind (`indisvalid = false`).
const INVALID_INDEXES_SQL: &str = "SELECT n.nspname::text, t.relname::text, c.relname::text, \
    pg_relation_size(c.oid)::float8 \
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE NOT i.indisvalid ORDER BY c.oid LIMIT $1";

/// Run both statements on `conn`, the session of database `datname`.
pub async fn collect(
    conn: &mut Conn,
    datname: &str,
    max_tables: usize,
    deadline: Instant,
) -> DbTables {
    let mut out = DbTables {
        datname: datname.to_string(),
        tables: Vec::new(),
        tables_left_out: 0,
        tables_error: None,
        invalid_indexes: Vec::new(),
        indexes_error: None,
    };
    let limit = max_tables as i64;
    match read_tables(conn, limit, deadline).await {
        Ok((tables, total)) => {
            out.tables_left_out = total.saturating_sub(tables.len());
            out.tables = tables;
        }
        Err(e) => out.tables_error = Some(e),
    }
    if out
        .tables_error
        .as_ref()
        .is_some_and(PgError::breaks_session)
    {
        return out;
    }
    match read_invalid_indexes(conn, limit, deadline).await {
        Ok(indexes) => out.invalid_indexes = indexes,
        Err(e) => out.indexes_error = Some(e),
    }
    out
}

async fn read_tables(
    conn: &mut Conn,
    limit: i64,
    deadline: Instant,
) -> Result<(Vec<TableRow>, usize), PgError> {
    let rows = conn.query(TABLES_SQL, &[&limit], deadline).await?;
    let mut total = 0;
    let mut tables = Vec::with_capacity(rows.len());
    for row in &rows {
        let values = (2..2 + SERIES_PER_TABLE)
            .map(|i| float(row, i))
            .collect::<Result<Vec<_>, _>>()?;
        total = row
            .try_get::<_, i64>(2 + SERIES_PER_TABLE)
            .map_err(|source| PgError::Decode {
                column: 2 + SERIES_PER_TABLE,
                source,
            })? as usize;
        tables.push(TableRow {
            schemaname: text(row, 0)?,
            relname: text(row, 1)?,
            values,
        });
    }
    Ok((tables, total))
}

async fn read_invalid_indexes(
    conn: &mut Conn,
    limit: i64,
    deadline: Instant,
) -> Result<Vec<InvalidIndex>, PgError> {
    let rows = conn.query(INVALID_INDEXES_SQL, &[&limit], deadline).await?;
    rows.iter()
        .map(|row| {
            Ok(InvalidIndex {
                schemaname: text(row, 0)?,
                relname: text(row, 1)?,
                indexrelname: text(row, 2)?,
                size: float(row, 3)?.unwrap_or(0.0),
            })
        })
        .collect()
}

/// The table families for `dbs`, in order, keeping at most `max_tables`
/// tables overall; returns the families and how many tables were cut.
pub fn table_families<D: Borrow<DbTables>>(dbs: &[D], max_tables: usize) -> (Vec<Family>, usize) {
    const LABELS: &[&str] = &["datname", "schemaname", "relname"];
    let mut families: Vec<Family> = TABLE_COLUMNS
        .iter()
        .map(|(name, help, kind)| {
            let name = match name.strip_prefix("io:") {
                Some(io) => format!("pg_statio_user_tables_{io}"),
                None => format!("pg_stat_user_tables_{name}"),
            };
            Family::with_labels(name, *help, *kind, LABELS)
        })
        .collect();
    let mut kept = 0;
    let mut cut = 0;
    for db in dbs {
        let db = db.borrow();
        for table in &db.tables {
            if kept == max_tables {
                cut += 1;
                continue;
            }
            kept += 1;
            let labels: Labels = vec![
                db.datname.clone(),
                table.schemaname.clone(),
                table.relname.clone(),
            ]
            .into();
            for (family, value) in families.iter_mut().zip(&table.values) {
                if let Some(v) = value {
                    family.add_shared(labels.clone(), *v);
                }
            }
        }
    }
    (families, cut)
}

pub fn invalid_index_family<D: Borrow<DbTables>>(dbs: &[D]) -> Family {
    let mut family = Family::with_labels(
        "pg_general_index_info_pg_relation_size",
        "Size of invalid indexes (left by a failed CREATE/REINDEX CONCURRENTLY), in bytes",
        Kind::Gauge,
        &["datname", "schemaname", "relname", "indexrelname"],
    );
    for db in dbs {
        let db = db.borrow();
        for index in &db.invalid_indexes {
            family.push(
                &[
                    &db.datname,
                    &index.schemaname,
                    &index.relname,
                    &index.indexrelname,
                ],
                index.size,
            );
        }
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str, tables: &[&str]) -> DbTables {
        DbTables {
            datname: name.into(),
            tables: tables
                .iter()
                .map(|t| TableRow {
                    schemaname: "public".into(),
                    relname: t.to_string(),
                    values: vec![Some(1.0); SERIES_PER_TABLE],
                })
                .collect(),
            tables_left_out: 0,
            tables_error: None,
            invalid_indexes: Vec::new(),
            indexes_error: None,
        }
    }

    #[test]
    fn the_same_table_name_in_two_databases_is_two_series() {
        let (families, cut) = table_families(&[db("a", &["t"]), db("b", &["t"])], 100);
        assert_eq!(cut, 0);
        assert_eq!(families.len(), SERIES_PER_TABLE);
        assert!(families.iter().all(|f| f.len() == 2));
        assert!(families
            .iter()
            .any(|f| f.name() == "pg_statio_user_tables_tidx_blocks_hit"));
        assert!(families
            .iter()
            .any(|f| f.name() == "pg_stat_user_tables_last_autovacuum"));
    }

    #[test]
    fn the_table_cap_keeps_whole_tables_in_database_order() {
        let (families, cut) = table_families(&[db("a", &["t1", "t2"]), db("b", &["t3"])], 2);
        assert_eq!(cut, 1);
        assert!(families.iter().all(|f| f.len() == 2));
    }
}
