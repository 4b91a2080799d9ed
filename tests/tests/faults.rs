//! Fault tests for the safety invariants of the leader lease (docs/design.md,
//! invariants 1, 2 and 6): node death, the leader cut off from etcd, the
//! leader's sidecar killed alone, the leader's sidecar paused past the TTL.
//!
//! Every test runs the split-brain checker ([`pgpilot_e2e::checker`]): a
//! write attempted on every member every 50 ms, and the proof criterion
//! documented there (no member may commit a write while another member is
//! certainly writable). Figures are printed, not asserted tightly: the
//! timing assertions only state what the lease rules make impossible.

use std::time::{Duration, Instant};

use pgpilot::dynamic::DynamicConfig;
use pgpilot_e2e::checker::{Report, WriteChecker};
use pgpilot_e2e::faults::FaultCluster;
use pgpilot_e2e::process::{self as proc, Signal};
use pgpilot_e2e::reads::{outage, ReadProbe};
use pgpilot_e2e::wait_until;
use pgpilot_e2e::writer::WriterOptions;

const READY: Duration = Duration::from_secs(120);
const FAILOVER: Duration = Duration::from_secs(90);
const TTL: u64 = 10;

/// The cluster-wide settings the members run with (ttl 10, loop_wait 1,
/// retry_timeout 3), for the sidecar's own timing formulas.
fn dynamic() -> DynamicConfig {
    DynamicConfig {
        ttl: TTL,
        loop_wait: 1,
        retry_timeout: 3,
        ..Default::default()
    }
}

/// Waits (30 s at most) until the checker has seen a write accepted on
/// `member` sent at or after `after`; returns that probe's (sent, done).
async fn first_write_on(
    fc: &FaultCluster,
    checker: &WriteChecker,
    member: usize,
    after: Instant,
) -> anyhow::Result<(Instant, Instant)> {
    wait_until(
        "the checker to see a write accepted on the new leader",
        Duration::from_secs(30),
        async || {
            checker
                .report()
                .first_success_after(member, after)
                .map(|p| (p.sent, p.done))
                .ok_or_else(|| anyhow::anyhow!("no write accepted yet"))
        },
    )
    .await
    .map_err(|e| fc.with_logs(e))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Signed seconds from `from` to `to`.
fn delta(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64()
    } else {
        -(from - to).as_secs_f64()
    }
}

/// Collects every failed property so one run reports them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
    fn finish(self, c: &FaultCluster, report: Option<&Report>) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let timeline = report.map(Report::timeline).unwrap_or_default();
        anyhow::bail!(
            "{} invariant check(s) failed:\n- {}\n\nchecker timeline:\n{timeline}\n{}",
            self.0.len(),
            self.0.join("\n- "),
            c.logs(60)
        )
    }
}

/// SIGKILL of the leader's sidecar and postmaster together (node death): a
/// replica takes over and accepts writes, but never before the old lease
/// could have expired in etcd, and no two members accept writes at once.
///
/// Bounds checked on the new leader's first accepted write (the instant its
/// first successful probe was *answered*, which is after the commit):
/// - not before `kill + ttl - lease_renew_interval - 1 s`: the old lease
///   was renewed at most one renewal interval before the kill (1 s slack
///   for scheduling);
/// - not before the earliest expiry etcd itself reported for the old lease
///   right after the kill (`lease timetolive`, whole seconds truncated,
///   so a lower bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_death_fails_over_only_after_the_lease_expires() -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let leader = fc.wait_ready(READY).await?;
    let checker = fc.start_checker(leader).await?;
    let (key_holder, lease) = fc
        .leader_key()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader key in etcd"))?;
    anyhow::ensure!(
        key_holder == fc.name(leader),
        "leader key names {key_holder}"
    );

    let killed = fc.kill_node(leader).await?;
    let expiry = fc.lease_expiry_bounds(lease).await?;
    let (new_leader, seen) = fc.wait_other_leader(&[leader], FAILOVER).await?;
    let first_write = first_write_on(&fc, &checker, new_leader, killed).await?;
    // Keep probing a little: a late write on someone else would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = checker.stop().await;

    let d = dynamic();
    let heuristic = killed + d.ttl() - d.lease_renew_interval() - Duration::from_secs(1);
    eprintln!(
        "node death of {}: {} answered /primary after {:.2}s, first write accepted after {:.2}s \
         (ttl {}s, lease renewal every {:.2}s, fence margin {:.2}s)",
        fc.name(leader),
        fc.name(new_leader),
        secs(seen - killed),
        delta(killed, first_write.1),
        TTL,
        secs(d.lease_renew_interval()),
        secs(d.fence_margin())
    );
    if let Some(e) = expiry {
        eprintln!(
            "old lease expiry per etcd: {:.2}s..{:.2}s after the kill",
            delta(killed, e.earliest),
            delta(killed, e.latest)
        );
    }

    let mut f = Failures::default();
    let first_other = (0..fc.members().len())
        .filter(|&i| i != leader)
        .filter_map(|i| report.first_success_after(i, killed).map(|p| (i, p.done)))
        .min_by_key(|(_, t)| *t);
    if let Some((who, done)) = first_other {
        f.check(
            done >= heuristic,
            format!(
                "{} accepted a write {:.2}s after the kill, before kill + ttl - renew interval - 1s = {:.2}s",
                fc.name(who),
                delta(killed, done),
                delta(killed, heuristic)
            ),
        );
        if let Some(e) = expiry {
            f.check(
                done >= e.earliest,
                format!(
                    "{} accepted a write {:.2}s after the kill, before the old lease's earliest expiry ({:.2}s)",
                    fc.name(who),
                    delta(killed, done),
                    delta(killed, e.earliest)
                ),
            );
        }
    }
    f.check(report.violations().is_empty(), report.describe_violations());
    f.finish(&fc, Some(&report))
}

