//! Invariant 4 ("no WAL is lost by archiving") under kills: a real
//! PostgreSQL 15 archives through `pgpilot archive-push` in async mode into
//! a posix repository while `pgpilot archive-ahead` pushes ahead; a killer
//! SIGKILLs the push-ahead worker (and starts it again) and archive-push
//! calls at random points of their work, while segments are switched.
//!
//! Afterwards every segment PostgreSQL counts as archived (archive-push
//! exited 0) and every acknowledgement the worker wrote in the spool must
//! name an object that is in the repository, decompresses, and holds the
//! bytes of that segment as PostgreSQL wrote it (compared with pg_wal,
//! which keeps every segment here); the archive has no gap and no segment
//! stored twice. The seed is printed: `PGPILOT_KILL_SEED` replays a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgpilot::archive::spool::{Ack, Spool};
use pgpilot::archive::wal;
use pgpilot::repo::Storage;
use pgpilot_e2e::backup::archiver::{
    archiver, assert_no_gap, start_push_ahead, switch_segment, wait_archived,
};
use pgpilot_e2e::backup::lab;
use pgpilot_e2e::backup::standalone::Standalone;

/// Segments switched while the killer runs.
const SEGMENTS: usize = 24;

/// A small xorshift generator: the run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("PGPILOT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// Pids of the `pgpilot archive-push` calls of this test's configuration.
fn push_calls(config: &Path) -> Vec<i32> {
    let config = config.display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.iter().any(|a| a == "archive-push") && args.contains(&config)
            })
        })
        .collect()
}

