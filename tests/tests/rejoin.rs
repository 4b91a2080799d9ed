//! Rejoin of a former primary that diverged (issue 3, "Rejoin"): it is
//! rewound with pg_rewind onto the new leader's timeline, never accepts a
//! write on its own, and streams from the new leader.

use std::time::{Duration, Instant};

use pgpilot_e2e::faults::FaultCluster;
use pgpilot_e2e::wait_until;

const READY: Duration = Duration::from_secs(120);
const FAILOVER: Duration = Duration::from_secs(90);
const REPLICATE: Duration = Duration::from_secs(60);
const REJOIN: Duration = Duration::from_secs(150);

/// Table `table` with rows 1..=`common` that every member has; then both
/// replicas' WAL receivers stopped (SIGSTOP; their pids returned) and
/// `old`'s WAL senders ended, so nothing `old` writes next can reach them
/// (not even through socket buffers: a stopped receiver cannot reconnect);
/// then `more` rows tagged `origin` that only `old` has.
async fn rows_only_on(
    fc: &FaultCluster,
    old: usize,
    table: &str,
    common: u32,
    origin: &str,
    more: u32,
) -> anyhow::Result<Vec<i32>> {
    fc.execute(
        old,
        &format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, origin text NOT NULL); \
             INSERT INTO {table} SELECT g, 'common' FROM generate_series(1, {common}) g"
        ),
    )
    .await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let count = format!("SELECT count(*)::text FROM {table}");
    for &r in &replicas {
        fc.wait_value(r, &count, &common.to_string(), REPLICATE)
            .await?;
    }
    let mut receivers = Vec::new();
    for &r in &replicas {
        receivers.push(fc.pause_walreceiver(r).await?);
    }
    fc.execute(
        old,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication",
    )
    .await?;
    fc.wait_value(
        old,
        "SELECT count(*)::text FROM pg_stat_replication",
        "0",
        REPLICATE,
    )
    .await?;
    fc.execute(
        old,
        &format!(
            "INSERT INTO {table} SELECT g, '{origin}' FROM generate_series({}, {}) g",
            common + 1,
            common + more
        ),
    )
    .await?;
    Ok(receivers)
}

/// When the old primary is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// Once the new leader's new timeline is published in the store.
    AfterNewTimeline,
    /// As soon as another member holds the leader key (a service manager
    /// restarting the failed node right away), possibly before it promoted.
    AtOnce,
}