/// SIGKILL of the leader's sidecar alone (invariant 6, no orphaned
/// primary): its PostgreSQL dies with it at once (the postmaster is bound
/// to the sidecar's life), so it stops accepting writes long before another
/// member can take the lease; a new leader appears after the lease expired;
/// restarted, the old member rejoins as a streaming replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_sidecar_takes_its_postgres_along() -> anyhow::Result<()> {
    let fc = FaultCluster::builder().members(3).start().await?;
    let leader = fc.wait_ready(READY).await?;
    let checker = fc.start_checker(leader).await?;
    let old = fc.member(leader);
    let postmaster = old
        .postmaster_pid()
        .ok_or_else(|| anyhow::anyhow!("the leader has no postmaster"))?;

    let killed = Instant::now();
    old.kill_sidecar();
    let gone = proc::wait_gone(postmaster, Duration::from_secs(30))
        .await
        .then(Instant::now);
    let (new_leader, seen) = fc.wait_other_leader(&[leader], FAILOVER).await?;
    let first_new = first_write_on(&fc, &checker, new_leader, killed).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = checker.stop().await;
    let last_old = report.last_success(leader).map(|p| (p.sent, p.done));

    eprintln!(
        "sidecar of {} killed: postmaster gone after {}, {} answered /primary after {:.2}s, \
         first write on it after {:.2}s; last write accepted by the old primary {}",
        fc.name(leader),
        gone.map(|g| format!("{:.3}s", delta(killed, g)))
            .unwrap_or_else(|| "never (30s)".into()),
        fc.name(new_leader),
        delta(killed, seen),
        delta(killed, first_new.1),
        last_old
            .map(|(s, _)| format!("sent {:.3}s after the kill", delta(killed, s)))
            .unwrap_or_else(|| "none".into()),
    );

    let mut f = Failures::default();
    f.check(
        gone.is_some_and(|g| g - killed < Duration::from_secs(5)),
        format!(
            "the old leader's postmaster {postmaster} was not gone within 5s of its sidecar's death ({gone:?})"
        ),
    );
    if let (Some(g), Some((s, _))) = (gone, last_old) {
        f.check(
            s <= g,
            format!(
                "the old primary accepted a write sent {:.3}s after its postmaster was seen gone",
                delta(g, s)
            ),
        );
    }
    if let Some((s, _)) = last_old {
        f.check(
            s < first_new.1,
            format!(
                "the old primary accepted a write (sent {:.3}s after the kill) after the new leader's first write ({:.3}s)",
                delta(killed, s),
                delta(killed, first_new.1)
            ),
        );
    }
    f.check(
        gone.is_some_and(|g| g < seen),
        "the old postmaster still ran when the new leader answered /primary",
    );
    f.check(report.violations().is_empty(), report.describe_violations());

    // Restarted, the old leader rejoins as a replica of the new one.
    fc.start_member(leader)?;
    let rejoined = fc
        .wait_streaming_to(new_leader, leader, Duration::from_secs(120))
        .await;
    f.check(
        rejoined.is_ok(),
        format!("the old leader did not rejoin as a streaming replica: {rejoined:?}"),
    );
    f.finish(&fc, Some(&report))
}

