//! Backups and the HA cluster: replicas created from a backup, and a
//! cluster bootstrapped from one — real etcd, PostgreSQL, the `pgpilot`
//! sidecar, a posix repository and moto's S3 server.
//!
//! - a new member with `create_replica_methods = ["backup", "basebackup"]`
//!   restores the latest backup, replays the archived WAL, then streams
//!   from the leader, with the leader's data (S3);
//! - with no backup in the repository, or a damaged one, it falls back to
//!   pg_basebackup, and nothing of the failed restore is left (posix);
//! - a new cluster (its own etcd) bootstraps from another cluster's backup
//!   to a point in time: its leader holds exactly the rows committed up to
//!   that time, takes writes, archives on a new timeline without touching
//!   the old timeline's WAL, and its replicas restore the backup across
//!   the timeline switch;
//! - a bootstrap from a backup label that does not exist fails with an
//!   error that says so, and leaves no `initialize` or leader key, no data
//!   and no PostgreSQL behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot_e2e::backup::lab::table_checksums;
use pgpilot_e2e::backup::moto::MotoServer;
use pgpilot_e2e::backup::{posix_section, run_pgpilot, s3_section, Outcome};
use pgpilot_e2e::faults::etcdctl;
use pgpilot_e2e::{wait_until, Cluster};

const READY: Duration = Duration::from_secs(180);
const BUCKET: &str = "pgpilot-cluster-e2e";

fn show(out: &Outcome) -> String {
    pgpilot_e2e::backup::lab::show(out)
}

/// A temporary posix repository: its root (removed on drop), the
/// repository path and the `[backup]` section that uses it.
fn posix_repo() -> anyhow::Result<(tempfile::TempDir, PathBuf, String)> {
    let root = tempfile::tempdir()?;
    let repo = root.path().join("repo");
    let section = posix_section(&repo, "archive_timeout = 60")?;
    Ok((root, repo, section))
}

/// A cluster of `members` with this `[backup]` section, once ready; its
/// leader's index.
async fn start_with_repo(members: usize, section: &str) -> anyhow::Result<(Cluster, usize)> {
    let cluster = Cluster::builder()
        .members(members)
        .extra_toml(&format!("\n{section}"))
        .start()
        .await?;
    let leader = cluster.wait_ready(READY).await?;
    Ok((cluster, leader))
}

/// Creates `items` with 20000 rows on member `i`.
async fn create_items(cluster: &Cluster, i: usize) -> anyhow::Result<()> {
    cluster
        .execute(
            i,
            "CREATE TABLE items (id int PRIMARY KEY, note text); \
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
        )
        .await
}

/// Member `i`'s file with `create_replica_methods = METHODS` in `[postgresql]`.
fn set_replica_methods(cluster: &Cluster, i: usize, methods: &str) -> anyhow::Result<()> {
    let member = cluster.member(i);
    let text = member.config_text().replacen(
        "[postgresql]\n",
        &format!("[postgresql]\ncreate_replica_methods = {methods}\n"),
        1,
    );
    anyhow::ensure!(
        text.contains("create_replica_methods"),
        "no [postgresql] in {text}"
    );
    member.write_config(&text)
}

/// Add a member with these replica methods and start it; its index.
fn add_replica(cluster: &mut Cluster, name: &str, methods: &str) -> anyhow::Result<usize> {
    let options = cluster.member_options(name);
    let i = cluster.add_member(options)?;
    set_replica_methods(cluster, i, methods)?;
    cluster.start_member(i)?;
    Ok(i)
}

/// `pgpilot backup` with member `i`'s configuration; the new label.
fn take_backup(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
    let config = cluster.member(i).config_path.display().to_string();
    let out = run_pgpilot(&["backup", "--config", &config])?;
    anyhow::ensure!(out.code == 0, "backup failed: {}", show(&out));
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("new backup label = "))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no label printed: {}", show(&out)))
}

