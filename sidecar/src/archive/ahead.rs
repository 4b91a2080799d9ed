//! The push-ahead worker. With `backup.archive_async`, the running sidecar
//! pushes the WAL files PostgreSQL has marked ready
//! (`pg_wal/archive_status/<wal>.ready`) before PostgreSQL asks, up to
//! `backup.parallelism` at once, oldest first, through the same code as
//! `archive-push` ([`super::push::push_on`]), with the same time budget per file.
//!
//! Contract: an acknowledgement (`<spool>/out/<wal>.ok`, see [`super::spool`])
//! is written only after `push` returned Ok: the object is stored and its
//! size checked, or the same content was already there and was read back
//! whole. It records the SHA-256 and size of the bytes pushed, and
//! archive-push trusts it only for a file with exactly those bytes
//! ([`super::async_push`]). A failure is recorded in `<wal>.error` with its
//! exit code and retried with backoff. Acknowledgements and failures go
//! once PostgreSQL has marked the file `.done` (or removed it).
//!
//! The worker pushes only what PostgreSQL itself would archive: `.ready`
//! files, while PostgreSQL is a primary with `archive_mode` on, or a
//! standby with `archive_mode = always` (asked over SQL every few seconds).
//! It holds the spool's lock only while it may push, so archive-push never
//! waits for an idle worker.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::async_push::repository_id;
use super::push::{push_on, Pushed};
use super::spool::{Ack, Failure, Spool};
use super::{Archive, ArchiveError};
use crate::config::Config;
use crate::repo::layout::{WalKind, WalName};

/// How often `archive_status` is read.
const POLL: Duration = Duration::from_millis(100);
/// How often PostgreSQL is asked whether it archives.
const GATE_EVERY: Duration = Duration::from_secs(2);
/// Backoff after a failed push of one file: doubles up to the maximum.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long pushes under way may finish when the sidecar stops.
const DRAIN: Duration = Duration::from_secs(5);

/// What the worker is doing, for metrics and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AheadState {
    /// It may push now (PostgreSQL archives, and the spool's lock is held).
    pub active: bool,
    /// Why it is not active, when it is not.
    pub inactive_reason: Option<String>,
    /// The last file stored, and when.
    pub last_pushed: Option<String>,
    pub last_pushed_at: Option<SystemTime>,
    /// Files stored since start.
    pub pushed: u64,
    /// Failed pushes since start.
    pub failures: u64,
    pub last_error: Option<String>,
    /// `.ready` files without an acknowledgement (including those under way).
    pub queue_depth: usize,
}

/// The worker's state, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct AheadStatus {
    state: Mutex<AheadState>,
}

impl AheadStatus {
    pub fn snapshot(&self) -> AheadState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut AheadState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Start the worker when the configuration asks for async archiving; it
/// runs until `stop` turns true.
pub fn start(
    config: Arc<Config>,
    stop: watch::Receiver<bool>,
) -> Option<(Arc<AheadStatus>, tokio::task::JoinHandle<()>)> {
    if !config.backup.as_ref().is_some_and(|b| b.archive_async) {
        return None;
    }
    let status = Arc::new(AheadStatus::default());
    let task = tokio::spawn(run(config, status.clone(), stop));
    Some((status, task))
}

/// The worker's loop. Set-up failures are logged and end the worker:
/// archive-push then pushes every file itself.
pub async fn run(config: Arc<Config>, status: Arc<AheadStatus>, mut stop: watch::Receiver<bool>) {
    release_large_buffers();
    let archive = match Archive::new(config.clone()) {
        Ok(archive) => archive,
        Err(e) => {
            tracing::error!("push-ahead worker not started: {e}");
            return;
        }
    };
    let spool = match Spool::new(&config, &archive.backup) {
        Ok(spool) => spool,
        Err(e) => {
            tracing::error!("push-ahead worker not started: {e}");
            return;
        }
    };
    if let Err(e) = spool.create() {
        tracing::error!(
            "push-ahead worker not started: {e}; archive-push pushes every file itself \
             (set backup.spool_path to a directory pgpilot can create)"
        );
        return;
    }
    tracing::info!(
        spool = %spool.root().display(),
        parallelism = archive.backup.parallelism,
        "push-ahead worker started"
    );
    let mut worker = Worker {
        repository: repository_id(&archive.backup, &config.cluster.scope),
        wal_dir: config.postgresql.data_dir.join("pg_wal"),
        archive,
        spool,
        status,
        gate: Gate::default(),
        lock: None,
        tasks: JoinSet::new(),
        in_flight: HashMap::new(),
        retry: HashMap::new(),
        missing_once: HashSet::new(),
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            Some(done) = worker.tasks.join_next_with_id(), if !worker.tasks.is_empty() => {
                worker.finished(done);
            }
            _ = tick.tick() => {}
        }
        worker.cycle(&config).await;
    }
    worker.drain().await;
    tracing::info!("push-ahead worker stopped");
}

