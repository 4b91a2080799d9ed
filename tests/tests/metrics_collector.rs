//! The PostgreSQL collector of `pgpilot-exporters` against a real
//! PostgreSQL 15 (no sidecar): postgres_exporter's names, failure
//! behaviour (server down, login refused, one failing query), table
//! statistics of every database, the caps, shared rounds, and
//! `promtool check metrics` on the whole output.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use pgpilot_e2e::backup::standalone::Standalone;
use pgpilot_exporters::{
    BackupInput, BackupKind, BackupRecord, Exporter, ExporterOptions, HaInput, HaRole,
    PostgresOptions, PostgresState,
};

/// Monitoring role of the tests (member of pg_monitor unless said).
const MONITOR: &str = "monitor";

struct Server {
    // Declared first: the server stops before its directory goes.
    pg: Standalone,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let pg = Standalone::init(dir.path(), "pg")?;
        pg.start()?;
        let server = Server { pg, _dir: dir };
        server
            .sql(&format!(
                "CREATE ROLE {MONITOR} LOGIN; GRANT pg_monitor TO {MONITOR}"
            ))
            .await?;
        Ok(server)
    }

    /// Run statements as the superuser.
    async fn sql(&self, statements: &str) -> anyhow::Result<()> {
        self.pg.connect().await?.batch_execute(statements).await?;
        Ok(())
    }

    /// CREATE DATABASE cannot share a batch (an implicit transaction).
    async fn create_databases(&self, names: &[&str]) -> anyhow::Result<()> {
        let client = self.pg.connect().await?;
        for name in names {
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await?;
        }
        Ok(())
    }

    async fn sql_in(&self, db: &str, statements: &str) -> anyhow::Result<()> {
        let mut config = self.config("postgres");
        config.dbname(db);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(statements).await?;
        Ok(())
    }

    fn config(&self, user: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.pg.socket_dir())
            .port(self.pg.port())
            .user(user)
            .dbname("postgres");
        config
    }

    fn exporter(&self, user: &str, tune: impl FnOnce(&mut PostgresOptions)) -> Exporter {
        let mut options = PostgresOptions::new(self.config(user));
        tune(&mut options);
        Exporter::new(ExporterOptions {
            postgres: Some(options),
        })
    }
}

/// A scrape parsed: series (`name{labels}`) to value; panics on a
/// repeated series or a family whose samples are not contiguous.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    let mut families_done: HashSet<String> = HashSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(families_done.insert(name.clone()), "TYPE of {name} twice");
            current = name;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect(line);
        let name = key.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| *b == current))
            .unwrap_or(name);
        assert_eq!(base, current, "sample {line} outside its family");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect(line),
        };
        assert!(
            series.insert(key.to_string(), value).is_none(),
            "duplicate series {key}"
        );
    }
    series
}

fn value(series: &BTreeMap<String, f64>, key: &str) -> f64 {
    *series.get(key).unwrap_or_else(|| panic!("no series {key}"))
}

fn names(series: &BTreeMap<String, f64>) -> HashSet<String> {
    series
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect()
}

fn ha_input() -> HaInput {
    HaInput {
        scope: "main".into(),
        name: "pg1".into(),
        postgres_state: PostgresState::Running,
        role: HaRole::Primary,
        server_version: 150000,
        timeline: 1,
        wal_flush_lsn: Some(1 << 24),
        leader_key_held: true,
        leader_lease_remaining: Some(Duration::from_secs(20)),
        dcs_last_seen: Some(SystemTime::now()),
        failover_priority: 1,
        ..HaInput::default()
    }
}