/// Switch WAL on member `i` and wait until that segment is archived.
async fn switch_and_archive(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
    let segment = cluster
        .query_one(i, "SELECT pg_walfile_name(pg_switch_wal())")
        .await?;
    wait_until(
        &format!("{segment} archived"),
        Duration::from_secs(90),
        async || {
            let rows = cluster
                .query_strings(
                    i,
                    "SELECT COALESCE(last_archived_wal, ''), failed_count::text FROM pg_stat_archiver",
                )
                .await?;
            let (last, failed) = (&rows[0][0], &rows[0][1]);
            anyhow::ensure!(
                last.as_str() >= segment.as_str() && last.len() == 24,
                "last archived {last:?}, {failed} failures"
            );
            Ok(())
        },
    )
    .await
    .map_err(|e| cluster.with_logs(e))?;
    Ok(segment)
}

/// Per-table checksums of member `i`'s public tables.
async fn checksums(cluster: &Cluster, i: usize) -> anyhow::Result<BTreeMap<String, String>> {
    let client = pgpilot_e2e::sql::connect(cluster.member(i).pg_port).await?;
    table_checksums(&client).await
}

/// Write a marker on the leader, wait until member `i` has it, then
/// compare every table.
async fn assert_same_data(cluster: &Cluster, leader: usize, i: usize) -> anyhow::Result<()> {
    let marker = format!("marker-{}", cluster.member(i).name);
    cluster
        .execute(
            leader,
            &format!(
                "CREATE TABLE IF NOT EXISTS markers (note text); INSERT INTO markers VALUES ('{marker}')"
            ),
        )
        .await?;
    cluster
        .wait_value(
            i,
            &format!("SELECT count(*)::text FROM markers WHERE note = '{marker}'"),
            "1",
            Duration::from_secs(60),
        )
        .await?;
    let (on_leader, on_replica) = (
        checksums(cluster, leader).await?,
        checksums(cluster, i).await?,
    );
    assert_eq!(on_leader, on_replica, "data of {}", cluster.member(i).name);
    Ok(())
}

/// Every file under `dir` (relative path → size).
fn files(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) => {
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    out.insert(rel.display().to_string(), m.len());
                }
                Err(_) => {}
            }
        }
    }
    out
}