/// Leader m1 and two replicas. Rows 1..100 reach everyone. Then both
/// replicas' WAL receivers are stopped (SIGSTOP) and m1's WAL senders are
/// terminated, so nothing m1 writes from then on can reach the replicas
/// (not even through socket buffers: a stopped receiver cannot reconnect);
/// m1 commits rows 101..200, which only m1 has, and dies (sidecar and
/// postmaster SIGKILLed). The receivers resume, a replica takes over
/// (without rows 101..200) and commits rows 1001..1010.
///
/// Restarted (`restart`), m1 must rewind (its log says "running pg_rewind"
/// and "pg_rewind done"), never accept a write, and stream from the new
/// leader: it ends with exactly the new leader's rows (101..200 gone,
/// 1001..1010 and a later row present).
async fn diverged_primary_rejoins(restart: Restart) -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let old = fc.wait_ready(READY).await?;
    let checker = fc.start_checker(old).await?;
    let receivers = rows_only_on(&fc, old, "e2e_rw", 100, "diverged", 100).await?;
    let killed = fc.kill_node(old).await?;
    for pid in receivers {
        fc.resume_pid(pid);
    }
    let mut restarted = None;
    if restart == Restart::AtOnce {
        let old_name = fc.name(old).to_string();
        fc.wait_leader_key_moves(&old_name, FAILOVER).await?;
        fc.start_member(old)?;
        restarted = Some(Instant::now());
    }
    let (new_leader, seen) = fc.wait_other_leader(&[old], FAILOVER).await?;
    wait_until(
        "the new leader to accept writes",
        Duration::from_secs(30),
        async || {
            fc.execute(
                new_leader,
                "INSERT INTO e2e_rw SELECT g, 'new' FROM generate_series(1001, 1010) g \
                 ON CONFLICT DO NOTHING",
            )
            .await
        },
    )
    .await?;
    let on_new = fc
        .query_one(new_leader, "SELECT count(*)::text FROM e2e_rw")
        .await?;
    if restart == Restart::AfterNewTimeline {
        fc.wait_published_timeline(new_leader, 2, Duration::from_secs(60))
            .await?;
        fc.start_member(old)?;
        restarted = Some(Instant::now());
    }
    let restarted = restarted.expect("restarted above");

    let rejoined = fc.wait_streaming_to(new_leader, old, REJOIN).await;
    let rejoin_secs = restarted.elapsed().as_secs_f64();
    let log = fc.member(old).log();
    let mut problems = Vec::new();
    if on_new != "110" {
        problems.push(format!(
            "the new leader has {on_new} rows, expected 110 (the diverged rows must not be there)"
        ));
    }
    if !(log.contains("running pg_rewind") && log.contains("pg_rewind done")) {
        problems.push("the old primary's log does not show a completed pg_rewind".into());
    }
    match &rejoined {
        Ok(()) => {
            fc.execute(new_leader, "INSERT INTO e2e_rw VALUES (2000, 'later')")
                .await?;
            if let Err(e) = fc
                .wait_value(
                    old,
                    "SELECT count(*)::text || ',' || count(*) FILTER (WHERE origin = 'diverged')::text \
                     || ',' || count(*) FILTER (WHERE id = 2000)::text FROM e2e_rw",
                    "111,0,1",
                    REPLICATE,
                )
                .await
            {
                problems.push(format!(
                    "the rewound member does not hold the new leader's rows: {e:#}"
                ));
            }
        }
        Err(e) => problems.push(format!("the old primary did not rejoin: {e:#}")),
    }
    let report = checker.stop().await;
    // (A write sent just before the postmaster's SIGKILL landed may still
    // commit; what matters is that the restarted member never accepts one.)
    if let Some(p) = report.first_success_after(old, restarted) {
        problems.push(format!(
            "the old primary accepted a write {:.2}s after its restart",
            (p.sent - restarted).as_secs_f64()
        ));
    }
    let violations = report.describe_violations();
    if !violations.is_empty() {
        problems.push(violations);
    }
    eprintln!(
        "{restart:?}: {} answers /primary {:.2}s after the kill; {} restarted {:.2}s after the kill, {}",
        fc.name(new_leader),
        (seen - killed).as_secs_f64(),
        fc.name(old),
        (restarted - killed).as_secs_f64(),
        if rejoined.is_ok() {
            format!("streaming from the new leader {rejoin_secs:.2}s later")
        } else {
            format!("not streaming from the new leader {rejoin_secs:.0}s later")
        }
    );
    anyhow::ensure!(
        problems.is_empty(),
        "{}\n\nchecker:\n{}\n{}",
        problems.join("\n"),
        report.timeline(),
        fc.logs(60)
    );
    Ok(())
}

/// The old primary is restarted once the new timeline is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_former_primary_is_rewound_and_streams() -> anyhow::Result<()> {
    diverged_primary_rejoins(Restart::AfterNewTimeline).await
}

/// The old primary is restarted the moment another member takes the
/// leader key: the decision to rewind must not depend on the new leader
/// having promoted and published its new timeline yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_former_primary_restarted_at_once_is_rewound() -> anyhow::Result<()> {
    diverged_primary_rejoins(Restart::AtOnce).await
}

/// "after a pg_rewind" or "without pg_rewind", for the figures printed.
fn with_or_without_rewind(log: &str) -> &'static str {
    if rewound(log) {
        "after a pg_rewind"
    } else {
        "without pg_rewind"
    }
}

/// Is there a pg_rewind in `log` (pgpilot's "running pg_rewind", or the
/// crash recovery it runs first)?
fn rewound(log: &str) -> bool {
    log.contains("running pg_rewind") || log.contains("crash recovery in single-user mode")
}

