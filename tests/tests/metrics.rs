//! `GET /metrics` end to end (issue 5): a real Prometheus scraping a
//! 3-member cluster through a switchover; the scrape with PostgreSQL down
//! and with the monitoring login refused; `promtool check metrics` on live
//! scrapes; every metric name the charm's dashboards and alert rules query.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgpilot_e2e::exposition::Scrape;
use pgpilot_e2e::monitoring::{dashboard_exprs, metric_names, promtool, BackedUpPair};
use pgpilot_e2e::process::Signal;
use pgpilot_e2e::prometheus::Prometheus;
use pgpilot_e2e::{wait_until, Cluster};

const READY: Duration = Duration::from_secs(120);

/// Scrape member `i`: status, body, time taken.
async fn scrape(c: &Cluster, i: usize) -> anyhow::Result<(u16, Scrape, String, Duration)> {
    let started = Instant::now();
    let reply = c.get(i, "/metrics").await?;
    let took = started.elapsed();
    let parsed = Scrape::parse(&reply.body)?;
    Ok((reply.status, parsed, reply.body, took))
}

fn target(c: &Cluster, i: usize) -> String {
    format!("127.0.0.1:{}", c.member(i).api_port)
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_one_primary_and_follows_a_switchover() -> anyhow::Result<()> {
    let c = Cluster::builder().members(3).start().await?;
    let leader = c.wait_ready(READY).await?;
    let targets: Vec<String> = (0..3).map(|i| target(&c, i)).collect();
    let prom = Prometheus::start(c.path(), &targets, Duration::from_secs(1)).await?;

    wait_until(
        "Prometheus: pg_up 1 on all three, one primary",
        READY,
        async || {
            let up = prom.query("pg_up").await?;
            anyhow::ensure!(
                up.len() == 3 && up.iter().all(|s| s.value == 1.0),
                "pg_up: {up:?}; targets {:?}",
                prom.targets().await?
            );
            let primaries = prom.query("sum(patroni_primary)").await?;
            anyhow::ensure!(
                primaries.first().map(|s| s.value) == Some(1.0),
                "sum(patroni_primary) = {primaries:?}"
            );
            let who = prom.query("patroni_primary == 1").await?;
            anyhow::ensure!(
                who.len() == 1 && who[0].label("name") == Some(c.member(leader).name.as_str()),
                "the primary by Prometheus is {who:?}, the leader is {}",
                c.member(leader).name
            );
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(anyhow::anyhow!("{e:#}\n{}", prom.log_tail(20))))?;

    // Switch over to a replica; note when the candidate starts answering /primary.
    let candidate = (0..3).find(|&i| i != leader).expect("a replica");
    let (old, new) = (
        c.member(leader).name.clone(),
        c.member(candidate).name.clone(),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let reply = client
        .post(c.member(leader).api_url("/switchover"))
        .json(&serde_json::json!({"leader": old, "candidate": new}))
        .send()
        .await?;
    let status = reply.status().as_u16();
    anyhow::ensure!(
        status == 200,
        "switchover: {status} {}",
        reply.text().await?
    );
    let mut became_primary = 0.0;
    wait_until("the candidate to answer /primary", READY, async || {
        anyhow::ensure!(c.status(candidate, "/primary").await == Some(200));
        became_primary = now_epoch();
        Ok(())
    })
    .await?;

    // Every scrape that started after the candidate became primary reports
    // it as the primary and the old leader as not: read the raw samples.
    let mut checked = 0;
    wait_until("Prometheus to have 3 scrapes of both after the switchover", READY, async || {
        let mut seen = Vec::new();
        for (name, want) in [(&new, 1.0), (&old, 0.0)] {
            let samples = prom
                .query_raw(&format!("patroni_primary{{name=\"{name}\"}}[60s]"))
                .await?;
            let after: Vec<(f64, f64)> = samples
                .into_iter()
                .filter(|(t, _)| *t > became_primary + 0.5)
                .collect();
            anyhow::ensure!(after.len() >= 3, "{name}: {} samples after the switchover", after.len());
            let wrong: Vec<_> = after.iter().filter(|(_, v)| *v != want).collect();
            anyhow::ensure!(
                wrong.is_empty(),
                "{name}: patroni_primary should be {want} in every scrape after the switchover, got {wrong:?}"
            );
            seen.push(after.len());
        }
        checked = seen.iter().sum();
        Ok(())
    })
    .await
    .map_err(|e| c.with_logs(e))?;
    let first = prom
        .query_raw(&format!("patroni_primary{{name=\"{new}\"}}[60s]"))
        .await?
        .into_iter()
        .find(|(_, v)| *v == 1.0)
        .map(|(t, _)| t - became_primary);
    println!(
        "switchover {old} -> {new}: {checked} scrapes checked; first scrape reporting the new primary \
         {:.2} s after it answered /primary (scrape interval 1 s)",
        first.unwrap_or(f64::NAN)
    );
    let primaries = prom.query("sum(patroni_primary)").await?;
    assert_eq!(primaries.first().map(|s| s.value), Some(1.0));

    // Every query of the shipped dashboard is valid PromQL for this server.
    for (panel, expr) in dashboard_exprs()? {
        prom.query(&expr)
            .await
            .map_err(|e| anyhow::anyhow!("dashboard panel {panel:?}: {e:#}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_answers_with_postgres_down_and_with_the_login_refused() -> anyhow::Result<()> {
    let c = Cluster::builder()
        .members(1)
        .extra_toml("\n[metrics]\nusername = \"monitor\"\npassword = \"pw-monitor\"\n")
        .start()
        .await?;
    let leader = c.wait_ready(READY).await?;

    // The monitoring role does not exist yet: its login is refused.
    let (status, s, _, _) = scrape(&c, leader).await?;
    assert_eq!(status, 200);
    assert_eq!(s.value("pg_up"), Some(0.0), "no such role: pg_up must be 0");
    assert_eq!(s.value("patroni_postgres_running"), Some(1.0));

    c.execute(
        leader,
        "CREATE ROLE monitor LOGIN PASSWORD 'pw-monitor' IN ROLE pg_monitor",
    )
    .await?;
    wait_until(
        "pg_up 1 once the role exists",
        Duration::from_secs(30),
        async || {
            let (_, s, _, _) = scrape(&c, leader).await?;
            anyhow::ensure!(
                s.value("pg_up") == Some(1.0),
                "pg_up {:?}",
                s.value("pg_up")
            );
            anyhow::ensure!(!s.all("pg_stat_database_xact_commit").is_empty());
            Ok(())
        },
    )
    .await?;

    // Refuse the login and end the monitoring session: the next scrape
    // must connect again, fail, and say so.
    c.execute(leader, "ALTER ROLE monitor NOLOGIN").await?;
    c.execute(
        leader,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'monitor'",
    )
    .await?;
    wait_until(
        "pg_up 0 with the login refused",
        Duration::from_secs(30),
        async || {
            let (status, s, _, _) = scrape(&c, leader).await?;
            anyhow::ensure!(status == 200);
            anyhow::ensure!(
                s.value("pg_up") == Some(0.0),
                "pg_up {:?}",
                s.value("pg_up")
            );
            Ok(())
        },
    )
    .await?;
    c.execute(leader, "ALTER ROLE monitor LOGIN").await?;

    // PostgreSQL stopped (maintenance mode, so the sidecar leaves it down).
    let client = reqwest::Client::builder().no_proxy().build()?;
    let reply = client
        .patch(c.member(leader).api_url("/config"))
        .json(&serde_json::json!({"pause": true}))
        .send()
        .await?;
    anyhow::ensure!(
        reply.status().as_u16() == 200,
        "pause: {}",
        reply.text().await?
    );
    wait_until("pause to be seen", Duration::from_secs(30), async || {
        let (_, s, _, _) = scrape(&c, leader).await?;
        anyhow::ensure!(s.value("patroni_is_paused") == Some(1.0));
        Ok(())
    })
    .await?;
    let pid = c.member(leader).postmaster_pid().expect("postmaster runs");
    c.member(leader).signal_postmaster(Signal::SIGINT);
    anyhow::ensure!(
        pgpilot_e2e::process::wait_gone(pid, Duration::from_secs(60)).await,
        "PostgreSQL did not stop"
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (status, s, _, took) = scrape(&c, leader).await?;
        slowest = slowest.max(took);
        assert_eq!(status, 200, "a scrape answers 200 with PostgreSQL down");
        assert_eq!(s.value("pg_up"), Some(0.0));
        assert_eq!(s.value("patroni_postgres_running"), Some(0.0));
        assert!(
            s.all("pg_stat_database_xact_commit").is_empty(),
            "no stale PostgreSQL series while it is down"
        );
    }
    println!("scrape with PostgreSQL down: slowest of 5 took {slowest:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "a scrape with PostgreSQL down must be quick, took {slowest:?}"
    );
    Ok(())
}

/// Names the charm's dashboards and alert rules query
/// (shared/reference/exporters.md §4.2–4.4), minus the ones no SQL can give:
/// `postgresql_errors_total` (log-derived) and `pg_bloat_*` (an estimation
/// query too heavy for every scrape). `pg_settings_checkpoint_segments`
/// (a GUC removed in PostgreSQL 9.5) is not served by any exporter.
const CHARM_NAMES: &[&str] = &[
    // PostgreSQL dashboard and rules.
    "pg_static",
    "pg_up",
    "pg_exporter_last_scrape_duration_seconds",
    "pg_exporter_last_scrape_error",
    "pg_postmaster_start_time_seconds",
    "pg_txid_current",
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
    "pg_settings_autovacuum",
    "pg_stat_activity_count",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_tup_fetched",
    "pg_stat_database_tup_returned",
    "pg_stat_database_tup_inserted",
    "pg_stat_database_tup_updated",
    "pg_stat_database_tup_deleted",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_conflicts",
    "pg_stat_database_deadlocks",
    "pg_stat_database_temp_bytes",
    "pg_locks_count",
    "pg_stat_bgwriter_buffers_backend_total",
    "pg_stat_bgwriter_buffers_alloc_total",
    "pg_stat_bgwriter_buffers_backend_fsync_total",
    "pg_stat_bgwriter_buffers_checkpoint_total",
    "pg_stat_bgwriter_buffers_clean_total",
    "pg_stat_bgwriter_checkpoint_write_time_total",
    "pg_stat_bgwriter_checkpoint_sync_time_total",
    "pg_stat_user_tables_last_autovacuum",
    "pg_stat_user_tables_last_autoanalyze",
    "pg_stat_user_tables_n_dead_tup",
    "pg_stat_user_tables_n_live_tup",
    "pg_replication_slots_active",
    "pg_replication_lag_seconds",
    "pg_stat_archiver_archived_count",
    "pg_stat_archiver_failed_count",
    "pg_stat_ssl_compression",
    "pg_general_index_info_pg_relation_size",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    // Patroni dashboard and rules.
    "patroni_version",
    "patroni_dcs_last_seen",
    "patroni_primary",
    "patroni_master",
    "patroni_replica",
    "patroni_standby_leader",
    "patroni_is_paused",
    "patroni_postgres_server_version",
    "patroni_postmaster_start_time",
    "patroni_postgres_running",
    "patroni_postgres_timeline",
    "patroni_pending_restart",
    "patroni_xlog_paused",
    "patroni_sync_standby",
    "patroni_xlog_location",
    "patroni_xlog_received_location",
    "patroni_xlog_replayed_location",
    // pgBackRest dashboard and rules.
    "pgbackrest_backup_info",
    "pgbackrest_backup_duration_seconds",
    "pgbackrest_backup_size_bytes",
    "pgbackrest_backup_delta_bytes",
    "pgbackrest_backup_repo_size_bytes",
    "pgbackrest_backup_repo_delta_bytes",
    "pgbackrest_backup_repo_size_map_bytes",
    "pgbackrest_backup_repo_delta_map_bytes",
    "pgbackrest_backup_error_status",
    "pgbackrest_backup_annotations",
    "pgbackrest_backup_since_last_completion_seconds",
    "pgbackrest_backup_last_duration_seconds",
    "pgbackrest_backup_last_size_bytes",
    "pgbackrest_backup_last_delta_bytes",
    "pgbackrest_backup_last_repo_size_bytes",
    "pgbackrest_backup_last_repo_delta_bytes",
    "pgbackrest_backup_last_repo_size_map_bytes",
    "pgbackrest_backup_last_repo_delta_map_bytes",
    "pgbackrest_backup_last_error_status",
    "pgbackrest_backup_last_annotations",
    "pgbackrest_stanza_status",
    "pgbackrest_stanza_lock_status",
    "pgbackrest_stanza_backup_compete_bytes",
    "pgbackrest_stanza_backup_total_bytes",
    "pgbackrest_repo_status",
    "pgbackrest_wal_archive_status",
    "pgbackrest_exporter_status",
    "pgbackrest_exporter_build_info",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_pass_promtool_and_serve_every_name_the_charm_uses() -> anyhow::Result<()> {
    let pair = BackedUpPair::start(READY).await?;
    let (c, leader, replica) = (&pair.cluster, pair.leader, pair.replica);

    // An application database with tables (per-table statistics must cover
    // it, not only `postgres`), vacuumed and analysed, and an invalid index
    // (a failed CREATE INDEX CONCURRENTLY leaves one).
    c.execute(leader, "CREATE DATABASE app").await?;
    let app = pgpilot_e2e::sql::connect_db(c.member(leader).pg_port, "app").await?;
    app.batch_execute(
        "CREATE TABLE orders (id int, note text);
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 1000) g;
         INSERT INTO orders VALUES (1, 'duplicate');",
    )
    .await?;
    app.batch_execute("VACUUM ANALYZE orders").await?;
    let failed = app
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY orders_id ON orders (id)")
        .await;
    assert!(
        failed.is_err(),
        "the unique index over a duplicate must fail"
    );

    pair.backup()?;

    let mut names = BTreeSet::new();
    for i in [leader, replica] {
        let what = if i == leader { "leader" } else { "replica" };
        let (s, body) = wait_until(
            &format!("{what}: complete metrics incl. the backup"),
            Duration::from_secs(60),
            async || {
                let (status, s, body, _) = scrape(c, i).await?;
                anyhow::ensure!(status == 200);
                anyhow::ensure!(
                    s.value("pg_up") == Some(1.0),
                    "pg_up {:?}",
                    s.value("pg_up")
                );
                anyhow::ensure!(
                    !s.all("pgbackrest_backup_info").is_empty(),
                    "no backup metrics yet"
                );
                anyhow::ensure!(
                    s.all("pg_stat_user_tables_n_live_tup").iter().any(|x| x
                        .labels
                        .get("datname")
                        .map(String::as_str)
                        == Some("app")
                        && x.labels.get("relname").map(String::as_str) == Some("orders")),
                    "no table statistics of app.orders"
                );
                Ok((s, body))
            },
        )
        .await
        .map_err(|e| c.with_logs(e))?;
        promtool(&["check", "metrics"], Some(&body))
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
        let dups = s.duplicates();
        assert!(dups.is_empty(), "{what}: duplicate series {dups:?}");
        names.extend(s.names());
    }
    let missing: Vec<&&str> = CHARM_NAMES
        .iter()
        .filter(|n| !names.contains(**n))
        .collect();
    assert!(
        missing.is_empty(),
        "metric names the charm's dashboards or rules use are not served: {missing:?}"
    );
    // Our own dashboard, too.
    for (panel, expr) in dashboard_exprs()? {
        let unserved: Vec<String> = metric_names(&expr)
            .into_iter()
            .filter(|n| !names.contains(n))
            .collect();
        assert!(
            unserved.is_empty(),
            "dashboard panel {panel:?} queries metrics /metrics does not serve: {unserved:?}"
        );
    }
    Ok(())
}