/// SIGSTOP of the leader's sidecar for longer than the TTL, then SIGCONT,
/// with synchronous replication on and the acknowledged-commit writer
/// running: a new leader is elected during the pause; after SIGCONT the
/// old primary stops accepting writes at once (within 1 s) and rejoins as a
/// replica; no acknowledged commit is missing on the new leader; and no two
/// members accept writes at once.
///
/// The last point is the hard one: while the sidecar is stopped, its fence
/// cannot run, and PostgreSQL (a separate process, not stopped) keeps
/// accepting writes that need no synchronous standby (the checker's
/// `synchronous_commit = local` probes) after the lease expired and a new
/// leader was promoted. Only a fence that does not live in the paused
/// process (a watchdog) closes that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_sidecar_demotes_on_waking() -> anyhow::Result<()> {
    paused_leader(Pause::SidecarSigstop).await
}

/// Like [`paused_leader_sidecar_demotes_on_waking`], but the stop comes the
/// way a terminal's job control sends it (Ctrl-Z: SIGTSTP to the
/// foreground process group): the sidecar and its helper processes (the
/// fence guard) are stopped, PostgreSQL, in its own process group, is not.
/// Whatever fences PostgreSQL must not be stoppable that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stopped_by_job_control_demotes() -> anyhow::Result<()> {
    paused_leader(Pause::JobControl).await
}

/// How the leader's sidecar is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// SIGSTOP to the sidecar process alone.
    SidecarSigstop,
    /// SIGTSTP to the sidecar and to every descendant that is not PostgreSQL.
    JobControl,
}

