//! Async WAL archiving (`backup.archive_async`) against real parts: the
//! real `pgpilot` binary, real PostgreSQL 15 servers, a posix repository
//! and moto's S3 server on loopback.
//!
//! - a running sidecar pushes ready segments ahead: every segment is
//!   stored with no gap, `archive_status` is drained, PostgreSQL's
//!   archive-push calls are answered from the acknowledgements, and the
//!   spool empties once the segments are `.done`;
//! - the worker alone (`pgpilot archive-ahead`) through an S3 outage:
//!   archive-push fails, `failed_count` grows, the worker records the
//!   failures; after the outage no gap. With the worker killed,
//!   archive-push stores every segment itself; a forged acknowledgement
//!   (other bytes, same size) is not trusted;
//! - archive-get prefetch during a restore: every segment is replayed,
//!   most from the prefetch queue, and the data match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use pgpilot::archive::spool::{Ack, Spool};
use pgpilot::repo::Storage;
use pgpilot_e2e::backup::archiver::{archiver, assert_no_gap, switch_segment, wait_archived};
use pgpilot_e2e::backup::lab::{self, table_checksums, Lab, RepoKind};
use pgpilot_e2e::backup::moto::MotoServer;
use pgpilot_e2e::backup::standalone::{give_to_postgres, Standalone};
use pgpilot_e2e::cluster::Cluster;
use pgpilot_e2e::wait_until;

const BUCKET: &str = "pgpilot-async-e2e";

/// The repository and spool a member configuration file points at.
fn open(config: &Path) -> anyhow::Result<(std::sync::Arc<dyn Storage>, Spool)> {
    let (config, backup) =
        pgpilot::repo::config::BackupSection::load(config).map_err(anyhow::Error::msg)?;
    let spool = Spool::new(&config, &backup).map_err(anyhow::Error::msg)?;
    Ok((pgpilot::repo::open(&backup)?, spool))
}

