//! The immediate stop of a writable PostgreSQL whose member no longer holds
//! the leader key (issue 14, item 1): SIGQUIT — never SIGKILL, which would
//! leave its backends running and keep the postmaster from starting again
//! (the fence's own immediate stop sent SIGKILL right after SIGQUIT before;
//! here the HA loop's own demotion often gets there first, so this test
//! checks the outcome either way) — and the member comes back.

use std::time::Duration;

use pgpilot_e2e::faults::FaultCluster;
use pgpilot_e2e::wait_until;

const READY: Duration = Duration::from_secs(120);

/// The leader key overwritten under the leader with a replica's name (an
/// operator's `etcdctl put`): the fence stops the old leader's PostgreSQL at
/// once and brings it back read-only; the replica takes the key over, and
/// the cluster has one leader and two streaming replicas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_key_taken_from_under_the_leader_stops_it_cleanly() -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let old = fc.wait_ready(READY).await?;
    let other = (0..3).find(|&i| i != old).expect("3 members");
    let out = fc.etcd().ctl(&["put", &fc.key("leader"), fc.name(other)])?;
    anyhow::ensure!(out.status.success(), "etcdctl put: {out:?}");
    // The fence (every 50 ms) or the HA loop's own demotion, whichever
    // sees the key first: both stop with SIGQUIT.
    wait_until(
        "the old leader's log to show an immediate stop",
        Duration::from_secs(60),
        async || {
            let log = fc.member(old).log();
            anyhow::ensure!(
                log.contains("stopping it immediately")
                    || log.contains("stopping PostgreSQL immediately")
            );
            Ok(())
        },
    )
    .await
    .map_err(|e| fc.with_logs(e))?;
    let leader = fc.wait_ready(READY).await?;
    let log = fc.member(old).log();
    let pg_log = std::fs::read_to_string(&fc.member(old).pg_log_path).unwrap_or_default();
    eprintln!(
        "leader key taken from under {}: {} leads",
        fc.name(old),
        fc.name(leader)
    );
    let mut problems = Vec::new();
    if pg_log.contains("pre-existing shared memory block") {
        problems
            .push("the old leader's postmaster was killed and its backends left running".into());
    }
    if log.contains("cannot start PostgreSQL read-only") {
        problems.push("the fence could not start PostgreSQL read-only".into());
    }
    if !pg_log.contains("received immediate shutdown request") {
        problems.push("the old leader's PostgreSQL got no immediate shutdown request".into());
    }
    fc.verdict(&problems)
}
