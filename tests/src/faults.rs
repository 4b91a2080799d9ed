//! Building blocks for the fault tests: a cluster whose members reach etcd
//! through cuttable proxies ([`crate::netcut`]) and whose `[bootstrap]`
//! section can carry extra settings (e.g. `synchronous_mode = true`), plus
//! kills, paused WAL receivers, etcd reads through `etcdctl`, and the
//! checker/writer targets.
//!
//! [`FaultCluster`] undoes its faults when dropped (also on panic), before
//! the cluster itself is stopped: links are healed and paused processes are
//! resumed, so the harness's teardown works as usual.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::checker::{CheckerOptions, Target, WriteChecker};
use crate::netcut::TcpProxy;
use crate::netdrop::PacketDrop;
use crate::process::{self as proc, Signal};
use crate::writer::{AckWriter, WriterOptions, WriterTarget};
use crate::{wait_until, Cluster};

/// How to build a [`FaultCluster`].
#[derive(Debug, Clone)]
pub struct FaultClusterBuilder {
    members: usize,
    ttl: u64,
    loop_wait: u64,
    retry_timeout: u64,
    /// Lines added to every member's `[bootstrap]` section.
    bootstrap: String,
    /// TOML appended to member i's file (e.g. `[tags]` tables).
    member_toml: Vec<String>,
    /// Each member reaches etcd through its own [`TcpProxy`].
    proxies: bool,
    /// Start the first member alone and the others once it leads.
    staggered: bool,
}

impl Default for FaultClusterBuilder {
    fn default() -> Self {
        FaultClusterBuilder {
            members: 3,
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 3,
            bootstrap: String::new(),
            member_toml: Vec::new(),
            proxies: false,
            staggered: true,
        }
    }
}

impl FaultClusterBuilder {
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }
    pub fn timing(mut self, ttl: u64, loop_wait: u64, retry_timeout: u64) -> Self {
        self.ttl = ttl;
        self.loop_wait = loop_wait;
        self.retry_timeout = retry_timeout;
        self
    }
    /// A line (or lines) for the `[bootstrap]` section, e.g. `synchronous_mode = true`.
    pub fn bootstrap(mut self, lines: &str) -> Self {
        self.bootstrap.push_str(lines.trim_end());
        self.bootstrap.push('\n');
        self
    }
    /// TOML appended to member `i`'s file (0-based), e.g. `"[tags]\nnofailover = true\n"`.
    pub fn member_toml(mut self, i: usize, toml: &str) -> Self {
        if self.member_toml.len() <= i {
            self.member_toml.resize(i + 1, String::new());
        }
        self.member_toml[i].push_str(toml);
        self
    }
    /// Route each member's etcd traffic through its own cuttable proxy.
    pub fn etcd_proxies(mut self) -> Self {
        self.proxies = true;
        self
    }
    /// Start all members at once instead of m1 first.
    pub fn together(mut self) -> Self {
        self.staggered = false;
        self
    }

    pub async fn start(self) -> anyhow::Result<FaultCluster> {
        let mut c = Cluster::builder()
            .members(0)
            .ttl(self.ttl)
            .loop_wait(self.loop_wait)
            .retry_timeout(self.retry_timeout)
            .start()
            .await?;
        let etcd_port = c.etcd().client_port;
        let mut proxies = Vec::new();
        for n in 0..self.members {
            let mut options = c.member_options(&format!("m{}", n + 1));
            if self.proxies {
                let proxy = TcpProxy::start(etcd_port).await?;
                options.endpoints = vec![proxy.endpoint()];
                proxies.push(Some(proxy));
            } else {
                proxies.push(None);
            }
            if let Some(extra) = self.member_toml.get(n) {
                options.extra_toml.push_str(extra);
            }
            let i = c.add_member(options)?;
            let m = c.member(i);
            let text = with_bootstrap_lines(&m.default_config(), &self.bootstrap)?;
            m.write_config(&text)?;
        }
        let fc = FaultCluster {
            c,
            proxies,
            packets: Mutex::new(None),
            paused: Mutex::new(Vec::new()),
            ttl: Duration::from_secs(self.ttl),
        };
        if self.staggered && self.members > 0 {
            fc.c.start_member(0)?;
            fc.c.wait_leader(Duration::from_secs(120)).await?;
            for i in 1..self.members {
                fc.c.start_member(i)?;
            }
        } else {
            for i in 0..self.members {
                fc.c.start_member(i)?;
            }
        }
        Ok(fc)
    }
}