fn kill(pid: i32) -> bool {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

#[derive(Default)]
struct Killed {
    workers: AtomicU64,
    calls: AtomicU64,
    calls_seen: AtomicU64,
}

/// Until `stop`: SIGKILL the worker every 0.5-4 s (it starts, connects
/// to PostgreSQL and pushes for a while) and start it again 0-200 ms later;
/// SIGKILL one archive-push call in two, 0-300 ms after it is seen
/// (reading, hashing, compressing, storing, checking or waiting for the
/// worker).
fn killer(
    config: PathBuf,
    log: PathBuf,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    killed: Arc<Killed>,
    worker: Arc<Mutex<Option<Child>>>,
) {
    let mut next_worker_kill = Instant::now() + Duration::from_millis(500 + rng.below(3500));
    let mut seen = std::collections::HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        for pid in push_calls(&config) {
            if !seen.insert(pid) {
                continue;
            }
            killed.calls_seen.fetch_add(1, Ordering::Relaxed);
            if rng.below(2) != 0 {
                continue;
            }
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            if kill(pid) {
                killed.calls.fetch_add(1, Ordering::Relaxed);
            }
        }
        if Instant::now() >= next_worker_kill {
            let mut slot = worker.lock().unwrap();
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
                killed.workers.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
            std::thread::sleep(Duration::from_millis(rng.below(200)));
            *worker.lock().unwrap() = start_push_ahead(&config, &log).ok();
            next_worker_kill = Instant::now() + Duration::from_millis(500 + rng.below(3500));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every acknowledgement seen in the spool's `out/` until `stop`.
fn watch_acks(spool: Spool, stop: Arc<AtomicBool>, seen: Arc<Mutex<BTreeMap<String, Ack>>>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(names) = spool.out_names() {
            for name in names {
                if let Some(ack) = spool.read_ack(&name) {
                    seen.lock()
                        .unwrap()
                        .insert(format!("{}#{}", name, ack.sha256), ack);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// The object under `key` decompresses to bytes whose SHA-256 is `sha`.
async fn assert_intact(storage: &dyn Storage, key: &str, sha: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = storage
        .get(key)
        .await
        .map_err(|e| anyhow::anyhow!("{key} is not in the repository: {e}"))?
        .into_bytes(key, 64 << 20)
        .await?;
    let data = wal::decompress(&bytes).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    let got = wal::sha256_hex(&data);
    anyhow::ensure!(got == sha, "{key} holds bytes hashing to {got}");
    Ok(data)
}

#[tokio::test]
async fn acknowledged_segments_survive_kills_of_the_worker_and_the_calls() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("PGPILOT_KILL_SEED={seed}");
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let repo = root.join("repo");
    let backup =
        pgpilot_e2e::backup::posix_section(&repo, "archive_async = true\narchive_timeout = 20")?;
    let server = Standalone::init(root, "pg")?;
    let config = root.join("pg.toml");
    lab::write_config(&config, &server, &backup)?;
    server.configure(&[
        ("archive_mode", "on".into()),
        (
            "archive_command",
            format!(
                "'{} archive-push --config {} %p'",
                pgpilot_e2e::pgpilot_bin()?.display(),
                config.display()
            ),
        ),
        ("wal_level", "replica".into()),
        // Every segment stays in pg_wal, to compare the stored copies with.
        ("max_wal_size", "'4GB'".into()),
        ("checkpoint_timeout", "'1h'".into()),
        ("wal_keep_size", "'1GB'".into()),
    ])?;
    server.start()?;
    let (member, backup_section) =
        pgpilot::repo::config::BackupSection::load(&config).map_err(anyhow::Error::msg)?;
    let storage = pgpilot::repo::open(&backup_section)?;
    let spool = Spool::new(&member, &backup_section).map_err(anyhow::Error::msg)?;
    let client = server.connect().await?;
    let worker_log = root.join("ahead.log");
    let worker = Arc::new(Mutex::new(Some(start_push_ahead(&config, &worker_log)?)));
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(Killed::default());
    let acks = Arc::new(Mutex::new(BTreeMap::new()));
    let killer_thread = {
        let (config, log, stop, killed, worker) = (
            config.clone(),
            worker_log.clone(),
            stop.clone(),
            killed.clone(),
            worker.clone(),
        );
        std::thread::spawn(move || killer(config, log, Rng(seed), stop, killed, worker))
    };
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (spool, stop, acks) = (spool.clone(), watching.clone(), acks.clone());
        std::thread::spawn(move || watch_acks(spool, stop, acks))
    };
    let with_logs = |e: anyhow::Error| {
        e.context(format!(
            "seed {seed}\n--- postgres ---\n{}\n--- worker ---\n{}",
            pgpilot_e2e::file_tail(server.log(), 40),
            pgpilot_e2e::file_tail(&worker_log, 40)
        ))
    };

    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut last = String::new();
    for _ in 0..SEGMENTS {
        last = switch_segment(&client).await?;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
    }
    // The kills go on while PostgreSQL archives most of the burst (at most
    // two minutes), then stop.
    let killing = Instant::now();
    while killing.elapsed() < Duration::from_secs(120)
        && archiver(&client).await?.archived < SEGMENTS as i64 - 3
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = killer_thread.join();
    // With the worker alive (or not), every segment gets archived.
    let state = wait_archived(&client, &last, Duration::from_secs(240))
        .await
        .map_err(with_logs)?;
    watching.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let killed_workers = killed.workers.load(Ordering::Relaxed);
    let killed_calls = killed.calls.load(Ordering::Relaxed);
    eprintln!(
        "{SEGMENTS} segments; killed the worker {killed_workers} times and {killed_calls} of \
         {} archive-push calls seen; archiver {state:?}",
        killed.calls_seen.load(Ordering::Relaxed)
    );
    if let Some(mut child) = worker.lock().unwrap().take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        killed_workers >= 3,
        "the worker was killed {killed_workers} times"
    );

    // Every segment once, no gap; each stored copy is the segment's bytes.
    let names = assert_no_gap(&*storage, &last).await.map_err(with_logs)?;
    let layout = pgpilot::repo::layout::Layout::new(pgpilot_e2e::SCOPE);
    let mut by_name = BTreeMap::new();
    for meta in storage
        .list(&format!("{}/archive/", pgpilot_e2e::SCOPE))
        .await?
    {
        if let Some((name, sha)) = layout.parse_wal_key(&meta.key) {
            by_name.insert(name.to_string(), (meta.key, sha));
        }
    }
    for name in &names {
        let (key, sha) = &by_name[name];
        let stored = assert_intact(&*storage, key, sha)
            .await
            .map_err(with_logs)?;
        let local = std::fs::read(server.data_dir().join("pg_wal").join(name))?;
        assert!(
            stored == local,
            "{key} does not hold the bytes of pg_wal/{name} (seed {seed})"
        );
    }

    // Every acknowledgement the worker wrote names one of those objects.
    let acks = acks.lock().unwrap().clone();
    eprintln!("{} acknowledgements seen", acks.len());
    assert!(
        !acks.is_empty(),
        "the worker never acknowledged a segment (seed {seed}):\n{}",
        pgpilot_e2e::file_tail(&worker_log, 40)
    );
    for ack in acks.values() {
        let (key, sha) = by_name
            .get(&ack.wal)
            .ok_or_else(|| anyhow::anyhow!("{} acknowledged but not stored", ack.wal))?;
        assert_eq!(&ack.key, key, "seed {seed}");
        assert_eq!(&ack.sha256, sha, "seed {seed}");
    }
    let archived = archiver(&client).await?;
    assert!(archived.archived >= SEGMENTS as i64, "{archived:?}");
    Ok(())
}
