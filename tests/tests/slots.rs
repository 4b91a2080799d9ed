//! Replication slots never block streaming (issue 14, item 3): the leader
//! keeps a departed member's slot for `member_slots_ttl`, so a replica that
//! was down long enough for its key to expire streams again at its first
//! attempt; and a member gone for longer than that loses its slot.
//! Real PostgreSQL and etcd; each member's sidecar and postmaster are
//! SIGKILLed (a crash), so the member key expires with its lease.

use std::time::{Duration, Instant};

use pgpilot_e2e::faults::FaultCluster;
use pgpilot_e2e::wait_until;

const READY: Duration = Duration::from_secs(120);
const REPLICATE: Duration = Duration::from_secs(60);

/// Until the member key of `name` is gone from etcd (its lease expired).
async fn wait_key_gone(fc: &FaultCluster, name: &str) -> anyhow::Result<Instant> {
    let key = format!("members/{name}");
    wait_until(
        &format!("the member key of {name} to expire"),
        Duration::from_secs(60),
        async || {
            anyhow::ensure!(fc.etcd_value(&key).await?.is_none(), "{key} still there");
            Ok(Instant::now())
        },
    )
    .await
}

async fn slots_on(fc: &FaultCluster, i: usize) -> anyhow::Result<String> {
    fc.query_one(
        i,
        "SELECT coalesce(string_agg(slot_name::text, ',' ORDER BY slot_name), '') \
         FROM pg_replication_slots",
    )
    .await
}

/// A replica crashes and stays down past its key's expiry (and several
/// leader cycles); rows are written meanwhile. Its slot is still on the
/// leader; restarted, it streams at its first attempt: its PostgreSQL log
/// has no "replication slot ... does not exist", and it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_down_past_its_key_streams_at_once_on_restart() -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let leader = fc.wait_ready(READY).await?;
    let replica = (0..3).find(|&i| i != leader).expect("3 members");
    let name = fc.name(replica).to_string();
    fc.wait_streaming_to(leader, replica, REPLICATE).await?;
    fc.execute(
        leader,
        "CREATE TABLE e2e_slots (id int PRIMARY KEY); INSERT INTO e2e_slots VALUES (1)",
    )
    .await?;
    fc.wait_value(
        replica,
        "SELECT count(*)::text FROM e2e_slots",
        "1",
        REPLICATE,
    )
    .await?;

    let killed = fc.kill_node(replica).await?;
    let gone = wait_key_gone(&fc, &name).await?;
    // Several leader cycles without the member (loop_wait 1 s): the old
    // leader dropped the slot within one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kept = slots_on(&fc, leader).await?;
    fc.execute(
        leader,
        "INSERT INTO e2e_slots SELECT g FROM generate_series(2, 1000) g",
    )
    .await?;
    let pg_log_before =
        std::fs::read_to_string(&fc.member(replica).pg_log_path).unwrap_or_default();

    let restarted = Instant::now();
    fc.start_member(replica)?;
    let streamed = fc.wait_streaming_to(leader, replica, REPLICATE).await;
    let to_stream = restarted.elapsed();
    let caught_up = fc
        .wait_value(
            replica,
            "SELECT count(*)::text FROM e2e_slots",
            "1000",
            REPLICATE,
        )
        .await;
    let pg_log = std::fs::read_to_string(&fc.member(replica).pg_log_path).unwrap_or_default();
    let new_log = pg_log.get(pg_log_before.len()..).unwrap_or(&pg_log);
    eprintln!(
        "{name}: key gone {:.2}s after the kill; slots on the leader then: [{kept}]; \
         restarted, streaming after {:.2}s",
        (gone - killed).as_secs_f64(),
        to_stream.as_secs_f64()
    );
    let mut problems = Vec::new();
    if !kept.split(',').any(|s| s == name) {
        problems.push(format!(
            "the leader dropped {name}'s slot when its key expired (slots: [{kept}])"
        ));
    }
    if let Err(e) = streamed {
        problems.push(format!("{name} does not stream after its restart: {e:#}"));
    }
    if let Err(e) = caught_up {
        problems.push(format!("{name} did not catch up: {e:#}"));
    }
    if new_log.contains("does not exist") {
        problems.push(format!(
            "{name}'s first streaming attempt hit a missing slot:\n{}",
            new_log
                .lines()
                .filter(|l| l.contains("does not exist"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    fc.verdict(&problems)
}

/// With `member_slots_ttl = 6`, a member down for good loses its slot on the
/// leader some 6 s after its key expired, not before its key expired; the
/// other replica's slot stays. Started again, the member creates its slot
/// on the leader over replication before it streams, and never waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_of_a_member_gone_past_member_slots_ttl_is_dropped() -> anyhow::Result<()> {
    let fc = FaultCluster::builder()
        .members(3)
        .bootstrap("member_slots_ttl = 6")
        .start()
        .await?;
    let leader = fc.wait_ready(READY).await?;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &r in &replicas {
        fc.wait_streaming_to(leader, r, REPLICATE).await?;
    }
    let (dead, alive) = (replicas[0], replicas[1]);
    let (dead_name, alive_name) = (fc.name(dead).to_string(), fc.name(alive).to_string());
    fc.kill_node(dead).await?;
    let gone = wait_key_gone(&fc, &dead_name).await?;
    let held_after_expiry = slots_on(&fc, leader).await?;
    let dropped = wait_until(
        &format!("the leader to drop {dead_name}'s slot"),
        Duration::from_secs(60),
        async || {
            let slots = slots_on(&fc, leader).await?;
            anyhow::ensure!(
                !slots.split(',').any(|s| s == dead_name),
                "slots: [{slots}]"
            );
            Ok(Instant::now())
        },
    )
    .await;
    let after = slots_on(&fc, leader).await?;
    let leader_log = fc.member(leader).log();
    // Back after its slot went: it makes its slot on the leader itself,
    // before it starts streaming (and before its key is published).
    let restarted = Instant::now();
    fc.start_member(dead)?;
    let streamed = fc.wait_streaming_to(leader, dead, REPLICATE).await;
    eprintln!(
        "{dead_name} restarted without a slot: streaming after {:.2}s",
        restarted.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    match dropped {
        Ok(at) => {
            let after_expiry = (at - gone).as_secs_f64();
            eprintln!("{dead_name}'s slot dropped {after_expiry:.2}s after its key expired");
            if after_expiry < 4.0 {
                problems.push(format!(
                    "{dead_name}'s slot went {after_expiry:.2}s after its key expired, before member_slots_ttl (6 s)"
                ));
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !held_after_expiry.split(',').any(|s| s == dead_name) {
        problems.push(format!(
            "{dead_name}'s slot was gone as soon as its key expired ([{held_after_expiry}])"
        ));
    }
    if !after.split(',').any(|s| s == alive_name) {
        problems.push(format!("{alive_name}'s slot went too ([{after}])"));
    }
    if let Err(e) = streamed {
        problems.push(format!(
            "{dead_name} does not stream after its restart: {e:#}"
        ));
    }
    if !fc
        .member(dead)
        .log()
        .contains("created my replication slot on the upstream")
    {
        problems.push(format!(
            "{dead_name} did not create its slot on the leader itself"
        ));
    }
    let pg_log = std::fs::read_to_string(&fc.member(dead).pg_log_path).unwrap_or_default();
    if pg_log.contains("does not exist") {
        problems.push(format!("{dead_name}'s WAL receiver hit a missing slot"));
    }
    if !leader_log.contains("gone for longer than member_slots_ttl") {
        problems.push("the leader's log does not say why the slot went".into());
    }
    fc.verdict(&problems)
}