/// Insert `lines` at the end of the `[bootstrap]` table of a member file.
pub fn with_bootstrap_lines(config: &str, lines: &str) -> anyhow::Result<String> {
    if lines.trim().is_empty() {
        return Ok(config.to_string());
    }
    let start = config
        .find("\n[bootstrap]\n")
        .ok_or_else(|| anyhow::anyhow!("no [bootstrap] section in the member file"))?;
    let body = start + "\n[bootstrap]\n".len();
    // The section ends at the next table header.
    let end = config[body..]
        .find("\n[")
        .map(|p| body + p + 1)
        .unwrap_or(config.len());
    let mut out = String::with_capacity(config.len() + lines.len() + 1);
    out.push_str(&config[..end]);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(lines.trim_end());
    out.push('\n');
    out.push_str(&config[end..]);
    Ok(out)
}

/// A cluster with fault-injection helpers. Dropping it heals every link and
/// resumes every paused process first, then stops the cluster.
pub struct FaultCluster {
    /// The cluster (fields drop in order: the cluster before the proxies,
    /// so sidecars can still reach etcd while they stop).
    pub c: Cluster,
    proxies: Vec<Option<TcpProxy>>,
    /// Kernel-level drops of members' etcd traffic, made on first use.
    packets: Mutex<Option<PacketDrop>>,
    paused: Mutex<Vec<i32>>,
    ttl: Duration,
}

impl std::ops::Deref for FaultCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.c
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for p in self.proxies.iter().flatten() {
            p.heal();
        }
        // Deleting the table lets every dropped packet through again.
        drop(
            self.packets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        for pid in self
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            proc::signal(pid, Signal::SIGCONT);
        }
    }
}

impl FaultCluster {
    pub fn builder() -> FaultClusterBuilder {
        FaultClusterBuilder::default()
    }

    /// Ok when `problems` is empty; otherwise all of them, with the logs.
    pub fn verdict(&self, problems: &[String]) -> anyhow::Result<()> {
        anyhow::ensure!(
            problems.is_empty(),
            "{}\n{}",
            problems.join("\n"),
            self.logs(60)
        );
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Member `i`'s etcd proxy (only with [`FaultClusterBuilder::etcd_proxies`]).
    /// Drop every packet between member `i`'s sidecar and etcd in the
    /// kernel ([`crate::netdrop`]): established connections hang, nothing
    /// is closed. Needs [`FaultClusterBuilder::etcd_proxies`] (each member
    /// its own port).
    pub fn drop_etcd_packets(&self, i: usize) -> anyhow::Result<()> {
        let port = self.proxy(i).port;
        let mut packets = self.packets.lock().unwrap_or_else(|e| e.into_inner());
        if packets.is_none() {
            *packets = Some(PacketDrop::new()?);
        }
        packets.as_ref().expect("made above").drop_port(port)
    }

    /// Let member `i`'s etcd packets through again.
    pub fn pass_etcd_packets(&self, i: usize) -> anyhow::Result<()> {
        let port = self.proxy(i).port;
        match self
            .packets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(p) => p.pass_port(port),
            None => Ok(()),
        }
    }

    pub fn proxy(&self, i: usize) -> &TcpProxy {
        self.proxies[i]
            .as_ref()
            .expect("the cluster was built with etcd_proxies()")
    }