/// Issue 14, item 5: a switchover leaves nothing to rewind. The old
/// primary stops cleanly, the successor has its shutdown checkpoint before
/// promoting, so the old primary follows the new timeline without pg_rewind
/// and receives the new leader's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_over_primary_rejoins_without_rewind() -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let old = fc.wait_ready(READY).await?;
    let target = (0..3).find(|&i| i != old).expect("3 members");
    fc.execute(
        old,
        "CREATE TABLE e2e_sw (id int PRIMARY KEY); INSERT INTO e2e_sw VALUES (1)",
    )
    .await?;
    fc.wait_value(target, "SELECT count(*)::text FROM e2e_sw", "1", REPLICATE)
        .await?;
    let asked = Instant::now();
    let (status, body) = pgpilot_e2e::ops::call(
        &fc,
        old,
        pgpilot_e2e::http::Method::POST,
        "/switchover",
        Some(serde_json::json!({"leader": fc.name(old), "candidate": fc.name(target)})),
    )
    .await?;
    anyhow::ensure!(status == 200, "switchover refused: {status} {body}");
    fc.wait_streaming_to(target, old, REJOIN).await?;
    let rejoined = asked.elapsed();
    fc.execute(target, "INSERT INTO e2e_sw VALUES (2)").await?;
    let replicated = fc
        .wait_value(old, "SELECT count(*)::text FROM e2e_sw", "2", REPLICATE)
        .await;
    let log = fc.member(old).log();
    eprintln!(
        "switchover {} -> {}: the old primary streams from the new one {:.2}s after the request, {}",
        fc.name(old),
        fc.name(target),
        rejoined.as_secs_f64(),
        with_or_without_rewind(&log)
    );
    anyhow::ensure!(
        !rewound(&log),
        "the old primary ran pg_rewind\n{}",
        fc.logs(60)
    );
    replicated.map_err(|e| fc.with_logs(e))
}

/// Issue 14, items 1 and 5: a leader cut from etcd is fenced — a fast
/// shutdown that hands its replicas everything up to the shutdown
/// checkpoint — and comes back read-only. The new leader's timeline did not
/// fork from anything it has: once the link heals it follows the new leader
/// as it runs, without pg_rewind (nor the single-user crash recovery
/// pg_rewind needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_primary_with_nothing_unsent_rejoins_without_rewind() -> anyhow::Result<()> {
    let fc = FaultCluster::builder()
        .members(3)
        .etcd_proxies()
        .start()
        .await?;
    let old = fc.wait_ready(READY).await?;
    fc.execute(
        old,
        "CREATE TABLE e2e_fence (id int PRIMARY KEY); INSERT INTO e2e_fence VALUES (1)",
    )
    .await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &r in &replicas {
        fc.wait_value(r, "SELECT count(*)::text FROM e2e_fence", "1", REPLICATE)
            .await?;
    }
    fc.proxy(old).cut();
    let (new_leader, _) = fc.wait_other_leader(&[old], FAILOVER).await?;
    fc.wait_published_timeline(new_leader, 2, Duration::from_secs(60))
        .await?;
    let healed = Instant::now();
    fc.proxy(old).heal();
    let rejoined = fc.wait_streaming_to(new_leader, old, REJOIN).await;
    let after_heal = healed.elapsed();
    let replicated = match &rejoined {
        Ok(()) => {
            fc.execute(new_leader, "INSERT INTO e2e_fence VALUES (2)")
                .await?;
            fc.wait_value(old, "SELECT count(*)::text FROM e2e_fence", "2", REPLICATE)
                .await
        }
        Err(_) => Ok(()),
    };
    let log = fc.member(old).log();
    eprintln!(
        "{} fenced, {} leads; healed: streaming from it {:.2}s later, {}",
        fc.name(old),
        fc.name(new_leader),
        after_heal.as_secs_f64(),
        with_or_without_rewind(&log)
    );
    let mut problems = Vec::new();
    if let Err(e) = &rejoined {
        problems.push(format!("the fenced primary did not rejoin: {e:#}"));
    }
    if let Err(e) = &replicated {
        problems.push(format!("a new row did not reach the fenced primary: {e:#}"));
    }
    if rewound(&log) {
        problems.push("the fenced primary ran pg_rewind though it had not diverged".into());
    }
    if !(log.contains("no longer accepts writes") && log.contains("clean=true")) {
        problems.push("the fenced primary's log does not show a clean demotion".into());
    }
    fc.verdict(&problems)
}

