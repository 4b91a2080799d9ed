//! Who may take over after the leader dies (invariant 3, "the best
//! candidate wins"): the lag gate (`maximum_lag_on_failover`), the most
//! advanced replica, and the `nofailover` tag.
//!
//! How a replica is made to lag: pausing *replay* (`pg_wal_replay_pause()`)
//! is not enough, because the replica keeps *receiving* WAL and pgpilot
//! compares the furthest position a replica has (received or replayed,
//! like Patroni) with the leader's last known position (`status.optime`).
//! So the tests SIGSTOP the replica's WAL receiver process instead: the
//! replica stays up and answers SQL and its REST API (its sidecar reports
//! a frozen received position), but receives nothing more while the leader
//! writes. The stopped process is resumed (SIGCONT) before teardown.

use std::time::{Duration, Instant};

use pgpilot_e2e::checker::{Report, WriteChecker};
use pgpilot_e2e::faults::FaultCluster;
use pgpilot_e2e::wait_until;

const READY: Duration = Duration::from_secs(120);
const FAILOVER: Duration = Duration::from_secs(90);
/// maximum_lag_on_failover used by these tests (bytes; pgpilot's default).
const MAX_LAG: u64 = 1_048_576;

/// Member `i`'s furthest WAL position (received or replayed), in bytes.
async fn replica_position(fc: &FaultCluster, i: usize) -> anyhow::Result<u64> {
    let text = fc
        .query_one(
            i,
            "SELECT greatest(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), 0), \
             coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0))::bigint::text",
        )
        .await?;
    Ok(text.parse()?)
}

/// The leader's flushed WAL position, in bytes.
async fn primary_position(fc: &FaultCluster, i: usize) -> anyhow::Result<u64> {
    let text = fc
        .query_one(
            i,
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint::text",
        )
        .await?;
    Ok(text.parse()?)
}

/// `optime` of the `status` key (the leader's last published position).
async fn status_optime(fc: &FaultCluster) -> anyhow::Result<u64> {
    let text = fc
        .etcd_value("status")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no status key"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json.get("optime")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| anyhow::anyhow!("no optime in {text}"))
}

/// A 3-member cluster with the lag gate at `MAX_LAG` (`nofailover`, if
/// any, tagged so), led by m1 (started first), with the split-brain
/// checker running.
async fn start_led_by_m1(
    nofailover: Option<usize>,
) -> anyhow::Result<(FaultCluster, WriteChecker)> {
    let mut builder = FaultCluster::builder()
        .members(3)
        .bootstrap(&format!("maximum_lag_on_failover = {MAX_LAG}"));
    if let Some(i) = nofailover {
        builder = builder.member_toml(i, "\n[tags]\nnofailover = true\n");
    }
    let fc = builder.start().await?;
    let leader = fc.wait_ready(READY).await?;
    anyhow::ensure!(leader == 0, "m1 should lead (started first)");
    let checker = fc.start_checker(leader).await?;
    Ok((fc, checker))
}

/// Stops `lagging`'s WAL receiver, then runs `sql` on `leader`: the
/// receiver's pid (to resume) and the leader's flushed position after it.
async fn write_while_stopped(
    fc: &FaultCluster,
    leader: usize,
    lagging: usize,
    sql: &str,
) -> anyhow::Result<(i32, u64)> {
    let walreceiver = fc.pause_walreceiver(lagging).await?;
    fc.execute(leader, sql).await?;
    Ok((walreceiver, primary_position(fc, leader).await?))
}

/// Waits (30 s at most) until replica `i` has WAL up to `flushed`.
async fn wait_replica_has(
    fc: &FaultCluster,
    what: &str,
    i: usize,
    flushed: u64,
) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(30), async || {
        let pos = replica_position(fc, i).await?;
        anyhow::ensure!(pos >= flushed, "{pos} < {flushed}");
        Ok(())
    })
    .await
}

