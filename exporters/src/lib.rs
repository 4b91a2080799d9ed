//! Prometheus metrics for pgpilot: PostgreSQL (in postgres_exporter's
//! names), HA state (in Patroni's names) and backups (in
//! pgbackrest_exporter's names), plus the sidecar's own process metrics, in
//! one text exposition per scrape.
//!
//! # Use
//!
//! ```no_run
//! use pgpilot_exporters::{BackupInput, Exporter, ExporterOptions, HaInput, PostgresOptions};
//!
//! # async fn serve(ha: HaInput, backup: BackupInput) {
//! let mut pg = tokio_postgres::Config::new();
//! pg.host_path("/run/postgresql").port(5432).user("monitoring").dbname("postgres");
//! // Built once, at start; no I/O until the first scrape. Clone it freely.
//! let exporter = Exporter::new(ExporterOptions {
//!     postgres: Some(PostgresOptions::new(pg)),
//!     ..ExporterOptions::default()
//! });
//! // In the HA loop, once per cycle:
//! exporter.observe_ha_cycle(std::time::Duration::from_millis(12));
//! // Per GET /metrics: always answer 200 with this body and content type.
//! let body: String = exporter.render(Some(&ha), Some(&backup)).await;
//! let content_type = pgpilot_exporters::CONTENT_TYPE;
//! # let _ = (body, content_type);
//! # }
//! ```
//!
//! [`Exporter::render`] never fails: whatever breaks shows in the metrics
//! (`pg_up 0`, `pg_scrape_collector_success{collector} 0`,
//! `pg_exporter_last_scrape_error 1`, `pgbackrest_exporter_status 0`).
//! Callers may add their own collectors to [`Exporter::registry`]; a family
//! whose name a built-in family already uses is dropped (with a warning).
//!
//! # Types and names
//!
//! Names are byte for byte those of the exporters the dashboards and alert
//! rules were written for. Types are theirs too, except for legacy names that
//! `promtool check metrics` rejects for their type:
//!
//! - counters without `_total` (`pg_stat_database_xact_commit`,
//!   `pg_stat_user_tables_seq_scan`, `pg_statio_user_tables_*`,
//!   `pg_stat_archiver_archived_count`, `pg_stat_database_stats_reset`,
//!   `patroni_xlog_*location`, ...) and gauges ending in `_count`
//!   (`pg_locks_count`, `pg_stat_activity_count`, and settings such as
//!   `pg_settings_tcp_keepalives_count`) are typed **untyped**.
//!   promtool's lint exempts untyped families; OpenTelemetry-based pipelines
//!   (grafana-agent's otelcol path) append `_total` only to counters, so the
//!   series keeps one name whatever sits in front of Prometheus; `rate()`
//!   works the same.
//! - `pg_static` is untyped, as in postgres_exporter.
//! - everything else keeps its original type; our own families (`pgpilot_*`)
//!   follow the naming guide (base units, `_total` on counters).
//!
//! No family ever holds two series with the same label values (the first
//! wins), and no family name appears twice: postgres_exporter answers HTTP
//! 500 on duplicates, we never do. Output order: the PostgreSQL families
//! (sorted by name), then the others (sorted by name).
//!
//! The text is written by this crate (the `prometheus` crate's
//! `TextEncoder` panics on untyped families and spells infinity `inf`). The
//! PostgreSQL families of a round are encoded once and shared by the
//! scrapes waiting on that round; nothing of a round is kept after its
//! scrapes are answered (unless [`PostgresOptions::cache_max_age`] is set).
//!
//! # PostgreSQL
//!
//! One long-lived monitoring connection ([`PostgresOptions::connection`]),
//! opened at the first scrape, re-established after an error and recycled
//! after [`PostgresOptions::max_connection_age`] (a long-lived backend's
//! memory grows). Each session runs with `statement_timeout` and
//! `lock_timeout`, and every statement also has a client-side limit. A
//! connection attempt is made at most once per scrape and is bounded by
//! [`PostgresOptions::connect_timeout`] (default 2 s), so with PostgreSQL
//! down a scrape returns at once with `pg_up 0` and only the exporter's own
//! `pg_exporter_*` series.
//!
//! `pg_up` is 1 only when this scrape's first query worked on the
//! connection: a refused login, a terminated session or a server that does
//! not answer all give 0. A session found dead at a scrape (PostgreSQL
//! restarted meanwhile) is replaced within that scrape. A failing query
//! removes only its collector's families and sets
//! `pg_scrape_collector_success{collector="..."} 0` and
//! `pg_exporter_last_scrape_error 1`; problems are logged once, when they
//! appear or change, and when they go away. The sessions of other
//! databases failing (e.g. a login refused for new sessions while the main
//! one lives) shows the same way, not in `pg_up`.
//!
//! Concurrent scrapes share one round of queries: the first caller starts a
//! round on a background task, later callers wait for that round's result
//! instead of starting their own. The round runs to its end even when the
//! caller goes away, so a cancelled HTTP request never leaves a connection
//! half-used. [`PostgresOptions::cache_max_age`] (default 0) also lets a
//! scrape reuse a round that finished that recently.
//!
//! Collectors (postgres_exporter's default set, same names and labels):
//! `pg_up`, `pg_static{version,short_version}`,
//! `pg_postmaster_start_time_seconds`, `pg_stat_database_*{datid,datname}`
//! (with `pg_stat_database_conflicts_confl_*`), `pg_database_size_bytes`,
//! `pg_database_connection_limit`, `pg_roles_connection_limit`,
//! `pg_locks_count{datname,mode}` (9 modes, zeros included),
//! `pg_stat_activity_count` / `_max_tx_duration` (the exporter's own
//! sessions excluded), `pg_settings_*` (postgres_exporter's unit rules),
//! `pg_stat_bgwriter_*_total` (and `pg_stat_checkpointer_*_total` on 17),
//! `pg_stat_archiver_*`, `pg_replication_{lag_seconds,is_replica,
//! last_replay_seconds}`, `pg_replication_slots_*` (both label shapes),
//! `pg_stat_replication_{pg_current_wal_lsn_bytes,pg_wal_lsn_diff}`,
//! `pg_stat_progress_vacuum_*`, `pg_wal_segments`, `pg_wal_size_bytes`,
//! `pg_stat_user_tables_*` and `pg_statio_user_tables_*`.
//!
//! Added for the charm's alert rules that no default exporter served:
//! `pg_postmaster_start_time_seconds`, `pg_txid_current` (the next
//! transaction id, read from the snapshot's xmax: a scrape never consumes an
//! xid and it works on replicas), `pg_stat_ssl_compression` (always 0 on
//! PostgreSQL 14+, which removed SSL compression), and
//! `pg_general_index_info_pg_relation_size{datname,schemaname,relname,
//! indexrelname}` for **invalid** indexes only (the rule looks for leftovers
//! of a failed `REINDEX CONCURRENTLY`; every index would cost a series each).
//! Left out: `postgresql_errors_total` (counted from the server log, not SQL;
//! the sidecar would have to parse the log stream) and `pg_bloat_*` (an
//! estimation query over every table and index, too heavy for every scrape).
//!
//! Per-table statistics cover every database that accepts connections
//! (templates and `datallowconn = false` skipped, and databases the role
//! may not connect to), not only the connection's own. The other
//! databases are read every [`PostgresOptions::table_stats_interval`] on a
//! short session each, [`PostgresOptions::database_concurrency`] at a time;
//! scrapes in between serve the last clean read. A held session per
//! database ([`PostgresOptions::keep_database_sessions`]) saves those
//! connections but costs a backend each: about 4 MiB of catalog caches with
//! 20 tables in our benchmark, a `max_connections` slot, and a plain `DROP
//! DATABASE` waits for it. Caps: [`PostgresOptions::max_databases`]
//! (databases visited, lowest oid first, so the choice is stable),
//! [`PostgresOptions::max_tables_per_database`] (largest tables first) and
//! [`PostgresOptions::max_series`] (all PostgreSQL series of a scrape;
//! collectors past the budget are cut). What the caps leave out is counted
//! in `pg_exporter_series_dropped` and `pg_exporter_databases_skipped`, and
//! logged.
//!
//! PostgreSQL 13 to 17 are supported (queries chosen by server version).
//!
//! # HA and backups
//!
//! The caller fills [`HaInput`] and [`BackupInput`] from its own state at
//! each scrape; nothing here reads etcd or the repository. Times are
//! computed at render time (`pgbackrest_backup_since_last_completion_seconds`
//! is never stale).
//!
//! # Process
//!
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds` of the calling process, read from
//! `/proc/self` (Linux).

mod backup;
mod exporter;
mod family;
mod ha;
mod postgres;
mod process;
mod text;

pub use backup::{ArchiveStats, BackupInput, BackupKind, BackupProgress, BackupRecord};
pub use exporter::{Exporter, ExporterOptions};
pub use ha::{HaInput, HaRole, PostgresState, ReplicationState};
pub use postgres::PostgresOptions;

/// The `Content-Type` of [`Exporter::render`]'s output (text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