    /// Probe targets for a [`crate::checker::WriteChecker`].
    pub fn checker_targets(&self) -> Vec<Target> {
        self.c
            .members()
            .iter()
            .map(|m| Target {
                name: m.name.clone(),
                pg_port: m.pg_port,
            })
            .collect()
    }

    /// Targets for an [`crate::writer::AckWriter`].
    pub fn writer_targets(&self) -> Vec<WriterTarget> {
        self.c
            .members()
            .iter()
            .map(|m| WriterTarget {
                name: m.name.clone(),
                pg_port: m.pg_port,
                api_base: m.api_url(""),
            })
            .collect()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.c.member(i).name
    }

    /// SIGKILL member `i`'s postmaster and sidecar together ("node death").
    /// Returns the instant just before the first signal.
    pub async fn kill_node(&self, i: usize) -> anyhow::Result<Instant> {
        let m = self.c.member(i);
        let postmaster = m.postmaster_pid();
        let at = Instant::now();
        if let Some(pid) = postmaster {
            proc::signal(pid, Signal::SIGKILL);
        }
        m.kill_sidecar();
        if let Some(pid) = postmaster {
            anyhow::ensure!(
                proc::wait_gone(pid, Duration::from_secs(10)).await,
                "postmaster {pid} of {} survived SIGKILL",
                m.name
            );
        }
        Ok(at)
    }

    /// Wait until a member other than `except` answers `/primary` with 200;
    /// its index and when it was seen.
    pub async fn wait_other_leader(
        &self,
        except: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<(usize, Instant)> {
        wait_until(
            "another member to answer /primary with 200",
            timeout,
            async || {
                for i in 0..self.c.members().len() {
                    if except.contains(&i) || !self.c.member(i).is_running() {
                        continue;
                    }
                    if self.c.status(i, "/primary").await == Some(200) {
                        return Ok((i, Instant::now()));
                    }
                }
                anyhow::bail!("no other member answers /primary with 200")
            },
        )
        .await
        .map_err(|e| self.c.with_logs(e))
    }

    /// Wait until the leader's pg_stat_replication shows a synchronous
    /// standby (`sync_state = 'sync'`); its name.
    pub async fn wait_sync_standby(
        &self,
        leader: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        wait_until("a synchronous standby on the leader", timeout, async || {
            let rows = self
                .c
                .query_strings(
                    leader,
                    "SELECT application_name::text FROM pg_stat_replication \
                     WHERE sync_state = 'sync' AND state = 'streaming'",
                )
                .await?;
            rows.into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .ok_or_else(|| anyhow::anyhow!("no row with sync_state = 'sync'"))
        })
        .await
        .map_err(|e| self.c.with_logs(e))
    }

    /// Wait until member `i`'s `/cluster` lists `i` itself with a timeline
    /// of at least `at_least` (the member published its timeline); the timeline.
    pub async fn wait_published_timeline(
        &self,
        i: usize,
        at_least: u64,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let name = self.name(i).to_string();
        wait_until(
            &format!("{name} to publish timeline {at_least} or later"),
            timeout,
            async || {
                let json = self.c.cluster_json(i).await?;
                let tl = json["members"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["name"] == name.as_str()))
                    .and_then(|m| m["timeline"].as_u64())
                    .unwrap_or(0);
                anyhow::ensure!(tl >= at_least, "timeline {tl}");
                Ok(tl)
            },
        )
        .await
        .map_err(|e| self.c.with_logs(e))
    }

    /// SIGSTOP member `i`'s WAL receiver: the replica stops receiving WAL
    /// (replay and SQL go on). Resumed by [`Self::resume_pid`] or on drop.
    pub async fn pause_walreceiver(&self, i: usize) -> anyhow::Result<i32> {
        let pid: i32 = wait_until(
            &format!("a WAL receiver on {}", self.name(i)),
            Duration::from_secs(30),
            async || {
                let pid = self
                    .c
                    .query_one(
                        i,
                        "SELECT pid::text FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                    )
                    .await?;
                Ok(pid.parse::<i32>()?)
            },
        )
        .await?;
        self.pause_pid(pid)?;
        Ok(pid)
    }

    /// SIGSTOP a process of this test (resumed on drop at the latest).
    pub fn pause_pid(&self, pid: i32) -> anyhow::Result<()> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
        anyhow::ensure!(proc::signal(pid, Signal::SIGSTOP), "cannot SIGSTOP {pid}");
        Ok(())
    }