/// `.ready` files in a data directory's archive_status.
fn ready_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("pg_wal/archive_status"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.ends_with(".ready"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn occurrences(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Files in `<spool>/out`.
fn spool_out(spool: &Spool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool.out_dir())
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

// --- the sidecar pushes ahead ------------------------------------------------

#[tokio::test]
async fn the_sidecar_pushes_ahead_and_archive_push_answers_from_its_acknowledgements(
) -> anyhow::Result<()> {
    let repo_root = tempfile::tempdir()?;
    std::fs::set_permissions(
        repo_root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let repo = repo_root.path().join("repo");
    std::fs::create_dir(&repo)?;
    give_to_postgres(&repo)?;
    let backup = format!(
        "\n[backup]\nrepository = \"posix\"\narchive_async = true\narchive_timeout = 30\n\
         [backup.posix]\npath = \"{}\"\n",
        repo.display()
    );
    let cluster = Cluster::builder()
        .members(1)
        .extra_toml(&backup)
        .start()
        .await?;
    let leader = cluster.wait_ready(Duration::from_secs(120)).await?;
    let member = cluster.member(leader);
    let (storage, spool) = open(&member.config_path)?;
    let client = pgpilot_e2e::sql::connect(member.pg_port).await?;

    let mut last = String::new();
    let switches = 30;
    for _ in 0..switches {
        last = switch_segment(&client).await?;
    }
    let done = wait_archived(&client, &last, Duration::from_secs(240))
        .await
        .map_err(|e| cluster.with_logs(e))?;
    wait_until(
        "archive_status drained",
        Duration::from_secs(60),
        async || {
            let ready = ready_files(&member.data_dir);
            anyhow::ensure!(ready.is_empty(), "still ready: {ready:?}");
            Ok(())
        },
    )
    .await?;
    let names = assert_no_gap(&*storage, &last).await?;
    assert_eq!(done.failed, 0, "{done:?}");

    // PostgreSQL's archive-push found the sidecar's acknowledgements.
    let answered = occurrences(&member.pg_log_path, "stored ahead by the sidecar");
    let pushed_here = occurrences(&member.pg_log_path, "pushing it here");
    eprintln!(
        "{} segments stored; {answered} archive-push calls answered from acknowledgements, \
         {pushed_here} pushed by the command itself",
        names.len()
    );
    assert!(
        answered >= switches / 2,
        "only {answered} of {switches} calls used an acknowledgement:\n{}",
        member.pg_log_tail(40)
    );
    assert!(member.log().contains("push-ahead worker active"));

    // Acknowledgements go once PostgreSQL marked the segments done.
    wait_until("the spool drained", Duration::from_secs(30), async || {
        let left = spool_out(&spool);
        anyhow::ensure!(left.is_empty(), "left in the spool: {left:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

// --- the worker alone: an outage, then no worker -----------------------------

/// `pgpilot archive-ahead`, killed by pid when dropped.
struct Worker {
    child: Option<Child>,
}

impl Worker {
    fn start(config: &Path, log: &Path) -> anyhow::Result<Worker> {
        let child = pgpilot_e2e::backup::archiver::start_push_ahead(config, log)?;
        Ok(Worker { child: Some(child) })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory, kept when `PGPILOT_KEEP_TEST_DIR` is set.
fn test_dir() -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let dir = tempfile::tempdir()?;
    if pgpilot_e2e::keep_test_dir() {
        let kept = dir.keep();
        eprintln!("keeping {}", kept.display());
        return Ok((None, kept));
    }
    let path = dir.path().to_path_buf();
    Ok((Some(dir), path))
}

#[tokio::test]
async fn the_worker_through_an_s3_outage_then_without_the_worker() -> anyhow::Result<()> {
    let (_dir, root) = test_dir()?;
    let root = root.as_path();
    let moto = MotoServer::start(root)?;
    moto.create_bucket(BUCKET).await?;
    let backup = format!(
        r#"[backup]
repository = "s3"
archive_async = true
archive_timeout = 4
[backup.s3]
endpoint = "{endpoint}"
uri_style = "path"
region = "us-east-1"
bucket = "{BUCKET}"
prefix = "async"
access_key = "testing"
secret_key = "testing"
connect_timeout = 2
read_timeout = 2
max_attempts = 2
"#,
        endpoint = moto.endpoint()
    );
    let server = Standalone::init(root, "pg")?;
    let config = root.join("pg.toml");
    lab::write_config(&config, &server, &backup)?;
    let command = format!(
        "'{} archive-push --config {} %p'",
        pgpilot_e2e::pgpilot_bin()?.display(),
        config.display()
    );
    server.configure(&[
        ("archive_mode", "on".into()),
        ("archive_command", command),
        ("wal_level", "replica".into()),
    ])?;
    server.start()?;
    let (storage, spool) = open(&config)?;
    let mut worker = Worker::start(&config, &root.join("ahead.log"))?;
    let client = server.connect().await?;
    let with_logs = |e: anyhow::Error| {
        e.context(format!(
            "--- postgres ---\n{}\n--- worker ---\n{}",
            pgpilot_e2e::file_tail(server.log(), 40),
            pgpilot_e2e::file_tail(&root.join("ahead.log"), 40)
        ))
    };

    // Healthy: the worker pushes ahead.
    let mut last = String::new();
    for _ in 0..4 {
        last = switch_segment(&client).await?;
    }
    let before = wait_archived(&client, &last, Duration::from_secs(120))
        .await
        .map_err(with_logs)?;
    assert!(occurrences(server.log(), "stored ahead by the sidecar") >= 1);

    // S3 frozen: archive-push fails, PostgreSQL keeps the WAL, the worker
    // records why.
    moto.pause();
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(switch_segment(&client).await?);
    }
    let failing = wait_until(
        "archive-push failures",
        Duration::from_secs(90),
        async || {
            let state = archiver(&client).await?;
            anyhow::ensure!(state.failed >= before.failed + 2, "archiver: {state:?}");
            Ok(state)
        },
    )
    .await;
    let recorded = spool_out(&spool);
    let kept = ready_files(server.data_dir());
    moto.resume();
    let failing = failing.map_err(with_logs)?;
    assert!(
        kept.contains(&format!("{}.ready", during[0])),
        "{} not kept: {kept:?}",
        during[0]
    );
    assert!(
        recorded.iter().any(|f| f.ends_with(".error")),
        "no failure recorded in the spool: {recorded:?}"
    );
    assert_eq!(failing.last_archived, before.last_archived, "{failing:?}");
    assert_eq!(failing.archived, before.archived, "{failing:?}");

    // S3 is back: everything is archived, with no gap.
    for _ in 0..2 {
        last = switch_segment(&client).await?;
    }
    wait_archived(&client, &last, Duration::from_secs(180))
        .await
        .map_err(with_logs)?;
    assert_no_gap(&*storage, &last).await?;

    // No worker: archive-push stores each segment itself.
    worker.kill();
    let answered = occurrences(server.log(), "stored ahead by the sidecar");
    let mut alone = Vec::new();
    for _ in 0..3 {
        alone.push(switch_segment(&client).await?);
    }
    wait_archived(&client, alone.last().unwrap(), Duration::from_secs(120))
        .await
        .map_err(with_logs)?;
    assert_eq!(
        occurrences(server.log(), "stored ahead by the sidecar"),
        answered
    );
    for segment in &alone {
        assert!(
            occurrences(server.log(), &format!("archived {segment} (")) == 1,
            "{segment} was not stored by archive-push:\n{}",
            pgpilot_e2e::file_tail(server.log(), 30)
        );
    }

    // A forged acknowledgement (same size, other bytes) is not trusted.
    // (Some WAL first: at a segment boundary pg_walfile_name names the
    // previous segment.)
    client
        .batch_execute("INSERT INTO filler VALUES (0, 'x')")
        .await?;
    let current: String = client
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await?
        .get(0);
    let forged_sha = "0".repeat(64);
    let wal = pgpilot::repo::layout::WalName::parse(&current).unwrap();
    spool.write_ack(&Ack {
        wal: current.clone(),
        repository: pgpilot::archive::async_push::repository_id(
            &pgpilot::repo::config::BackupSection::load(&config)
                .map_err(anyhow::Error::msg)?
                .1,
            pgpilot_e2e::SCOPE,
        ),
        key: pgpilot::repo::layout::Layout::new(pgpilot_e2e::SCOPE).wal_key(&wal, &forged_sha),
        sha256: forged_sha.clone(),
        size: 16 << 20,
        stamp: None,
    })?;
    let switched = switch_segment(&client).await?;
    assert_eq!(switched, current);
    wait_archived(&client, &current, Duration::from_secs(120))
        .await
        .map_err(with_logs)?;
    assert!(
        occurrences(server.log(), "acknowledgement does not match this file") >= 1,
        "{}",
        pgpilot_e2e::file_tail(server.log(), 30)
    );
    let keys: Vec<String> = storage
        .list(&format!("{}/archive/", pgpilot_e2e::SCOPE))
        .await?
        .into_iter()
        .map(|m| m.key)
        .filter(|k| k.contains(&current))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(&forged_sha), "{keys:?}");
    assert_no_gap(&*storage, &current).await?;
    Ok(())
}

// --- archive-get prefetch ----------------------------------------------------

#[tokio::test]
async fn a_restore_replays_from_the_prefetch_queue() -> anyhow::Result<()> {
    let mut lab = Lab::start(
        RepoKind::Posix,
        "archive_async = true\narchive_get_queue = 4\nparallelism = 2",
    )
    .await?;
    let client = lab.server.connect().await?;
    client
        .batch_execute("CREATE TABLE rows (id int PRIMARY KEY, t text)")
        .await?;
    lab.backup(&[])?;
    let segments = 14;
    for n in 0..segments {
        client
            .batch_execute(&format!(
                "INSERT INTO rows SELECT g, md5(g::text) FROM generate_series({}, {}) g",
                n * 1000,
                n * 1000 + 999
            ))
            .await?;
        lab.switch_and_archive().await?;
    }
    let expected: BTreeMap<String, String> = table_checksums(&client).await?;

    let index = lab.restore_and_start("restored", &[]).await?;
    let restored = lab.restored(index);
    let got = table_checksums(&restored.connect().await?).await?;
    assert_eq!(got, expected);

    let log = restored.log().to_path_buf();
    let hits = occurrences(&log, "restored from the prefetch queue");
    eprintln!("{hits} of about {segments} segments came from the prefetch queue");
    assert!(
        hits >= segments as usize / 2,
        "{hits} hits:\n{}",
        pgpilot_e2e::file_tail(&log, 40)
    );
    let (_, spool) = open(&lab.config)?;
    let prefetch_log = std::fs::read_to_string(spool.prefetch_log())?;
    assert!(
        prefetch_log.contains("prefetcher started"),
        "{prefetch_log}"
    );

    // Recovery is over: the prefetcher empties its queue and exits.
    wait_until(
        "the prefetcher to exit",
        Duration::from_secs(60),
        async || {
            anyhow::ensure!(!spool.prefetcher_running(), "still running");
            Ok(())
        },
    )
    .await?;
    assert!(spool.queued()?.is_empty(), "{:?}", spool.queued()?);
    Ok(())
}
