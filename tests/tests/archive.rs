//! The backup repository and WAL archiving, against real parts: moto's S3
//! server on loopback, a posix directory, the real `pgpilot` binary, and a
//! real PostgreSQL 15 whose archive_command is `pgpilot archive-push`.
//!
//! - the storage conformance suite passes on S3 (and on posix);
//! - a duplicate push with the same content exits 0; with different content
//!   it exits 45 and the stored object is untouched;
//! - archive-get of a missing segment exits 1 quietly;
//! - another cluster pointed at the repository is refused, nothing written;
//! - an unreachable repository makes archive-push fail within
//!   `backup.archive_timeout`;
//! - PostgreSQL archiving through an outage (S3 frozen, posix unwritable):
//!   pushes fail and `pg_stat_archiver.failed_count` grows; once the
//!   repository is back every segment is stored, with no gap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot::repo::s3::{S3Settings, S3Storage};
use pgpilot::repo::{ErrorKind, PutMode, Storage};
use pgpilot_e2e::backup::archiver::{archiver, assert_no_gap, switch_segment, wait_archived};
use pgpilot_e2e::backup::moto::MotoServer;
use pgpilot_e2e::backup::standalone::{give_to_postgres, Standalone};
use pgpilot_e2e::backup::{fake_data_dir, fake_segment, run_pgpilot, write_member_config, Outcome};
use pgpilot_e2e::wait_until;

const SYSID: u64 = 7_400_000_000_000_000_001;
const SEG: &str = "000000010000000000000003";
const BUCKET: &str = "pgpilot-e2e";

/// S3 settings that fail fast when moto is frozen.
fn s3_backup(moto: &MotoServer, prefix: &str, archive_timeout: u64) -> String {
    format!(
        r#"[backup]
repository = "s3"
archive_timeout = {archive_timeout}
[backup.s3]
endpoint = "{endpoint}"
uri_style = "path"
region = "us-east-1"
bucket = "{BUCKET}"
prefix = "{prefix}"
access_key = "testing"
secret_key = "testing"
part_size_mib = 5
connect_timeout = 2
read_timeout = 2
max_attempts = 2
"#,
        endpoint = moto.endpoint()
    )
}

fn posix_backup(repo: &Path, archive_timeout: u64) -> String {
    format!(
        "[backup]\nrepository = \"posix\"\narchive_timeout = {archive_timeout}\n[backup.posix]\npath = \"{}\"\n",
        repo.display()
    )
}

/// The repository a configuration file points at, opened the way pgpilot does.
fn open_repo(config: &Path) -> anyhow::Result<std::sync::Arc<dyn Storage>> {
    let config = pgpilot::config::Config::load(config)?;
    let backup = config.backup.expect("a [backup] section");
    Ok(pgpilot::repo::open(&backup)?)
}

/// Every object (key → bytes) in a repository.
async fn snapshot(storage: &dyn Storage) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for meta in storage.list("").await? {
        let bytes = storage
            .get(&meta.key)
            .await?
            .into_bytes(&meta.key, 1 << 30)
            .await?;
        all.insert(meta.key, bytes);
    }
    Ok(all)
}

fn show(out: &Outcome) -> String {
    format!(
        "exit {} after {:.1}s\n--- stderr ---\n{}--- stdout ---\n{}",
        out.code,
        out.elapsed.as_secs_f64(),
        out.stderr,
        out.stdout
    )
}

fn push(config: &Path, file: &Path) -> anyhow::Result<Outcome> {
    run_pgpilot(&[
        "archive-push",
        "--config",
        &config.display().to_string(),
        &file.display().to_string(),
    ])
}

fn get(config: &Path, name: &str, dest: &Path) -> anyhow::Result<Outcome> {
    run_pgpilot(&[
        "archive-get",
        "--config",
        &config.display().to_string(),
        name,
        &dest.display().to_string(),
    ])
}

// --- storage -----------------------------------------------------------------