    /// Stop a process of this test with `sig` (SIGSTOP, SIGTSTP, ...);
    /// resumed on drop at the latest.
    pub fn stop_pid(&self, pid: i32, sig: Signal) -> anyhow::Result<()> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
        anyhow::ensure!(proc::signal(pid, sig), "cannot send {sig} to {pid}");
        Ok(())
    }

    /// SIGCONT a process paused with [`Self::pause_pid`].
    pub fn resume_pid(&self, pid: i32) {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != pid);
        proc::signal(pid, Signal::SIGCONT);
    }

    /// Create `table` on `leader`, wait until every other running member has it.
    async fn replicate_table(&self, leader: usize, table: &str) -> anyhow::Result<()> {
        for i in self.c.running() {
            if i == leader {
                continue;
            }
            self.c
                .wait_value(
                    i,
                    &format!("SELECT count(*)::text FROM pg_class WHERE relname = '{table}'"),
                    "1",
                    Duration::from_secs(60),
                )
                .await?;
        }
        Ok(())
    }

    /// Create the probe table on `leader`, start a [`WriteChecker`] on every
    /// member and wait until it has seen the leader accept writes.
    pub async fn start_checker(&self, leader: usize) -> anyhow::Result<WriteChecker> {
        WriteChecker::create_table(self.c.member(leader).pg_port).await?;
        self.replicate_table(leader, crate::checker::PROBE_TABLE)
            .await?;
        let checker = WriteChecker::start(self.checker_targets(), CheckerOptions::default());
        wait_until(
            "the checker to see the leader accept writes",
            Duration::from_secs(30),
            async || {
                let n = checker.report().successes(leader).count();
                anyhow::ensure!(n >= 5, "{n} probes accepted so far");
                Ok(())
            },
        )
        .await?;
        Ok(checker)
    }

    /// Create the writer's table on `leader` and start an [`AckWriter`];
    /// wait until it has some acknowledged commits.
    pub async fn start_writer(
        &self,
        leader: usize,
        options: WriterOptions,
    ) -> anyhow::Result<AckWriter> {
        AckWriter::create_table(self.c.member(leader).pg_port).await?;
        self.replicate_table(leader, crate::writer::WRITER_TABLE)
            .await?;
        let writer = AckWriter::start(self.writer_targets(), options);
        wait_until(
            "the writer's first acknowledged commits",
            Duration::from_secs(30),
            async || {
                let n = writer.acked_count();
                anyhow::ensure!(n >= 5, "{n} commits acknowledged so far");
                Ok(())
            },
        )
        .await
        .map_err(|e| self.c.with_logs(e))?;
        Ok(writer)
    }

    /// Every id in the writer's table on member `i`.
    pub async fn writer_ids(&self, i: usize) -> anyhow::Result<std::collections::BTreeSet<i64>> {
        let rows = self
            .c
            .query(
                i,
                &format!("SELECT id FROM {}", crate::writer::WRITER_TABLE),
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    }

    /// The key prefix of the test cluster in etcd.
    pub fn key(&self, relative: &str) -> String {
        format!("/pgpilot/{}/{relative}", crate::SCOPE)
    }

    /// The value of a key (read directly from etcd, not through a proxy).
    pub async fn etcd_value(&self, relative: &str) -> anyhow::Result<Option<String>> {
        etcdctl::get(&self.c.etcd().endpoint(), &self.key(relative)).await
    }

    /// The leader key: (member name, lease id).
    pub async fn leader_key(&self) -> anyhow::Result<Option<(String, i64)>> {
        etcdctl::get_with_lease(&self.c.etcd().endpoint(), &self.key("leader")).await
    }

    /// Wait until the leader key names a member other than `old` (polled
    /// directly in etcd, as fast as `etcdctl` answers); that member's name.
    pub async fn wait_leader_key_moves(
        &self,
        old: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some((name, _))) = self.leader_key().await {
                if name != old {
                    return Ok(name);
                }
            }
            if Instant::now() >= deadline {
                return Err(self.c.with_logs(anyhow::anyhow!(
                    "the leader key did not move away from {old} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A lower bound for the instant lease `lease` expires in etcd, read
    /// now: `sent + remaining` (etcd truncates the remaining TTL to whole
    /// seconds, so the true expiry lies within one second after the bound);
    /// `None` when the lease no longer exists.
    pub async fn lease_expiry_bounds(&self, lease: i64) -> anyhow::Result<Option<LeaseExpiry>> {
        let sent = Instant::now();
        let ttl = etcdctl::lease_ttl(&self.c.etcd().endpoint(), lease).await?;
        let received = Instant::now();
        Ok(ttl.filter(|t| *t >= 0).map(|t| LeaseExpiry {
            earliest: sent + Duration::from_secs(t as u64),
            latest: received + Duration::from_secs(t as u64 + 1),
        }))
    }
}

/// Every descendant of `pid` (children, their children, ...), from /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the command (which may contain spaces): state ppid ...
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == parent && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// When a lease expires at the earliest and at the latest, as far as etcd told.
#[derive(Debug, Clone, Copy)]
pub struct LeaseExpiry {
    pub earliest: Instant,
    pub latest: Instant,
}

/// Reads from etcd with the `etcdctl` program (v3 API).
pub mod etcdctl {
    use std::time::Duration;

    async fn run(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--command-timeout=5s")
            .args(args)
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .map_err(|_| anyhow::anyhow!("etcdctl {args:?} timed out"))?
            .map_err(|e| anyhow::anyhow!("cannot run etcdctl: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The value of `key`, if it exists.
    pub async fn get(endpoint: &str, key: &str) -> anyhow::Result<Option<String>> {
        let out = run(endpoint, &["get", key, "--print-value-only"]).await?;
        let value = out.strip_suffix('\n').unwrap_or(&out);
        Ok((!out.is_empty()).then(|| value.to_string()))
    }

    /// The value of `key` (a plain string: etcdctl prints it quoted) and
    /// its lease id, read in one request.
    pub async fn get_with_lease(
        endpoint: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, i64)>> {
        let fields = run(endpoint, &["get", key, "-w", "fields"]).await?;
        let field = |name: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(&format!("\"{name}\" : ")))
                .map(str::trim)
        };
        if field("Count") == Some("0") {
            return Ok(None);
        }
        let value = field("Value")
            .map(|v| v.trim_matches('"').to_string())
            .ok_or_else(|| anyhow::anyhow!("no value in {fields:?}"))?;
        let lease = field("Lease")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no lease in {fields:?}"))?;
        Ok(Some((value, lease)))
    }

    /// Remaining TTL of `lease` in whole seconds (truncated), -1 when expired.
    pub async fn lease_ttl(endpoint: &str, lease: i64) -> anyhow::Result<Option<i64>> {
        let out = run(
            endpoint,
            &["lease", "timetolive", &format!("{lease:x}"), "-w", "json"],
        )
        .await?;
        let json: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok(json.get("ttl").and_then(|v| v.as_i64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lines_go_into_the_bootstrap_table() {
        let text =
            "[a]\nx = 1\n\n[bootstrap]\nttl = 10\nloop_wait = 1\n\n[log]\nlevel = \"info\"\n";
        let out = with_bootstrap_lines(text, "synchronous_mode = true").unwrap();
        assert_eq!(
            out,
            "[a]\nx = 1\n\n[bootstrap]\nttl = 10\nloop_wait = 1\n\nsynchronous_mode = true\n[log]\nlevel = \"info\"\n"
        );
    }
}