/// Each push holds a 16 MiB segment and its compressed copy. glibc raises
/// its mmap threshold to the largest block freed, after which such buffers
/// come from the heap arenas of the pool threads and stay resident (the
/// sidecar grew past 200 MiB). A fixed 1 MiB threshold maps them on their
/// own and returns them to the kernel when freed.
fn release_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is thread-safe.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

type Done =
    Result<(tokio::task::Id, (WalName, Result<Pushed, ArchiveError>)), tokio::task::JoinError>;

struct Worker {
    archive: Archive,
    spool: Spool,
    repository: String,
    wal_dir: PathBuf,
    status: Arc<AheadStatus>,
    gate: Gate,
    /// The spool's lock, held while the worker may push.
    lock: Option<File>,
    tasks: JoinSet<(WalName, Result<Pushed, ArchiveError>)>,
    in_flight: HashMap<tokio::task::Id, String>,
    /// Files that failed: when to try again, and the next wait.
    retry: HashMap<String, (Instant, Duration)>,
    /// Names with an acknowledgement and no `.ready` at the last scan (a
    /// second miss removes the acknowledgement: a rename under way can hide
    /// a name from one directory read).
    missing_once: HashSet<String>,
}

impl Worker {
    async fn cycle(&mut self, config: &Config) {
        self.gate.refresh(config).await;
        self.follow_gate();
        let ready = match ready_files(&self.wal_dir.join("archive_status")) {
            Ok(ready) => ready,
            Err(e) => {
                // No data directory yet (before initdb or a clone).
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!("push-ahead: cannot read archive_status: {e}");
                }
                Vec::new()
            }
        };
        self.clean_spool(&ready);
        let waiting = ready
            .iter()
            .filter(|n| !self.spool.has_ack(n.as_str()))
            .count();
        let active = self.lock.is_some();
        let reason = self.gate.reason.clone();
        self.status.update(|s| {
            s.queue_depth = waiting;
            s.active = active;
            s.inactive_reason = (!active).then_some(reason);
        });
        if !active {
            return;
        }
        let now = Instant::now();
        for name in ready {
            if self.tasks.len() >= self.archive.backup.parallelism {
                break;
            }
            let busy = self.in_flight.values().any(|n| *n == name.as_str());
            let waiting = self
                .retry
                .get(name.as_str())
                .is_some_and(|(at, _)| *at > now);
            if busy || waiting || self.spool.has_ack(name.as_str()) {
                continue;
            }
            let path = self.wal_dir.join(name.as_str());
            if !path.exists() {
                continue;
            }
            let archive = self.archive.clone();
            let label = name.to_string();
            let handle = self.tasks.spawn(async move {
                let context = archive.call(Instant::now());
                // `parallelism` files at once, each compressed on one
                // thread while the task reads and hashes it.
                let result = context.within_deadline(push_on(&context, &path, 1)).await;
                (name, result)
            });
            self.in_flight.insert(handle.id(), label);
        }
    }

    /// Hold the spool's lock exactly while PostgreSQL archives.
    fn follow_gate(&mut self) {
        if self.gate.archives && self.lock.is_none() {
            match self.spool.lock_worker() {
                Ok(Some(file)) => {
                    tracing::info!("push-ahead worker active: {}", self.gate.reason);
                    self.lock = Some(file);
                }
                Ok(None) => {
                    self.gate.reason = format!(
                        "another process holds {}/ahead.lock",
                        self.spool.root().display()
                    );
                }
                Err(e) => self.gate.reason = format!("cannot lock the spool: {e}"),
            }
        } else if !self.gate.archives && self.lock.is_some() && self.tasks.is_empty() {
            tracing::info!("push-ahead worker idle: {}", self.gate.reason);
            self.lock = None;
        }
    }

    fn finished(&mut self, done: Done) {
        let (id, (name, result)) = match done {
            Ok(done) => done,
            Err(e) => {
                let name = self.in_flight.remove(&e.id()).unwrap_or_default();
                tracing::error!("push-ahead of {name} crashed: {e}");
                self.failed(
                    &name,
                    &ArchiveError::Local(format!("the push crashed: {e}")),
                );
                return;
            }
        };
        self.in_flight.remove(&id);
        match result {
            Ok(pushed) => {
                let ack = Ack {
                    wal: name.to_string(),
                    repository: self.repository.clone(),
                    key: pushed.key,
                    sha256: pushed.sha256,
                    size: pushed.size,
                    stamp: Some(pushed.stamp),
                };
                if let Err(e) = self.spool.write_ack(&ack) {
                    // archive-push will push the file itself.
                    tracing::warn!("push-ahead: {name} is stored but its acknowledgement could not be written: {e}");
                    return;
                }
                self.spool.remove_error(name.as_str());
                self.retry.remove(name.as_str());
                self.status.update(|s| {
                    s.pushed += 1;
                    s.last_pushed = Some(name.to_string());
                    s.last_pushed_at = Some(SystemTime::now());
                });
            }
            Err(e) => self.failed(name.as_str(), &e),
        }
    }

    fn failed(&mut self, name: &str, error: &ArchiveError) {
        tracing::warn!(
            "push-ahead of {name} failed [{:03}]: {error}",
            error.exit_code()
        );
        let failure = Failure {
            code: error.exit_code(),
            message: error.to_string(),
        };
        if !name.is_empty() {
            if let Err(e) = self.spool.write_error(name, &failure) {
                tracing::warn!("push-ahead: cannot record the failure of {name}: {e}");
            }
            let wait = self
                .retry
                .get(name)
                .map(|(_, wait)| (*wait * 2).min(MAX_RETRY))
                .unwrap_or(FIRST_RETRY);
            self.retry
                .insert(name.to_string(), (Instant::now() + wait, wait));
        }
        self.status.update(|s| {
            s.failures += 1;
            s.last_error = Some(failure.message);
        });
    }

    /// Forget what PostgreSQL no longer waits for: acknowledgements and
    /// failures of files that are not `.ready` any more.
    fn clean_spool(&mut self, ready: &[WalName]) {
        let Ok(names) = self.spool.out_names() else {
            return;
        };
        let ready: HashSet<&str> = ready.iter().map(|n| n.as_str()).collect();
        let mut missing = HashSet::new();
        for name in names {
            if ready.contains(name.as_str()) || self.in_flight.values().any(|n| *n == name) {
                continue;
            }
            if self.missing_once.contains(&name) {
                self.spool.remove_ack(&name);
                self.spool.remove_error(&name);
                self.retry.remove(&name);
            } else {
                missing.insert(name);
            }
        }
        self.missing_once = missing;
    }

    /// Let pushes under way finish (and be acknowledged) for a moment.
    async fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    break;
                }
            }
        }
    }
}