#[tokio::test]
async fn s3_storage_passes_the_conformance_suite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let moto = MotoServer::start(dir.path())?;
    moto.create_bucket(BUCKET).await?;
    let config = dir.path().join("pgpilot.toml");
    // A multi-level prefix; 5 MiB parts, so the 12 MiB objects go up in 3.
    write_member_config(&config, dir.path(), &s3_backup(&moto, "/team/pg/", 10))?;
    let storage = open_repo(&config)?;
    assert_eq!(
        storage.location(),
        format!("s3://{BUCKET}/team/pg"),
        "location"
    );
    pgpilot::repo::conformance::run_with(&*storage, 12 * 1024 * 1024 + 17).await?;
    // Server-side encryption and a storage class go with single and multipart uploads.
    let sse = dir.path().join("sse.toml");
    write_member_config(
        &sse,
        dir.path(),
        &s3_backup(&moto, "sse", 10).replace(
            "[backup.s3]\n",
            "[backup.s3]\nsse = \"AES256\"\nstorage_class = \"STANDARD_IA\"\n",
        ),
    )?;
    let encrypted = open_repo(&sse)?;
    let big = pgpilot::repo::conformance::pseudo_random(11 << 20, 7);
    encrypted
        .put("small", b"x".to_vec().into(), PutMode::CreateNew)
        .await?;
    encrypted
        .put("big", big.clone().into(), PutMode::CreateNew)
        .await?;
    assert_eq!(
        encrypted
            .get("big")
            .await?
            .into_bytes("big", 1 << 30)
            .await?,
        big
    );
    // A missing bucket is a permanent error that says what to do.
    let other = dir.path().join("other.toml");
    write_member_config(
        &other,
        dir.path(),
        &s3_backup(&moto, "", 10).replace(BUCKET, "no-such-bucket"),
    )?;
    let err = open_repo(&other)?
        .put("k", b"x".to_vec().into(), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("NoSuchBucket"), "{err}");
    Ok(())
}

#[tokio::test]
async fn posix_storage_passes_the_conformance_suite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo)?;
    let config = dir.path().join("pgpilot.toml");
    write_member_config(&config, dir.path(), &posix_backup(&repo, 10))?;
    pgpilot::repo::conformance::run(&*open_repo(&config)?).await
}

// --- archive-push / archive-get with the binary --------------------------------

/// A repository to test against, with its configuration for one cluster.
struct Setup {
    dir: tempfile::TempDir,
    moto: Option<MotoServer>,
    backup: String,
}