/// Issue 14, item 1, the leader holding rows its replicas never received:
/// their WAL receivers are stopped and its WAL senders ended, it commits
/// rows 11..20 that only it has, and it is cut from etcd. Fenced, it comes
/// back read-only with them. Then the receivers resume.
///
/// - `isolated: false`: they reach the fenced member and stream its last
///   commits from it, read-only as it is, before any takeover: the new
///   leader holds all 20 rows (no acknowledged commit lost), and the old
///   member rejoins without pg_rewind.
/// - `isolated: true`: its pg_hba.conf rejects replication too (a machine
///   cut off entirely), so a replica takes over without those rows. Once
///   the link heals the old member, running read-only, finds its WAL past
///   the new leader's switch point: it stops, is rewound (pgpilot writes
///   pg_hba.conf again as it starts it) and streams, ending with exactly
///   the new leader's rows.
async fn fenced_with_rows_only_it_has(isolated: bool) -> anyhow::Result<()> {
    let fc = FaultCluster::builder()
        .members(3)
        .etcd_proxies()
        .start()
        .await?;
    let old = fc.wait_ready(READY).await?;
    let receivers = rows_only_on(&fc, old, "e2e_fd", 10, "only-old", 10).await?;
    if isolated {
        let hba = fc.member(old).data_dir.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("host replication all 0.0.0.0/0 reject\n{rules}"),
        )?;
        fc.execute(old, "SELECT pg_reload_conf()").await?;
    }
    fc.proxy(old).cut();
    wait_until(
        "the cut-off leader to answer read-only with its own rows",
        FAILOVER,
        async || {
            let got = fc
                .query_one(
                    old,
                    "SELECT pg_is_in_recovery()::text || ',' || count(*)::text FROM e2e_fd",
                )
                .await?;
            anyhow::ensure!(got == "true,20", "got {got:?}");
            Ok(())
        },
    )
    .await
    .map_err(|e| fc.with_logs(e))?;
    for pid in receivers {
        fc.resume_pid(pid);
    }
    let (new_leader, _) = fc.wait_other_leader(&[old], FAILOVER).await?;
    fc.wait_published_timeline(new_leader, 2, Duration::from_secs(60))
        .await?;
    let on_new = fc
        .query_one(
            new_leader,
            "SELECT count(*) FILTER (WHERE origin = 'only-old')::text FROM e2e_fd",
        )
        .await?;
    fc.execute(new_leader, "INSERT INTO e2e_fd VALUES (1001, 'new')")
        .await?;
    let healed = Instant::now();
    fc.proxy(old).heal();
    let rejoined = fc.wait_streaming_to(new_leader, old, REJOIN).await;
    let after_heal = healed.elapsed();
    let expected = if isolated { "11,0" } else { "21,10" };
    let rows = match &rejoined {
        Ok(()) => {
            fc.wait_value(
                old,
                "SELECT count(*)::text || ',' || count(*) FILTER (WHERE origin = 'only-old')::text \
                 FROM e2e_fd",
                expected,
                REPLICATE,
            )
            .await
        }
        Err(_) => Ok(()),
    };
    let log = fc.member(old).log();
    eprintln!(
        "{} fenced with rows only it had ({}), {} leads with {on_new} of them; healed: \
         streaming from it {:.2}s later, {}",
        fc.name(old),
        if isolated { "isolated" } else { "reachable" },
        fc.name(new_leader),
        after_heal.as_secs_f64(),
        with_or_without_rewind(&log)
    );
    let mut problems = Vec::new();
    let (wanted_on_new, must_rewind) = if isolated { ("0", true) } else { ("10", false) };
    if on_new != wanted_on_new {
        problems.push(format!(
            "the new leader has {on_new} of the rows only the old one had, expected {wanted_on_new}"
        ));
    }
    if let Err(e) = &rejoined {
        problems.push(format!("the fenced primary did not rejoin: {e:#}"));
    }
    if let Err(e) = &rows {
        problems.push(format!(
            "the old member does not hold exactly the new leader's rows: {e:#}"
        ));
    }
    let completed_rewind = log.contains("running pg_rewind") && log.contains("pg_rewind done");
    if must_rewind && !completed_rewind {
        problems.push("the diverged fenced primary was not rewound".into());
    }
    if !must_rewind && rewound(&log) {
        problems.push("the fenced primary was rewound though its replicas got everything".into());
    }
    fc.verdict(&problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_primary_hands_its_last_commits_to_its_replicas() -> anyhow::Result<()> {
    fenced_with_rows_only_it_has(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_primary_that_diverged_is_rewound_from_read_only() -> anyhow::Result<()> {
    fenced_with_rows_only_it_has(true).await
}