/// Whether PostgreSQL archives, asked every [`GATE_EVERY`].
#[derive(Default)]
struct Gate {
    archives: bool,
    reason: String,
    checked: Option<Instant>,
    client: Option<tokio_postgres::Client>,
}

impl Gate {
    async fn refresh(&mut self, config: &Config) {
        if self.checked.is_some_and(|at| at.elapsed() < GATE_EVERY) {
            return;
        }
        self.checked = Some(Instant::now());
        let (archives, reason) = match self.ask(config).await {
            Ok((in_recovery, mode)) => archive_decision(in_recovery, &mode),
            Err(e) => {
                self.client = None;
                (false, format!("PostgreSQL does not answer ({e})"))
            }
        };
        self.archives = archives;
        self.reason = reason;
    }

    async fn ask(&mut self, config: &Config) -> Result<(bool, String), String> {
        let limit = Duration::from_secs(3);
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let client = tokio::time::timeout(limit, crate::postgres::probe::connect(config))
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        let client = self.client.as_ref().expect("connected above");
        let row = tokio::time::timeout(
            limit,
            client.query_one(
                "SELECT pg_is_in_recovery(), current_setting('archive_mode')",
                &[],
            ),
        )
        .await
        .map_err(|_| "the query timed out".to_string())?
        .map_err(|e| e.to_string())?;
        Ok((row.get(0), row.get(1)))
    }
}