/// Fails listing every problem plus the checker's violations, timeline and
/// the members' logs; passes when there are none.
fn finish(mut problems: Vec<String>, report: &Report, fc: &FaultCluster) -> anyhow::Result<()> {
    let violations = report.describe_violations();
    if !violations.is_empty() {
        problems.push(violations);
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{}\n\nchecker:\n{}\n{}",
        problems.join("\n"),
        report.timeline(),
        fc.logs(60)
    );
    Ok(())
}

/// Watch `/primary` on every running member for `period`: the members that
/// answered 200 at some point (sampled every 250 ms).
async fn primaries_during(fc: &FaultCluster, period: Duration) -> Vec<usize> {
    let end = Instant::now() + period;
    let mut seen = Vec::new();
    while Instant::now() < end {
        for i in fc.running() {
            if !seen.contains(&i) && fc.status(i, "/primary").await == Some(200) {
                seen.push(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

/// Leader m1, replica m2 whose WAL receiver is stopped while m1 writes
/// several MB (far beyond `maximum_lag_on_failover`), replica m3 fully up to
/// date but tagged `nofailover`. m1 dies (sidecar + postmaster SIGKILLed):
/// for three TTLs nobody may become leader or accept a write (m2 is too far
/// behind, m3 may not). Restarted, m1 (the most advanced member) takes the
/// lead again, and the others follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_and_nofailover_replicas_never_promote() -> anyhow::Result<()> {
    let (leader, lagging, nofailover) = (0, 1, 2);
    let (fc, checker) = start_led_by_m1(Some(nofailover)).await?;

    let (walreceiver, flushed) = write_while_stopped(
        &fc,
        leader,
        lagging,
        "CREATE TABLE e2e_bulk AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 12000) g",
    )
    .await?;
    let behind = wait_until(
        "the leader's published position to be far ahead of the stopped replica",
        Duration::from_secs(30),
        async || {
            let optime = status_optime(&fc).await?;
            let mine = replica_position(&fc, lagging).await?;
            anyhow::ensure!(
                optime >= flushed && optime.saturating_sub(mine) > 2 * MAX_LAG,
                "optime {optime}, {} at {mine}",
                fc.name(lagging)
            );
            Ok(optime - mine)
        },
    )
    .await
    .map_err(|e| fc.with_logs(e))?;
    wait_replica_has(
        &fc,
        "the nofailover replica to have everything",
        nofailover,
        flushed,
    )
    .await?;

    let killed = fc.kill_node(leader).await?;
    let watch = fc.ttl() * 3;
    let primaries = primaries_during(&fc, watch).await;
    // The reasons decide.rs gives (and the HA loop logs) for not racing.
    let lag_logged = fc
        .member(lagging)
        .log()
        .contains("bytes behind the last known leader position (maximum_lag_on_failover");
    let nofailover_logged = fc
        .member(nofailover)
        .log()
        .contains("not racing: I am not allowed to promote (nofailover)");

    // Bring the most advanced member back: it must lead again.
    fc.start_member(leader)?;
    let back = fc.wait_leader(FAILOVER).await?;
    fc.resume_pid(walreceiver);
    let ready = fc.wait_ready(READY).await;
    let report = checker.stop().await;
    let writes_while_leaderless: Vec<String> = [lagging, nofailover]
        .iter()
        .filter(|&&i| report.first_success_after(i, killed).is_some())
        .map(|&i| fc.name(i).to_string())
        .collect();

    eprintln!(
        "{} was {behind} bytes behind (maximum_lag_on_failover {MAX_LAG}); after the leader's \
         death, members answering /primary within {}s: {:?}; lag gate logged: {lag_logged}; \
         nofailover logged: {nofailover_logged}; after its restart {} leads",
        fc.name(lagging),
        watch.as_secs(),
        primaries.iter().map(|&i| fc.name(i)).collect::<Vec<_>>(),
        fc.name(back)
    );

    let mut problems = Vec::new();
    if !primaries.is_empty() {
        problems.push(format!(
            "a member became primary although none may: {:?}",
            primaries.iter().map(|&i| fc.name(i)).collect::<Vec<_>>()
        ));
    }
    if !writes_while_leaderless.is_empty() {
        problems.push(format!(
            "members accepted writes after the leader died: {writes_while_leaderless:?}"
        ));
    }
    if back != leader {
        problems.push(format!(
            "{} took the lead after m1's restart, but m1 is the most advanced member",
            fc.name(back)
        ));
    }
    // Each replica says why it does not take the lead.
    if !lag_logged {
        problems.push(format!(
            "{} never logged that maximum_lag_on_failover kept it from promoting",
            fc.name(lagging)
        ));
    }
    if !nofailover_logged {
        problems.push(format!(
            "{} never logged that nofailover kept it from promoting",
            fc.name(nofailover)
        ));
    }
    if report.successes(nofailover).next().is_some() {
        problems.push("the nofailover member accepted a write".into());
    }
    if let Err(e) = ready {
        problems.push(format!("the cluster did not become ready again: {e:#}"));
    }
    finish(problems, &report, &fc)
}

/// Leader m1; replica m2's WAL receiver is stopped while m1 writes a few
/// hundred kB (within `maximum_lag_on_failover`), replica m3 has it all.
/// m1 dies: m3, the most advanced, must become the leader and m2 must never
/// answer /primary with 200 nor accept a write; resumed, m2 follows m3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_advanced_replica_wins() -> anyhow::Result<()> {
    let (leader, behind, ahead) = (0, 1, 2);
    let (fc, checker) = start_led_by_m1(None).await?;

    let (walreceiver, flushed) = write_while_stopped(
        &fc,
        leader,
        behind,
        "CREATE TABLE e2e_some AS SELECT g, repeat('y', 200) AS pad FROM generate_series(1, 1000) g",
    )
    .await?;
    wait_replica_has(
        &fc,
        "the up-to-date replica to have everything",
        ahead,
        flushed,
    )
    .await?;
    // The leader publishes its position every cycle: wait for it, so the
    // lagging replica is held back by its peer, not by the lag gate.
    let gap = wait_until(
        "the leader to publish its position",
        Duration::from_secs(30),
        async || {
            let optime = status_optime(&fc).await?;
            anyhow::ensure!(optime >= flushed, "optime {optime} < {flushed}");
            Ok(optime.saturating_sub(replica_position(&fc, behind).await?))
        },
    )
    .await?;
    anyhow::ensure!(
        gap > 0 && gap < MAX_LAG,
        "{} should lag by less than {MAX_LAG} bytes, lags by {gap}",
        fc.name(behind)
    );

    let killed = fc.kill_node(leader).await?;
    let (new_leader, seen) = fc.wait_other_leader(&[leader], FAILOVER).await?;
    let also = primaries_during(&fc, Duration::from_secs(5)).await;
    fc.resume_pid(walreceiver);
    let follows = fc
        .wait_streaming_to(new_leader, behind, Duration::from_secs(120))
        .await;
    let report = checker.stop().await;
    eprintln!(
        "{} lagged by {gap} bytes; {} became leader {:.2}s after the kill",
        fc.name(behind),
        fc.name(new_leader),
        (seen - killed).as_secs_f64()
    );

    let mut problems = Vec::new();
    if new_leader != ahead {
        problems.push(format!(
            "{} became leader, but {} was more advanced",
            fc.name(new_leader),
            fc.name(ahead)
        ));
    }
    if also.contains(&behind) || report.first_success_after(behind, killed).is_some() {
        problems.push(format!("the lagging {} acted as primary", fc.name(behind)));
    }
    if let Err(e) = follows {
        problems.push(format!(
            "{} did not follow the new leader: {e:#}",
            fc.name(behind)
        ));
    }
    finish(problems, &report, &fc)
}