/// The WAL objects of one timeline in a posix repository (`archive/...`
/// keys whose file name starts with the timeline in hex).
fn timeline_objects(repo: &Path, timeline: u32) -> BTreeMap<String, u64> {
    let prefix = format!("{timeline:08X}");
    files(&repo.join(pgpilot_e2e::SCOPE).join("archive"))
        .into_iter()
        .filter(|(k, _)| {
            Path::new(k)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

// --- (a) a replica from the latest backup (S3) --------------------------------

#[tokio::test]
async fn s3_new_replica_is_created_from_the_latest_backup_and_streams() -> anyhow::Result<()> {
    let moto_dir = tempfile::tempdir()?;
    let moto = MotoServer::start(moto_dir.path())?;
    moto.create_bucket(BUCKET).await?;
    let section = s3_section(&moto, BUCKET, "replicas", "archive_timeout = 60");
    let (mut cluster, leader) = start_with_repo(3, &section).await?;
    create_items(&cluster, leader).await?;
    let label = take_backup(&cluster, leader)?;
    // Changes after the backup reach the new replica through the archive.
    cluster
        .execute(
            leader,
            "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(20001, 40000) g; \
             UPDATE items SET note = 'changed' WHERE id % 10 = 0",
        )
        .await?;
    let archived = switch_and_archive(&cluster, leader).await?;

    let m4 = add_replica(&mut cluster, "m4", r#"["backup", "basebackup"]"#)?;
    cluster.wait_streaming_to(leader, m4, READY).await?;
    cluster.wait_ready(READY).await?;
    let log = cluster.member(m4).log();
    assert!(
        log.contains(&format!("replica created from backup {label}")),
        "m4 was not created from backup {label}:\n{}",
        cluster.logs(60)
    );
    assert!(!log.contains("cloning with pg_basebackup"), "{log}");
    // It replayed WAL from the archive (past the backup) before streaming.
    let pg_log = std::fs::read_to_string(&cluster.member(m4).pg_log_path)?;
    assert!(
        pg_log.contains(&format!("restored log file \"{archived}\" from archive")),
        "m4 did not replay {archived} from the archive:\n{pg_log}"
    );
    assert_same_data(&cluster, leader, m4).await?;
    Ok(())
}

// --- (b) falling back to pg_basebackup (posix) --------------------------------

#[tokio::test]
async fn posix_replica_falls_back_to_basebackup_without_a_usable_backup() -> anyhow::Result<()> {
    let (_root, repo, section) = posix_repo()?;
    let (mut cluster, leader) = start_with_repo(2, &section).await?;
    create_items(&cluster, leader).await?;
    let methods = r#"["backup", "basebackup"]"#;

    // No backup at all yet.
    let m3 = add_replica(&mut cluster, "m3", methods)?;
    cluster.wait_streaming_to(leader, m3, READY).await?;
    let log = cluster.member(m3).log();
    assert!(
        log.contains("cannot create the replica with method backup")
            && log.contains("the repository holds no complete backup"),
        "{log}"
    );
    assert!(log.contains("replica created with pg_basebackup"), "{log}");
    assert_same_data(&cluster, leader, m3).await?;

    // A backup with one flipped byte in a data part.
    let label = take_backup(&cluster, leader)?;
    let data = repo
        .join(pgpilot_e2e::SCOPE)
        .join("backup")
        .join(&label)
        .join("data");
    let part: PathBuf = std::fs::read_dir(&data)?
        .flatten()
        .map(|e| e.path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .ok_or_else(|| anyhow::anyhow!("no data part in {}", data.display()))?;
    let mut bytes = std::fs::read(&part)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&part, bytes)?;

    let m4 = add_replica(&mut cluster, "m4", methods)?;
    cluster.wait_streaming_to(leader, m4, READY).await?;
    cluster.wait_ready(READY).await?;
    let log = cluster.member(m4).log();
    assert!(
        log.contains("cannot create the replica with method backup")
            && log.contains(&format!("backup {label} is damaged")),
        "{log}"
    );
    assert!(log.contains("replica created with pg_basebackup"), "{log}");
    assert_same_data(&cluster, leader, m4).await?;
    Ok(())
}

/// A backup that restores but from which PostgreSQL does not start (its
/// postgresql.auto.conf names a parameter PostgreSQL does not know): the
/// data directory is emptied and the next method makes the replica.
#[tokio::test]
async fn posix_replica_that_does_not_start_from_a_backup_falls_back_to_basebackup(
) -> anyhow::Result<()> {
    let (_root, _repo, section) = posix_repo()?;
    let (mut cluster, leader) = start_with_repo(2, &section).await?;
    create_items(&cluster, leader).await?;
    let auto = cluster.member(leader).data_dir.join("postgresql.auto.conf");
    let original = std::fs::read_to_string(&auto)?;
    std::fs::write(&auto, format!("{original}no_such_setting = 1\n"))?;
    let label = take_backup(&cluster, leader);
    std::fs::write(&auto, &original)?;
    let label = label?;

    let m3 = add_replica(&mut cluster, "m3", r#"["backup", "basebackup"]"#)?;
    cluster
        .wait_streaming_to(leader, m3, READY)
        .await
        .map_err(|e| cluster.with_logs(e))?;
    let log = cluster.member(m3).log();
    assert!(
        log.contains(&format!("replica created from backup {label}")),
        "{log}"
    );
    assert!(
        log.contains("the replica created with method backup does not start")
            && log.contains("creating it again with method basebackup"),
        "{log}"
    );
    assert!(log.contains("replica created with pg_basebackup"), "{log}");
    assert_same_data(&cluster, leader, m3).await?;
    Ok(())
}

// --- (c) a new cluster from a backup, to a point in time ----------------------

#[tokio::test]
async fn posix_cluster_bootstraps_from_a_backup_to_a_point_in_time() -> anyhow::Result<()> {
    let (_root, repo, section) = posix_repo()?;

    // Cluster A: rows one transaction each, a backup after row 3, the
    // target time between rows 7 and 8.
    let (a, a_leader) = start_with_repo(1, &section).await?;
    a.execute(a_leader, "CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    let insert = async |id: u32| {
        a.execute(a_leader, &format!("INSERT INTO t VALUES ({id})"))
            .await
    };
    for id in 1..=3 {
        insert(id).await?;
    }
    let label = take_backup(&a, a_leader)?;
    let mut target_time = String::new();
    for id in 4..=10 {
        insert(id).await?;
        if id == 7 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            target_time = a
                .query_one(a_leader, "SELECT clock_timestamp()::text")
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    switch_and_archive(&a, a_leader).await?;
    let old_timeline = timeline_objects(&repo, 1);
    assert!(!old_timeline.is_empty(), "nothing archived on timeline 1");

    // Cluster B: its own etcd and data directories, the same repository and stanza.
    let b_toml = format!(
        "\n{section}\n[bootstrap_from]\nmethod = \"backup\"\ntarget_time = \"{target_time}\"\n"
    );
    let mut b = Cluster::builder()
        .members(0)
        .extra_toml(&b_toml)
        .start()
        .await?;
    let options = b.member_options("m1");
    let b1 = b.add_member(options)?;
    b.start_member(b1)?;
    let b_leader = b.wait_leader(READY).await?;
    assert_eq!(b_leader, b1);
    // It answers as primary once promoted; the bootstrap ends after a clean restart.
    wait_until("B's bootstrap to end", READY, async || {
        anyhow::ensure!(
            b.member(b1).log().contains("cluster bootstrapped"),
            "not yet"
        );
        Ok(())
    })
    .await
    .map_err(|e| b.with_logs(e))?;
    let log = b.member(b1).log();
    assert!(
        log.contains("creating the cluster from a backup") && log.contains(&label),
        "{log}"
    );
    assert_eq!(
        b.query_one(b1, "SELECT array_agg(id ORDER BY id)::text FROM t")
            .await?,
        "{1,2,3,4,5,6,7}",
        "rows committed at or before {target_time}"
    );
    b.execute(b1, "INSERT INTO t VALUES (100)").await?;
    let timeline: u32 = b
        .query_one(b1, "SELECT timeline_id::text FROM pg_control_checkpoint()")
        .await?
        .parse()?;
    assert!(timeline >= 2, "B runs on timeline {timeline}");
    // The recovery target is gone from B's files (a clone must not stop there).
    let auto = std::fs::read_to_string(b.member(b1).data_dir.join("postgresql.auto.conf"))?;
    assert!(
        !auto.lines().any(|l| l.starts_with("recovery_target")),
        "{auto}"
    );
    // The history file of the new timeline reaches the repository.
    let history = format!("{timeline:08X}.history");
    wait_until(
        &format!("{history} in the repository"),
        Duration::from_secs(60),
        async || {
            let objects = timeline_objects(&repo, timeline);
            anyhow::ensure!(
                objects.keys().any(|k| k.starts_with(&history)),
                "timeline {timeline} objects: {objects:?}"
            );
            Ok(())
        },
    )
    .await?;

    // B's replicas restore A's backup and follow it onto B's timeline.
    for name in ["m2", "m3"] {
        add_replica(&mut b, name, r#"["backup", "basebackup"]"#)?;
    }
    b.wait_ready(READY).await?;
    for i in [1, 2] {
        let log = b.member(i).log();
        assert!(
            log.contains(&format!("replica created from backup {label}")),
            "{} was not created from the backup:\n{}",
            b.member(i).name,
            b.logs(60)
        );
        assert_same_data(&b, b1, i).await?;
    }

    // B archives on its own timeline; timeline 1's objects are untouched
    // (the only new ones there are the .partial segment of the switch).
    let segment = switch_and_archive(&b, b1).await?;
    assert!(segment.starts_with(&format!("{timeline:08X}")), "{segment}");
    assert!(
        timeline_objects(&repo, timeline)
            .keys()
            .any(|k| k.contains(&segment)),
        "{segment} not stored"
    );
    let now_old = timeline_objects(&repo, 1);
    for (key, size) in &old_timeline {
        assert_eq!(now_old.get(key), Some(size), "{key} changed or vanished");
    }
    for key in now_old.keys().filter(|k| !old_timeline.contains_key(*k)) {
        assert!(key.contains(".partial"), "B wrote {key} on timeline 1");
    }
    // A goes on archiving its own timeline into the same stanza.
    a.execute(a_leader, "INSERT INTO t VALUES (11)").await?;
    switch_and_archive(&a, a_leader).await?;
    Ok(())
}

// --- (d) a bootstrap from a backup that does not exist -------------------------

#[tokio::test]
async fn posix_bootstrap_from_a_missing_backup_fails_cleanly() -> anyhow::Result<()> {
    let (_root, repo, section) = posix_repo()?;
    // A repository with one real backup.
    let (a, a_leader) = start_with_repo(1, &section).await?;
    let label = take_backup(&a, a_leader)?;
    drop(a);

    let c_toml =
        format!("\n{section}\n[bootstrap_from]\nmethod = \"backup\"\nset = \"20200101-000000F\"\n");
    let c = Cluster::builder()
        .members(1)
        .extra_toml(&c_toml)
        .start()
        .await?;
    let member = c.member(0);
    // It fails once, then waits for an operator: the same backup and
    // target would fail the same way (and each attempt would fetch the
    // backup again), so it is not retried until pgpilot restarts.
    let waiting = "fix [bootstrap_from] and restart pgpilot to try again";
    wait_until(
        "the bootstrap to fail, then three cycles waiting for an operator",
        Duration::from_secs(120),
        async || {
            let log = member.log();
            let failures = log.matches("bootstrap failed").count();
            anyhow::ensure!(failures >= 1, "no failure yet");
            let cycles = log.matches(waiting).count();
            anyhow::ensure!(cycles >= 3, "{cycles} cycles waiting so far");
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;
    let log = member.log();
    assert_eq!(
        log.matches("bootstrap failed").count(),
        1,
        "the bootstrap was tried again:\n{log}"
    );
    let wanted = format!(
        "bootstrap from a backup in repository {} (stanza {}): no complete backup is labelled \"20200101-000000F\"",
        repo.display(),
        pgpilot_e2e::SCOPE
    );
    assert!(log.contains(&wanted), "no {wanted:?} in:\n{log}");
    assert!(!log.contains(&format!("restoring backup {label}")), "{log}");

    let (status, in_time) = member.terminate_sidecar(Duration::from_secs(20)).await;
    assert!(in_time, "the sidecar did not stop: {status:?}");
    let endpoint = c.etcd().endpoint();
    let key = |k: &str| format!("/pgpilot/{}/{k}", pgpilot_e2e::SCOPE);
    assert_eq!(etcdctl::get(&endpoint, &key("initialize")).await?, None);
    assert_eq!(etcdctl::get(&endpoint, &key("leader")).await?, None);
    assert_eq!(member.postmaster_pid(), None);
    let left = files(&member.data_dir);
    assert!(left.is_empty(), "left in the data directory: {left:?}");
    assert!(
        !member
            .data_dir
            .with_extension("pgpilot-incomplete")
            .exists(),
        "the creation marker is left"
    );
    Ok(())
}