fn backup_input() -> BackupInput {
    let mut input = BackupInput::new("main");
    input.pg_version = "15".into();
    let now = SystemTime::now();
    input.backups = vec![BackupRecord {
        label: "20260101-000000F".into(),
        kind: BackupKind::Full,
        block_incr: false,
        prior: None,
        start_time: now - Duration::from_secs(3600),
        stop_time: now - Duration::from_secs(3500),
        size: 30 << 20,
        delta: 30 << 20,
        repo_size: 4 << 20,
        repo_delta: 4 << 20,
        error: false,
        start_lsn: "0/2000028".into(),
        stop_lsn: "0/2000138".into(),
        start_wal: "000000010000000000000002".into(),
        stop_wal: "000000010000000000000002".into(),
        version: "0.1.0".into(),
    }];
    input.wal_min_max = Some((
        "000000010000000000000001".into(),
        "000000010000000000000003".into(),
    ));
    input
}

/// The names the charm's dashboards and alert rules query that come from
/// the PostgreSQL collector (reference §4.2–4.4), on a primary with
/// archiving off and no replicas or slots.
const COMPATIBILITY: &[&str] = &[
    "pg_up",
    "pg_static",
    "pg_exporter_last_scrape_error",
    "pg_exporter_last_scrape_duration_seconds",
    "pg_exporter_scrapes_total",
    "pg_scrape_collector_success",
    "pg_postmaster_start_time_seconds",
    "pg_txid_current",
    "pg_stat_database_numbackends",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_blks_read",
    "pg_stat_database_blks_hit",
    "pg_stat_database_tup_returned",
    "pg_stat_database_tup_fetched",
    "pg_stat_database_tup_inserted",
    "pg_stat_database_tup_updated",
    "pg_stat_database_tup_deleted",
    "pg_stat_database_conflicts",
    "pg_stat_database_temp_files",
    "pg_stat_database_temp_bytes",
    "pg_stat_database_deadlocks",
    "pg_stat_database_blk_read_time",
    "pg_stat_database_blk_write_time",
    "pg_stat_database_stats_reset",
    "pg_stat_database_active_time_seconds_total",
    "pg_stat_database_conflicts_confl_tablespace",
    "pg_stat_database_conflicts_confl_lock",
    "pg_stat_database_conflicts_confl_snapshot",
    "pg_stat_database_conflicts_confl_bufferpin",
    "pg_stat_database_conflicts_confl_deadlock",
    "pg_database_size_bytes",
    "pg_database_connection_limit",
    "pg_roles_connection_limit",
    "pg_locks_count",
    "pg_stat_activity_count",
    "pg_stat_activity_max_tx_duration",
    "pg_settings_max_connections",
    "pg_settings_shared_buffers_bytes",
    "pg_settings_effective_cache_size_bytes",
    "pg_settings_maintenance_work_mem_bytes",
    "pg_settings_work_mem_bytes",
    "pg_settings_max_wal_size_bytes",
    "pg_settings_random_page_cost",
    "pg_settings_seq_page_cost",
    "pg_settings_max_worker_processes",
    "pg_settings_max_parallel_workers",
    "pg_settings_max_locks_per_transaction",
    "pg_settings_wal_segment_size_bytes",
    "pg_settings_block_size",
    "pg_stat_bgwriter_checkpoints_timed_total",
    "pg_stat_bgwriter_checkpoints_req_total",
    "pg_stat_bgwriter_checkpoint_write_time_total",
    "pg_stat_bgwriter_checkpoint_sync_time_total",
    "pg_stat_bgwriter_buffers_checkpoint_total",
    "pg_stat_bgwriter_buffers_clean_total",
    "pg_stat_bgwriter_maxwritten_clean_total",
    "pg_stat_bgwriter_buffers_backend_total",
    "pg_stat_bgwriter_buffers_backend_fsync_total",
    "pg_stat_bgwriter_buffers_alloc_total",
    "pg_stat_bgwriter_stats_reset_total",
    "pg_stat_archiver_archived_count",
    "pg_stat_archiver_failed_count",
    "pg_replication_lag_seconds",
    "pg_replication_is_replica",
    "pg_replication_last_replay_seconds",
    "pg_wal_segments",
    "pg_wal_size_bytes",
    "pg_stat_ssl_compression",
    "pg_stat_user_tables_seq_scan",
    "pg_stat_user_tables_n_live_tup",
    "pg_stat_user_tables_n_dead_tup",
    "pg_stat_user_tables_last_autovacuum",
    "pg_stat_user_tables_last_autoanalyze",
    "pg_stat_user_tables_index_size_bytes",
    "pg_stat_user_tables_table_size_bytes",
    "pg_statio_user_tables_heap_blocks_read",
    "pg_statio_user_tables_tidx_blocks_hit",
    "pg_general_index_info_pg_relation_size",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatibility_names_every_database_no_duplicates_and_promtool() -> anyhow::Result<()> {
    let server = Server::start().await?;
    server.create_databases(&["app1", "app2", "closed"]).await?;
    server
        .sql("ALTER DATABASE closed WITH ALLOW_CONNECTIONS false; CREATE TABLE public.in_postgres (id int)")
        .await?;
    // The same table name in two databases, a quoted name that needs
    // escaping, an invalid index left by a failed concurrent build, and a
    // slot.
    server
        .sql_in(
            "app1",
            "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 100); \
                        CREATE TABLE \"we\"\"ird\\name\" (v text); ANALYZE",
        )
        .await?;
    server
        .sql_in(
            "app2",
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (1)",
        )
        .await?;
    let failed = server
        .sql_in(
            "app2",
            "CREATE UNIQUE INDEX CONCURRENTLY orders_ccnew ON orders (id)",
        )
        .await;
    assert!(
        failed.is_err(),
        "the unique index on duplicates should fail"
    );
    server
        .sql("SELECT pg_create_physical_replication_slot('standby1')")
        .await?;

    let exporter = server.exporter(MONITOR, |_| {});
    let text = exporter
        .render(Some(&ha_input()), Some(&backup_input()))
        .await;
    let series = parse(&text);
    let served = names(&series);
    let missing: Vec<&&str> = COMPATIBILITY
        .iter()
        .filter(|n| !served.contains(**n))
        .collect();
    assert!(missing.is_empty(), "not served: {missing:?}\n{text}");
    assert_eq!(value(&series, "pg_up"), 1.0);
    assert_eq!(
        value(&series, "pg_exporter_last_scrape_error"),
        0.0,
        "{text}"
    );

    // Table statistics of every connectable database, none of the others.
    for key in [
        r#"pg_stat_user_tables_n_live_tup{datname="app1",schemaname="public",relname="orders"}"#,
        r#"pg_stat_user_tables_n_live_tup{datname="app2",schemaname="public",relname="orders"}"#,
        r#"pg_stat_user_tables_seq_scan{datname="postgres",schemaname="public",relname="in_postgres"}"#,
        r#"pg_stat_user_tables_n_live_tup{datname="app1",schemaname="public",relname="we\"ird\\name"}"#,
    ] {
        assert!(series.contains_key(key), "missing {key}\n{text}");
    }
    assert_eq!(
        value(
            &series,
            r#"pg_stat_user_tables_n_live_tup{datname="app1",schemaname="public",relname="orders"}"#
        ),
        100.0
    );
    assert!(
        !text.contains("datname=\"closed\",schemaname"),
        "closed database visited"
    );
    assert!(
        !text.contains("datname=\"template1\",schemaname"),
        "template visited"
    );
    assert!(series.contains_key(
        r#"pg_general_index_info_pg_relation_size{datname="app2",schemaname="public",relname="orders",indexrelname="orders_ccnew"}"#
    ), "{text}");
    // Labels of the families that count per database and mode.
    assert!(series.contains_key(r#"pg_locks_count{datname="app1",mode="sireadlock"}"#));
    assert!(series.contains_key(
        r#"pg_stat_activity_count{datname="app2",state="idle in transaction (aborted)",usename="",application_name="",backend_type="",wait_event_type="",wait_event=""}"#
    ));
    assert!(series.contains_key(r#"pg_replication_slots_active{slot_name="standby1",database=""}"#));
    assert!(series.contains_key(
        r#"pg_replication_slots_slot_is_active{slot_name="standby1",slot_type="physical"}"#
    ));
    // The exporter's own sessions are not counted as activity.
    assert!(
        !series
            .keys()
            .any(|k| k.starts_with("pg_stat_activity_count{")
                && k.contains("application_name=\"pgpilot-metrics\"")),
        "own sessions counted"
    );
    // HA, backup and process families sit in the same output.
    assert_eq!(
        value(&series, r#"patroni_primary{scope="main",name="pg1"}"#),
        1.0
    );
    assert_eq!(
        value(&series, r#"patroni_master{scope="main",name="pg1"}"#),
        1.0
    );
    let age = value(
        &series,
        r#"pgbackrest_backup_since_last_completion_seconds{backup_type="full",block_incr="n",stanza="main"}"#,
    );
    assert!((3499.0..3600.0).contains(&age), "age {age}");

    pgpilot_e2e::monitoring::promtool(&["check", "metrics"], Some(&text))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_gives_pg_up_0_quickly_and_recovers() -> anyhow::Result<()> {
    let server = Server::start().await?;
    server.create_databases(&["app1"]).await?;
    let exporter = server.exporter(MONITOR, |_| {});
    let series = parse(&exporter.render(None, None).await);
    assert_eq!(value(&series, "pg_up"), 1.0);

    // A restart between two scrapes: the sessions it closed are replaced
    // within the next scrape, which reports no error.
    server.pg.stop();
    server.pg.start()?;
    let text = exporter.render(None, None).await;
    let series = parse(&text);
    assert_eq!(value(&series, "pg_up"), 1.0, "{text}");
    assert_eq!(
        value(&series, "pg_exporter_last_scrape_error"),
        0.0,
        "{text}"
    );

    server.pg.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let text = exporter.render(None, None).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "a scrape with PostgreSQL down took {took:?}"
        );
        let series = parse(&text);
        assert_eq!(value(&series, "pg_up"), 0.0);
        assert_eq!(value(&series, "pg_exporter_last_scrape_error"), 1.0);
        let pg: Vec<_> = names(&series)
            .into_iter()
            .filter(|n| n.starts_with("pg_") && !n.starts_with("pg_exporter_") && n != "pg_up")
            .collect();
        assert!(pg.is_empty(), "series of a down server: {pg:?}");
    }

    server.pg.start()?;
    let series = parse(&exporter.render(None, None).await);
    assert_eq!(
        value(&series, "pg_up"),
        1.0,
        "no reconnection after the restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_gives_pg_up_0() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let exporter = server.exporter(MONITOR, |_| {});
    assert_eq!(
        value(&parse(&exporter.render(None, None).await), "pg_up"),
        1.0
    );

    // The role may no longer log in and its session is gone: the next
    // scrape must say so, not serve a stale 1.
    server
        .sql(&format!(
            "ALTER ROLE {MONITOR} NOLOGIN; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{MONITOR}'"
        ))
        .await?;
    let series = parse(&exporter.render(None, None).await);
    assert_eq!(value(&series, "pg_up"), 0.0);
    assert_eq!(value(&series, "pg_exporter_last_scrape_error"), 1.0);

    // A role refused from the first scrape on.
    let never = server.exporter("nobody_here", |_| {});
    assert_eq!(value(&parse(&never.render(None, None).await), "pg_up"), 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_removes_only_its_collector() -> anyhow::Result<()> {
    let server = Server::start().await?;
    // Without pg_monitor, pg_ls_waldir() is refused: the wal collector
    // fails, the others still serve.
    server.sql("CREATE ROLE plain LOGIN").await?;
    let exporter = server.exporter("plain", |_| {});
    let text = exporter.render(None, None).await;
    let series = parse(&text);
    assert_eq!(value(&series, "pg_up"), 1.0);
    assert_eq!(
        value(&series, r#"pg_scrape_collector_success{collector="wal"}"#),
        0.0
    );
    assert_eq!(
        value(
            &series,
            r#"pg_scrape_collector_success{collector="settings"}"#
        ),
        1.0
    );
    assert_eq!(value(&series, "pg_exporter_last_scrape_error"), 1.0);
    assert!(!series.contains_key("pg_wal_segments"));
    assert!(series.contains_key("pg_settings_max_connections"));
    assert!(series
        .keys()
        .any(|k| k.starts_with("pg_stat_database_xact_commit{")));
    Ok(())
}

/// Sessions opened in total, per database (pg_stat_database.sessions).
async fn sessions_opened(server: &Server, db: &str) -> anyhow::Result<i64> {
    let client = server.pg.connect().await?;
    let row = client
        .query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_databases_are_read_on_short_sessions_at_most_once_per_interval() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    server.create_databases(&["app1"]).await?;
    server.sql_in("app1", "CREATE TABLE t (v int)").await?;
    let exporter = server.exporter(MONITOR, |o| {
        o.table_stats_interval = std::time::Duration::from_secs(3);
    });
    let has_t = |text: &str| {
        parse(text)
            .keys()
            .any(|k| k.starts_with("pg_stat_user_tables_n_live_tup{datname=\"app1\""))
    };
    assert!(has_t(&exporter.render(None, None).await));
    let opened = sessions_opened(&server, "app1").await?;
    let held: Vec<String> = exporter_sessions(&server)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(held, ["postgres"], "no session held in app1 between reads");
    // Within the interval: the last read is served, no new connection.
    for _ in 0..3 {
        assert!(has_t(&exporter.render(None, None).await));
    }
    assert_eq!(sessions_opened(&server, "app1").await?, opened);
    // After it: read again, on one new short session.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(has_t(&exporter.render(None, None).await));
    assert_eq!(sessions_opened(&server, "app1").await?, opened + 1);
    Ok(())
}

/// Backend pids of the exporter's sessions, by database.
async fn exporter_sessions(server: &Server) -> anyhow::Result<Vec<(String, i32)>> {
    let client = server.pg.connect().await?;
    let rows = client
        .query(
            "SELECT datname::text, pid FROM pg_stat_activity \
             WHERE application_name = 'pgpilot-metrics' ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_long_lived_and_concurrent_scrapes_share_one_round() -> anyhow::Result<()> {
    let server = Server::start().await?;
    server.create_databases(&["app1", "app2"]).await?;
    let exporter = server.exporter(MONITOR, |o| o.keep_database_sessions = true);
    exporter.render(None, None).await;
    let sessions = exporter_sessions(&server).await?;
    let dbs: Vec<&str> = sessions.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(
        dbs,
        ["app1", "app2", "postgres"],
        "one session per database"
    );

    for _ in 0..3 {
        exporter.render(None, None).await;
    }
    assert_eq!(
        exporter_sessions(&server).await?,
        sessions,
        "sessions were reopened"
    );

    let rounds = |text: &str| value(&parse(text), "pg_exporter_scrapes_total");
    let before = rounds(&exporter.render(None, None).await);
    let (a, b, c) = tokio::join!(
        exporter.render(None, None),
        exporter.render(None, None),
        exporter.render(None, None)
    );
    let (a, b, c) = (rounds(&a), rounds(&b), rounds(&c));
    assert_eq!(
        (a, b, c),
        (before + 1.0, before + 1.0, before + 1.0),
        "concurrent scrapes ran their own rounds"
    );
    assert_eq!(rounds(&exporter.render(None, None).await), before + 2.0);

    // A database dropped (FORCE ends our session in it) disappears without
    // an error; one created is picked up.
    server.sql("DROP DATABASE app2 WITH (FORCE)").await?;
    server.create_databases(&["app3"]).await?;
    exporter.render(None, None).await;
    let text = exporter.render(None, None).await;
    let series = parse(&text);
    assert_eq!(
        value(&series, "pg_exporter_last_scrape_error"),
        0.0,
        "{text}"
    );
    let dbs: Vec<String> = exporter_sessions(&server)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(dbs, ["app1", "app3", "postgres"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_bound_databases_and_series() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for db in ["d1", "d2", "d3", "d4"] {
        server.create_databases(&[db]).await?;
        server
            .sql_in(
                db,
                "CREATE TABLE a (v int); CREATE TABLE b (v int); CREATE TABLE c (v int)",
            )
            .await?;
    }
    let exporter = server.exporter(MONITOR, |o| {
        o.max_databases = 3;
        o.max_tables_per_database = 2;
    });
    let text = exporter.render(None, None).await;
    let series = parse(&text);
    // postgres + the two oldest others; d3 and d4 are left out.
    assert_eq!(value(&series, "pg_exporter_databases_skipped"), 2.0);
    let visited: HashSet<&str> = series
        .keys()
        .filter(|k| k.starts_with("pg_stat_user_tables_seq_scan{"))
        .map(|k| {
            k.split("datname=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(visited, HashSet::from(["d1", "d2"]));
    let tables = series
        .keys()
        .filter(|k| k.starts_with("pg_stat_user_tables_seq_scan{datname=\"d1\""))
        .count();
    assert_eq!(tables, 2, "max_tables_per_database");
    // One table left out in each of d1 and d2, 29 series each.
    assert_eq!(value(&series, "pg_exporter_series_dropped"), 58.0);
    // Other databases are read on short sessions: only the main one stays.
    assert_eq!(exporter_sessions(&server).await?.len(), 1);

    // A series budget smaller than what the server has.
    let small = server.exporter(MONITOR, |o| o.max_series = 150);
    let series = parse(&small.render(None, None).await);
    let pg_series = series
        .keys()
        .filter(|k| {
            k.starts_with("pg_")
                && !k.starts_with("pg_up")
                && !k.starts_with("pg_exporter_")
                && !k.starts_with("pg_scrape_collector_")
        })
        .count();
    assert_eq!(pg_series, 150);
    assert!(value(&series, "pg_exporter_series_dropped") > 0.0);
    Ok(())
}

/// Figures, not a pass/fail check: scrape latency and backends used with
/// 50 databases of 20 tables each. Run with
/// `cargo nextest run -p pgpilot-e2e --test metrics_collector --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scrape_figures_50_databases_of_20_tables() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let names: Vec<String> = (1..=50).map(|i| format!("db{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    server.create_databases(&refs).await?;
    let tables: String = (1..=20)
        .map(|t| format!("CREATE TABLE t{t:02} (id int PRIMARY KEY, v text); INSERT INTO t{t:02} SELECT g, 'x' FROM generate_series(1, 100) g;"))
        .collect();
    for db in &names {
        server.sql_in(db, &tables).await?;
    }
    let exporter = server.exporter(MONITOR, |_| {});
    let first = Instant::now();
    let text = exporter.render(None, None).await;
    let first = first.elapsed();
    let series = parse(&text);
    assert_eq!(value(&series, "pg_exporter_last_scrape_error"), 0.0);
    let mut took = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        exporter.render(None, None).await;
        took.push(started.elapsed());
    }
    took.sort();
    let last = parse(&exporter.render(None, None).await);
    println!(
        "round {:.3}s, of which table statistics {:.3}s",
        value(&last, "pg_exporter_last_scrape_duration_seconds"),
        value(
            &last,
            r#"pg_scrape_collector_duration_seconds{collector="stat_user_tables"}"#
        )
    );
    let backends = exporter_sessions(&server).await?.len();
    println!(
        "50 databases x 20 tables: {} series, {} bytes; first scrape {:?} (opens the sessions); \
         next 50: median {:?}, p99 {:?}, max {:?}; exporter backends {}",
        series.len(),
        text.len(),
        first,
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        backends
    );
    Ok(())
}