/// PostgreSQL's own rule for running its archiver.
fn archive_decision(in_recovery: bool, archive_mode: &str) -> (bool, String) {
    match (in_recovery, archive_mode) {
        (false, "on" | "always") => (
            true,
            format!("PostgreSQL is a primary with archive_mode = {archive_mode}"),
        ),
        (true, "always") => (
            true,
            "PostgreSQL is a standby with archive_mode = always".into(),
        ),
        (true, mode) => (
            false,
            format!("PostgreSQL is a standby with archive_mode = {mode}: the primary archives"),
        ),
        (false, mode) => (false, format!("archive_mode = {mode}")),
    }
}

/// The files PostgreSQL waits to archive, in the order it archives them:
/// timeline history files first, then by name (oldest WAL first).
fn ready_files(status_dir: &Path) -> std::io::Result<Vec<WalName>> {
    let mut ready = Vec::new();
    for entry in std::fs::read_dir(status_dir)? {
        let file = entry?.file_name();
        if let Some(name) = file
            .to_str()
            .and_then(|f| f.strip_suffix(".ready"))
            .and_then(WalName::parse)
        {
            ready.push(name);
        }
    }
    ready.sort_by(|a, b| {
        let rank = |n: &WalName| n.kind() != WalKind::History;
        (rank(a), a.as_str()).cmp(&(rank(b), b.as_str()))
    });
    Ok(ready)
}

/// `pgpilot archive-ahead --config FILE` (hidden): the push-ahead worker
/// alone, in the foreground until SIGTERM or SIGINT, for machines that run
/// PostgreSQL without `pgpilot run` (and for benchmarks).
#[derive(Debug, Clone, clap::Args)]
pub struct AheadArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
}

/// Entry point of `pgpilot archive-ahead` on the runtime the binary made.
pub fn main(args: AheadArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = match Config::load(&args.config.config) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("pgpilot archive-ahead: {e}");
            return super::code::USAGE;
        }
    };
    if !config.backup.as_ref().is_some_and(|b| b.archive_async) {
        eprintln!(
            "pgpilot archive-ahead: {}: backup.archive_async is not true",
            args.config.config.display()
        );
        return super::code::USAGE;
    }
    crate::logging::set_up(&config.log.level, config.log.json);
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (stop_tx, stop_rx) = watch::channel(false);
        let status = Arc::new(AheadStatus::default());
        let worker = tokio::spawn(run(config, status, stop_rx));
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("pgpilot archive-ahead: cannot handle signals");
            return super::code::LOCAL;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        let _ = worker.await;
        super::code::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_postgres_would_archive() {
        assert!(archive_decision(false, "on").0);
        assert!(archive_decision(false, "always").0);
        assert!(archive_decision(true, "always").0);
        assert!(!archive_decision(true, "on").0);
        assert!(!archive_decision(false, "off").0);
        assert!(!archive_decision(true, "off").0);
    }

    #[test]
    fn ready_files_come_history_first_then_oldest() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "000000020000000000000005.ready",
            "000000010000000000000004.partial.ready",
            "00000002.history.ready",
            "000000010000000000000003.done",
            "000000010000000000000004.ready",
            "junk.ready",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let names: Vec<String> = ready_files(dir.path())
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "00000002.history",
                "000000010000000000000004",
                "000000010000000000000004.partial",
                "000000020000000000000005"
            ]
        );
    }
}