impl Setup {
    async fn s3() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let moto = MotoServer::start(dir.path())?;
        moto.create_bucket(BUCKET).await?;
        let backup = s3_backup(&moto, "pg", 10);
        Ok(Setup {
            dir,
            moto: Some(moto),
            backup,
        })
    }

    fn posix() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo)?;
        let backup = posix_backup(&repo, 10);
        Ok(Setup {
            dir,
            moto: None,
            backup,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A fake cluster `name` with `sysid`, and its configuration file.
    fn cluster(&self, name: &str, sysid: u64) -> anyhow::Result<PathBuf> {
        let data = self.path(name);
        fake_data_dir(&data, sysid)?;
        let config = self.path(&format!("{name}.toml"));
        write_member_config(&config, &data, &self.backup)?;
        Ok(config)
    }

    fn wal(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let dir = self.path("wal");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

async fn duplicates_and_missing(setup: Setup) -> anyhow::Result<()> {
    let config = setup.cluster("data", SYSID)?;
    let storage = open_repo(&config)?;
    let first = fake_segment(SYSID, SEG, 2 << 20, 1);

    let out = push(&config, &setup.wal(SEG, &first)?)?;
    assert_eq!(out.code, 0, "first push: {}", show(&out));
    let stored = snapshot(&*storage).await?;
    assert_eq!(
        stored.len(),
        2,
        "repo.json and the segment: {:?}",
        stored.keys()
    );

    // Same content again: exit 0 with a warning, nothing changes.
    let out = push(&config, &setup.wal(SEG, &first)?)?;
    assert_eq!(out.code, 0, "same content: {}", show(&out));
    assert!(
        out.stderr
            .contains("already archived with the same content"),
        "{}",
        show(&out)
    );
    assert_eq!(snapshot(&*storage).await?, stored);

    // Different content under the same name: exit 45, object untouched.
    let second = fake_segment(SYSID, SEG, 2 << 20, 2);
    let out = push(&config, &setup.wal(SEG, &second)?)?;
    assert_eq!(out.code, 45, "different content: {}", show(&out));
    assert!(
        out.stderr.contains("already archived") && out.stderr.contains("different content"),
        "{}",
        show(&out)
    );
    assert_eq!(snapshot(&*storage).await?, stored);

    // archive-get returns the first content.
    let dest = setup.path("RECOVERYXLOG");
    let out = get(&config, SEG, &dest)?;
    assert_eq!(out.code, 0, "get: {}", show(&out));
    assert_eq!(std::fs::read(&dest)?, first);

    // A missing segment: exit 1, nothing printed, nothing written.
    let missing = setup.path("MISSING");
    let out = get(&config, "000000010000000000000042", &missing)?;
    assert_eq!(out.code, 1, "missing: {}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
    assert!(!missing.exists());

    // Another cluster pointed at the same repository and stanza: refused
    // before anything is written.
    let intruder = setup.cluster("intruder", SYSID + 1)?;
    let theirs = fake_segment(SYSID + 1, "000000010000000000000004", 1 << 20, 3);
    let out = push(&intruder, &setup.wal("000000010000000000000004", &theirs)?)?;
    assert_eq!(out.code, 44, "wrong cluster: {}", show(&out));
    assert!(
        out.stderr.contains("belongs to another cluster"),
        "{}",
        show(&out)
    );
    assert_eq!(snapshot(&*storage).await?, stored);
    // ...also for a history file, which has no header to give it away.
    let out = push(
        &intruder,
        &setup.wal("00000002.history", b"1\t0/3000000\tx\n")?,
    )?;
    assert_eq!(out.code, 44, "wrong cluster, history: {}", show(&out));
    assert_eq!(snapshot(&*storage).await?, stored);
    drop(setup.moto);
    Ok(())
}

#[tokio::test]
async fn s3_duplicates_missing_segments_and_wrong_cluster() -> anyhow::Result<()> {
    duplicates_and_missing(Setup::s3().await?).await
}

#[tokio::test]
async fn posix_duplicates_missing_segments_and_wrong_cluster() -> anyhow::Result<()> {
    duplicates_and_missing(Setup::posix()?).await
}

#[tokio::test]
async fn unreachable_s3_fails_within_the_archive_timeout() -> anyhow::Result<()> {
    let mut setup = Setup::s3().await?;
    setup.backup = setup
        .backup
        .replace("archive_timeout = 10", "archive_timeout = 4");
    let config = setup.cluster("data", SYSID)?;
    let file = setup.wal(SEG, &fake_segment(SYSID, SEG, 1 << 20, 1))?;
    let moto = setup.moto.as_mut().expect("s3");

    // Frozen: connections open, nothing answers.
    moto.pause();
    let out = push(&config, &file)?;
    moto.resume();
    assert!(out.code == 82 || out.code == 3, "frozen: {}", show(&out));
    assert!(
        out.elapsed < Duration::from_secs(4 + 3),
        "frozen: not bounded: {}",
        show(&out)
    );

    // Gone: connections refused.
    moto.kill();
    let out = push(&config, &file)?;
    assert!(out.code == 82 || out.code == 3, "killed: {}", show(&out));
    assert!(
        out.elapsed < Duration::from_secs(4 + 3),
        "killed: not bounded: {}",
        show(&out)
    );
    let out = get(&config, SEG, &setup.path("out"))?;
    assert!(
        out.code == 82 || out.code == 3,
        "get, killed: {}",
        show(&out)
    );
    assert!(!out.stderr.is_empty());
    Ok(())
}

#[test]
fn no_backup_section_is_a_usage_error() -> anyhow::Result<()> {
    let setup = Setup::posix()?;
    let config = setup.path("plain.toml");
    write_member_config(&config, &setup.path("data"), "")?;
    let out = push(&config, &setup.path("000000010000000000000001"))?;
    assert_eq!(out.code, 2, "{}", show(&out));
    assert!(out.stderr.contains("no [backup] section"), "{}", show(&out));
    Ok(())
}

// --- a real PostgreSQL archiving through an outage ------------------------------

/// One PostgreSQL archiving into the repository of `backup`.
async fn archiving_server(
    root: &Path,
    name: &str,
    backup: &str,
) -> anyhow::Result<(Standalone, PathBuf)> {
    let server = Standalone::init(root, name)?;
    let config = root.join(format!("{name}.toml"));
    write_member_config(&config, server.data_dir(), backup)?;
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
    Ok((server, config))
}

/// Every segment from the first stored one to `last` is stored exactly
/// once and restores (archive-get checks its SHA-256).
async fn assert_restorable(
    storage: &dyn Storage,
    config: &Path,
    last: &str,
    scratch: &Path,
) -> anyhow::Result<()> {
    let names = assert_no_gap(storage, last).await?;
    for name in &names {
        let dest = scratch.join("restored");
        let out = get(config, name, &dest)?;
        assert_eq!(out.code, 0, "archive-get {name}: {}", show(&out));
        assert_eq!(std::fs::metadata(&dest)?.len(), 16 << 20, "{name}");
    }
    Ok(())
}

/// Archive a few segments, break the repository, keep writing (pushes must
/// fail and PostgreSQL keep the WAL), repair it, and check that every
/// segment made it, in order, with no gap.
async fn archiving_through_an_outage(
    root: &Path,
    backup: &str,
    break_repo: impl Fn(),
    repair_repo: impl Fn(),
) -> anyhow::Result<()> {
    let (server, config) = archiving_server(root, "pg", backup).await?;
    let client = server.connect().await?;
    let storage = open_repo(&config)?;
    let mut last = String::new();
    for _ in 0..3 {
        last = switch_segment(&client).await?;
    }
    let before = wait_archived(&client, &last, Duration::from_secs(60)).await?;
    assert_eq!(before.failed, 0, "failures before the outage: {before:?}");

    break_repo();
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(switch_segment(&client).await?);
    }
    let failing = wait_until("archive-push failures", Duration::from_secs(60), || async {
        let state = archiver(&client).await?;
        anyhow::ensure!(state.failed >= 2, "archiver: {state:?}");
        Ok(state)
    })
    .await;
    let failing = match failing {
        Ok(state) => state,
        Err(e) => {
            repair_repo();
            return Err(e.context(pgpilot_e2e::file_tail(server.log(), 40)));
        }
    };
    // PostgreSQL keeps the segments it could not archive.
    let ready = server
        .data_dir()
        .join("pg_wal/archive_status")
        .join(format!("{}.ready", during[0]));
    let kept = ready.exists();
    let archived_during = archiver(&client).await?.archived;
    repair_repo();
    assert!(kept, "{} is not waiting in archive_status", during[0]);
    assert_eq!(
        failing.last_failed.as_deref(),
        Some(during[0].as_str()),
        "{failing:?}"
    );
    assert_eq!(
        archived_during, before.archived,
        "archived during the outage"
    );

    // The repository is back: new WAL wakes the archiver, which catches up.
    for _ in 0..2 {
        last = switch_segment(&client).await?;
    }
    let after = wait_archived(&client, &last, Duration::from_secs(120)).await?;
    eprintln!("archiver before the outage: {before:?}\nduring: {failing:?}\nafter: {after:?}");
    assert!(after.failed >= failing.failed);
    assert_eq!(after.last_archived.as_deref(), Some(last.as_str()));
    assert_restorable(&*storage, &config, &last, root).await?;
    Ok(())
}

#[tokio::test]
async fn postgres_archives_through_an_s3_outage_without_gaps() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let moto = MotoServer::start(dir.path())?;
    moto.create_bucket(BUCKET).await?;
    let backup = s3_backup(&moto, "wal", 4);
    archiving_through_an_outage(dir.path(), &backup, || moto.pause(), || moto.resume()).await
}

/// chmod every directory of the repository (as root, for the postgres user).
fn chmod_dirs(root: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
}

#[tokio::test]
async fn postgres_archives_through_an_unwritable_posix_repository_without_gaps(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo)?;
    give_to_postgres(&repo)?;
    let backup = posix_backup(&repo, 4);
    archiving_through_an_outage(
        dir.path(),
        &backup,
        || chmod_dirs(&repo, 0o550),
        || chmod_dirs(&repo, 0o750),
    )
    .await?;

    // A second cluster pointed at the same repository: its archiver fails,
    // the repository is untouched, PostgreSQL's log says why.
    let storage = posix_storage(&repo)?;
    let before = snapshot(&storage).await?;
    let (intruder, _) = archiving_server(dir.path(), "intruder", &backup).await?;
    let client = intruder.connect().await?;
    switch_segment(&client).await?;
    wait_until(
        "the intruder's archiver fails",
        Duration::from_secs(60),
        || async {
            let state = archiver(&client).await?;
            anyhow::ensure!(state.failed >= 1, "archiver: {state:?}");
            Ok(())
        },
    )
    .await?;
    assert_eq!(snapshot(&storage).await?, before, "the repository changed");
    let log = std::fs::read_to_string(intruder.log())?;
    assert!(log.contains("belongs to another cluster"), "{log}");
    Ok(())
}

fn posix_storage(repo: &Path) -> anyhow::Result<pgpilot::repo::posix::PosixStorage> {
    Ok(pgpilot::repo::posix::PosixStorage::open(repo)?)
}

// --- TLS ------------------------------------------------------------------------

/// The S3 driver of a `[backup]` section, as pgpilot builds it.
fn s3_storage(dir: &Path, name: &str, backup: &str) -> anyhow::Result<S3Storage> {
    let config = dir.join(name);
    write_member_config(&config, dir, backup)?;
    let config = pgpilot::config::Config::load(&config)?;
    let backup = config.backup.expect("a [backup] section");
    let settings = S3Settings::from_config(backup.s3.as_ref().expect("[backup.s3]"), 2)?;
    Ok(S3Storage::new(settings)?)
}

#[tokio::test]
async fn s3_over_tls_trusts_ca_file_and_refuses_unknown_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (moto, ca) = MotoServer::start_tls(dir.path())?;
    let base = s3_backup(&moto, "tls", 10);
    assert!(moto.endpoint().starts_with("https://"));

    // Trusted through backup.s3.ca_file.
    let with_ca = base.replace(
        "[backup.s3]\n",
        &format!("[backup.s3]\nca_file = \"{}\"\n", ca.display()),
    );
    let trusted = s3_storage(dir.path(), "trusted.toml", &with_ca)?;
    trusted.create_bucket().await?;
    trusted
        .put("k", b"over tls".to_vec().into(), PutMode::CreateNew)
        .await?;
    let bytes = trusted.get("k").await?.into_bytes("k", 100).await?;
    assert_eq!(bytes, b"over tls");

    // The system's CAs do not know the test CA: a permanent error, at once.
    let untrusted = s3_storage(dir.path(), "untrusted.toml", &base)?;
    let started = std::time::Instant::now();
    let err = untrusted.head("k").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retried a TLS failure"
    );

    // Verification off: accepted.
    let unverified = s3_storage(
        dir.path(),
        "unverified.toml",
        &base.replace("[backup.s3]\n", "[backup.s3]\nverify_tls = false\n"),
    )?;
    assert_eq!(unverified.head("k").await?.map(|m| m.size), Some(8));
    Ok(())
}