async fn paused_leader(how: Pause) -> anyhow::Result<()> {
    let fc = FaultCluster::builder()
        .members(3)
        .bootstrap("synchronous_mode = true")
        .start()
        .await?;
    let leader = fc.wait_ready(READY).await?;
    let sync = fc.wait_sync_standby(leader, READY).await?;
    let checker = fc.start_checker(leader).await?;
    let writer = fc.start_writer(leader, WriterOptions::default()).await?;
    let old = fc.member(leader);

    let sidecar = old
        .sidecar_pid()
        .ok_or_else(|| anyhow::anyhow!("the leader's sidecar does not run"))?;
    let stopped: Vec<i32> = match how {
        Pause::SidecarSigstop => vec![sidecar],
        Pause::JobControl => {
            // PostgreSQL runs in its own process group: job control does not reach it.
            let postmaster = old
                .postmaster_pid()
                .ok_or_else(|| anyhow::anyhow!("the leader has no postmaster"))?;
            let mut spared = pgpilot_e2e::faults::descendants(postmaster);
            spared.push(postmaster);
            let mut pids = vec![sidecar];
            pids.extend(
                pgpilot_e2e::faults::descendants(sidecar)
                    .into_iter()
                    .filter(|p| !spared.contains(p)),
            );
            pids
        }
    };
    let signal = match how {
        Pause::SidecarSigstop => Signal::SIGSTOP,
        Pause::JobControl => Signal::SIGTSTP,
    };
    let paused = Instant::now();
    for &pid in &stopped {
        fc.stop_pid(pid, signal)?;
    }
    let (new_leader, seen) = fc.wait_other_leader(&[leader], FAILOVER).await?;
    // Stay paused well past the TTL, and a while after the new leader appeared.
    let until = (paused + fc.ttl() + Duration::from_secs(3)).max(seen + Duration::from_secs(3));
    tokio::time::sleep_until(until.into()).await;
    let resumed = Instant::now();
    for &pid in &stopped {
        fc.resume_pid(pid);
    }

    // The old member must rejoin as a replica of the new leader.
    let rejoined = fc
        .wait_streaming_to(new_leader, leader, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = writer.stop().await;
    let report = checker.stop().await;
    let present = fc.writer_ids(new_leader).await?;
    let missing = log.missing(&present);

    let last_old = report.last_success(leader).map(|p| (p.sent, p.done));
    let first_new = report
        .first_success_after(new_leader, paused)
        .map(|p| (p.sent, p.done));
    let old_after_new = match first_new {
        Some((_, done)) => report.successes(leader).filter(|p| p.sent > done).count(),
        None => 0,
    };
    eprintln!(
        "{how:?}: sidecar of {} (sync standby {sync}; stopped pids {stopped:?}) paused {:.2}s: \
         {} answered /primary after {:.2}s, \
         first write on it after {}; old primary's last accepted write sent {} after the pause \
         ({} after SIGCONT); {old_after_new} writes accepted by the old primary after the new \
         one's first; writer: {} acknowledged, {} unknown, {} timed out, {} missing",
        fc.name(leader),
        secs(resumed - paused),
        fc.name(new_leader),
        delta(paused, seen),
        first_new
            .map(|(_, d)| format!("{:.2}s", delta(paused, d)))
            .unwrap_or_else(|| "never".into()),
        last_old
            .map(|(s, _)| format!("{:.3}s", delta(paused, s)))
            .unwrap_or_else(|| "-".into()),
        last_old
            .map(|(s, _)| format!("{:.3}s", delta(resumed, s)))
            .unwrap_or_else(|| "-".into()),
        log.acked.len(),
        log.unknown.len(),
        log.timed_out,
        missing.len(),
    );

    let mut f = Failures::default();
    f.check(
        seen < resumed,
        "no new leader was elected while the old leader's sidecar was paused",
    );
    f.check(
        new_leader == fc.index_of(&sync).unwrap_or(usize::MAX),
        format!(
            "the new leader {} is not the synchronous standby {sync}",
            fc.name(new_leader)
        ),
    );
    if let Some((s, _)) = last_old {
        f.check(
            s <= resumed + Duration::from_secs(1),
            format!(
                "the old primary accepted a write sent {:.3}s after SIGCONT (must demote at once)",
                delta(resumed, s)
            ),
        );
    }
    f.check(
        missing.is_empty(),
        format!(
            "{} acknowledged commits are missing on the new leader: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        ),
    );
    f.check(
        rejoined.is_ok(),
        format!("the old leader did not rejoin as a streaming replica: {rejoined:?}"),
    );
    f.check(
        report.violations().is_empty(),
        format!(
            "SPLIT BRAIN while the leader's sidecar was paused: {}",
            report.describe_violations()
        ),
    );
    f.finish(&fc, Some(&report))
}

/// How the leader's etcd traffic is cut.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Its proxy forwards nothing (its kernel still acknowledges what the
    /// sidecar sends).
    Proxy,
    /// Every packet to and from its etcd port dropped in the kernel
    /// (nftables), retransmissions included.
    Packets,
}

/// The leader cut off from etcd (PostgreSQL replication and the REST API
/// untouched): it stops accepting writes before its lease can be taken
/// (before the latest instant etcd can expire it, and before any other
/// member accepts a write), comes back read-only and serves reads while
/// cut off; it stops answering /primary with 200; a replica becomes leader;
/// once the link heals the old leader rejoins as a streaming replica and
/// receives new rows.
async fn leader_cut_from_etcd(how: Cut) -> anyhow::Result<()> {
    let fc = FaultCluster::builder()
        .members(3)
        .etcd_proxies()
        .start()
        .await?;
    let leader = fc.wait_ready(READY).await?;
    let checker = fc.start_checker(leader).await?;
    let (_, lease) = fc
        .leader_key()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader key in etcd"))?;

    let reads = ReadProbe::start(fc.member(leader).pg_port, Duration::from_secs(400));
    let cut = Instant::now();
    match how {
        Cut::Proxy => fc.proxy(leader).cut(),
        Cut::Packets => fc.drop_etcd_packets(leader)?,
    }
    let expiry = fc.lease_expiry_bounds(lease).await?;
    let (new_leader, seen) = fc.wait_other_leader(&[leader], FAILOVER).await?;
    let old_primary_status = fc.status(leader, "/primary").await;
    let first_new = first_write_on(&fc, &checker, new_leader, cut).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healed = Instant::now();
    match how {
        Cut::Proxy => fc.proxy(leader).heal(),
        Cut::Packets => fc.pass_etcd_packets(leader)?,
    }

    let rejoined = fc
        .wait_streaming_to(new_leader, leader, Duration::from_secs(120))
        .await;
    let streaming_after = healed.elapsed();
    let replicated = match &rejoined {
        Ok(()) => {
            fc.execute(
                new_leader,
                "CREATE TABLE e2e_after_cut (v int); INSERT INTO e2e_after_cut VALUES (7)",
            )
            .await?;
            fc.wait_value(
                leader,
                "SELECT coalesce(max(v), 0)::text FROM e2e_after_cut",
                "7",
                Duration::from_secs(60),
            )
            .await
        }
        Err(_) => Ok(()),
    };
    let report = checker.stop().await;
    let last_old = report.last_success(leader).map(|p| (p.sent, p.done));
    let reads = outage(&reads.stop(), cut, healed);
    let log = std::fs::read_to_string(&fc.member(leader).log_path).unwrap_or_default();
    let fenced_cleanly = log.contains("no longer accepts writes") && log.contains("clean=true");
    let rewound = log.contains("running pg_rewind");

    eprintln!(
        "{how:?}: {} cut from etcd: last write accepted by it sent {} after the cut; old lease expiry per \
         etcd {}; {} answered /primary after {:.2}s, first write on it after {:.2}s; \
         healed after {:.2}s",
        fc.name(leader),
        last_old
            .map(|(s, _)| format!("{:.3}s", delta(cut, s)))
            .unwrap_or_else(|| "-".into()),
        expiry
            .map(|e| format!(
                "{:.2}s..{:.2}s after the cut",
                delta(cut, e.earliest),
                delta(cut, e.latest)
            ))
            .unwrap_or_else(|| "unknown".into()),
        fc.name(new_leader),
        delta(cut, seen),
        delta(cut, first_new.1),
        delta(cut, healed),
    );
    if let Some(o) = &reads {
        eprintln!(
            "reads on {}: refused {:.2}s after the cut, answered read-only again {} later; \
             {} of {} probes unanswered from then until the heal; {}; streaming from {} {:.2}s \
             after the heal",
            fc.name(leader),
            delta(cut, o.first_failure),
            o.read_only_again
                .map(|b| format!("{:.2}s", delta(o.first_failure, b)))
                .unwrap_or_else(|| "never".into()),
            o.failures_after,
            o.probes_after,
            match (fenced_cleanly, rewound) {
                (true, false) => "fast shutdown, rejoined without pg_rewind",
                (true, true) => "fast shutdown, yet rewound",
                (false, true) => "stopped immediately, rewound",
                (false, false) => "stopped immediately, rejoined without pg_rewind",
            },
            fc.name(new_leader),
            streaming_after.as_secs_f64(),
        );
    }
    if let (Some(e), Some((_, done))) = (expiry, last_old) {
        eprintln!(
            "fencing margin: the old primary's last write was answered {:.2}s before the earliest \
             lease expiry",
            delta(done, e.earliest)
        );
    }

    let mut f = Failures::default();
    if let Some((s, _)) = last_old {
        if let Some(e) = expiry {
            f.check(
                s < e.latest,
                format!(
                    "the cut-off leader accepted a write sent {:.3}s after the cut, after its lease \
                     had certainly expired ({:.3}s)",
                    delta(cut, s),
                    delta(cut, e.latest)
                ),
            );
        }
        f.check(
            s < first_new.1,
            format!(
                "the cut-off leader accepted a write (sent {:.3}s after the cut) after the new \
                 leader's first write ({:.3}s)",
                delta(cut, s),
                delta(cut, first_new.1)
            ),
        );
    }
    f.check(
        old_primary_status != Some(200),
        "the cut-off leader still answered /primary with 200 after the new leader did",
    );
    // Issue 14, item 1: fenced, it comes back read-only and keeps serving
    // reads while cut off (figures above; the bound here is generous).
    if let Some(o) = &reads {
        f.check(
            o.read_only_again
                .is_some_and(|b| b.duration_since(o.first_failure) < Duration::from_secs(10)),
            format!("the fenced leader did not serve reads again, read-only, soon: {o:?}"),
        );
        f.check(
            o.failures_after == 0,
            format!("reads failed on the fenced leader during the cut: {o:?}"),
        );
    }
    // Item 5: a fast shutdown hands everything to the replicas, so nothing
    // diverged and nothing is rewound.
    f.check(
        !(fenced_cleanly && rewound),
        "the fenced leader stopped cleanly yet was rewound",
    );
    f.check(
        rejoined.is_ok(),
        format!("the old leader did not rejoin as a streaming replica: {rejoined:?}"),
    );
    f.check(
        replicated.is_ok(),
        format!("a row written on the new leader did not reach the old one: {replicated:?}"),
    );
    f.check(
        fc.status(leader, "/replica").await == Some(200),
        "the old leader does not answer /replica with 200 after rejoining",
    );
    f.check(report.violations().is_empty(), report.describe_violations());
    f.finish(&fc, Some(&report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_from_etcd_fences_then_rejoins() -> anyhow::Result<()> {
    leader_cut_from_etcd(Cut::Proxy).await
}

/// Issue 14, item 6: the same with the leader's etcd packets dropped in the
/// kernel, so its open connections hang instead of being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_etcd_packets_dropped_fences_then_rejoins() -> anyhow::Result<()> {
    leader_cut_from_etcd(Cut::Packets).await
}
