//! archive-push and archive-get against a posix repository, with a fake data
//! directory (pg_control + PG_VERSION) and synthetic WAL segments.

use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::get::get;
use super::push::{push, Pushed};
use super::wal::tests::fake_segment;
use super::{code, ArchiveError, Context};
use crate::repo::{PutMode, Storage};

const SYSID: u64 = 7_300_000_000_000_000_001;
const SEG: &str = "000000010000000000000003";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        let setup = Setup { dir };
        setup.cluster("data", SYSID);
        setup.config("pgpilot.toml", "data", "");
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A fake data directory with the given system identifier.
    fn cluster(&self, rel: &str, sysid: u64) {
        let data = self.path(rel);
        std::fs::create_dir_all(data.join("global")).unwrap();
        let mut control = sysid.to_ne_bytes().to_vec();
        control.resize(8192, 0);
        std::fs::write(data.join("global/pg_control"), control).unwrap();
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    }

    fn config(&self, rel: &str, data_dir: &str, extra: &str) -> PathBuf {
        let text = crate::config::tests_support::EXAMPLE.replace(
            "/var/lib/pgpilot/pg1",
            &self.path(data_dir).display().to_string(),
        );
        let text = format!(
            "{text}\n[backup]\nrepository = \"posix\"\narchive_timeout = 10\n{extra}\n[backup.posix]\npath = \"{}\"\n",
            self.path("repo").display()
        );
        let path = self.path(rel);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn context(&self, config: &Path) -> Context {
        Context::open(config, Instant::now()).unwrap()
    }

    fn wal(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path("wal").join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    /// Every file under the repository with its bytes.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.path("repo")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    out.push((path, bytes));
                }
            }
        }
        out.sort();
        out
    }
}

fn segment(fill: u8) -> Vec<u8> {
    fake_segment(SYSID, SEG, 1 << 20, fill)
}

#[tokio::test]
async fn push_then_get_round_trips() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let data = segment(1);
    let pushed = push(&ctx, &s.wal(SEG, &data)).await.unwrap();
    assert!(!pushed.already_stored, "{pushed:?}");
    assert_eq!(pushed.sha256, super::wal::sha256_hex(&data));
    assert_eq!(pushed.size, data.len() as u64);
    let key = pushed.key;
    assert!(
        key.starts_with("demo/archive/0000000100000000/000000010000000000000003-")
            && key.ends_with(".zst"),
        "{key}"
    );
    assert!(ctx.storage.head("demo/repo.json").await.unwrap().is_some());

    let dest = s.path("RECOVERYXLOG");
    get(&ctx, SEG, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // No temporary file is left beside the destination.
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 5);
}

#[tokio::test]
async fn same_content_twice_is_fine() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let path = s.wal(SEG, &segment(1));
    push(&ctx, &path).await.unwrap();
    let before = s.snapshot();
    assert!(push(&ctx, &path).await.unwrap().already_stored);
    assert_eq!(s.snapshot(), before);
}

#[tokio::test]
async fn different_content_is_refused_and_the_copy_kept() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    push(&ctx, &s.wal(SEG, &segment(1))).await.unwrap();
    let before = s.snapshot();
    let err = push(&ctx, &s.wal(SEG, &segment(2))).await.unwrap_err();
    assert_eq!(err.exit_code(), code::DUPLICATE, "{err}");
    assert!(err.to_string().contains("different content"), "{err}");
    assert_eq!(s.snapshot(), before);
    // archive-get still serves the first copy.
    let dest = s.path("out");
    get(&ctx, SEG, &dest).await.unwrap();
    assert_eq!(std::fs::read(dest).unwrap(), segment(1));
}

#[tokio::test]
async fn missing_file_is_not_found() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let dest = s.path("out");
    let err = get(&ctx, "000000010000000000000009", &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::NotFound));
    assert_eq!(err.exit_code(), code::NOT_FOUND);
    assert!(!dest.exists());
    let err = get(&ctx, "RECOVERYXLOG", &dest).await.unwrap_err();
    assert_eq!(err.exit_code(), code::USAGE);
}

#[tokio::test]
async fn another_cluster_is_refused_before_writing() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    push(&ctx, &s.wal(SEG, &segment(1))).await.unwrap();
    let before = s.snapshot();

    s.cluster("other", SYSID + 1);
    let other = s.context(&s.config("other.toml", "other", ""));
    let seg = fake_segment(SYSID + 1, "000000010000000000000004", 1 << 20, 3);
    let err = push(&other, &s.wal("000000010000000000000004", &seg))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), code::WRONG_CLUSTER, "{err}");
    assert!(err.to_string().contains("another cluster"), "{err}");
    assert_eq!(s.snapshot(), before);

    // With its own stanza it is welcome.
    let own = s.context(&s.config("own.toml", "other", "stanza = \"other\""));
    push(&own, &s.wal("000000010000000000000004", &seg))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_segment_of_another_cluster_is_refused() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let foreign = fake_segment(SYSID + 5, SEG, 1 << 20, 1);
    let err = push(&ctx, &s.wal(SEG, &foreign)).await.unwrap_err();
    assert_eq!(err.exit_code(), code::WRONG_CLUSTER, "{err}");
    assert!(s.snapshot().is_empty());
}

#[tokio::test]
async fn a_segment_under_the_wrong_name_is_refused() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let err = push(&ctx, &s.wal("000000010000000000000005", &segment(1)))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), code::LOCAL, "{err}");
    let err = push(&ctx, &s.wal("000000010000000000000006", b"short"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), code::LOCAL, "{err}");
    let err = push(&ctx, &s.path("wal/nope")).await.unwrap_err();
    assert_eq!(err.exit_code(), code::USAGE, "{err}");
    let err = push(&ctx, &s.path("wal/000000010000000000000007"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), code::LOCAL, "{err}");
}

#[tokio::test]
async fn history_and_backup_files() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    for (name, body) in [
        (
            "00000002.history",
            &b"1\t0/3000000\tno recovery target specified\n"[..],
        ),
        (
            "000000010000000000000002.00000028.backup",
            b"START WAL LOCATION: 0/2000028\n",
        ),
        ("000000010000000000000003.partial", &segment(4)[..]),
    ] {
        push(&ctx, &s.wal(name, body)).await.unwrap();
        let dest = s.path("out");
        get(&ctx, name, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body, "{name}");
    }
    // The .partial is not the segment.
    let err = get(&ctx, SEG, &s.path("out2")).await.unwrap_err();
    assert!(matches!(err, ArchiveError::NotFound));
}

#[tokio::test]
async fn a_damaged_object_is_never_restored_and_a_push_repairs_it() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let data = segment(1);
    let path = s.wal(SEG, &data);
    let Pushed { key, .. } = push(&ctx, &path).await.unwrap();
    let file = s.path("repo").join(&key);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let dest = s.path("out");
    std::fs::write(&dest, b"previous").unwrap();
    let err = get(&ctx, SEG, &dest).await.unwrap_err();
    assert_eq!(err.exit_code(), code::CORRUPT, "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous");

    assert!(!push(&ctx, &path).await.unwrap().already_stored);
    get(&ctx, SEG, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn two_different_copies_are_not_guessed_between() {
    let s = Setup::new();
    let ctx = s.context(&s.path("pgpilot.toml"));
    let Pushed { key, .. } = push(&ctx, &s.wal(SEG, &segment(1))).await.unwrap();
    // A second copy, as a split brain could leave behind.
    let other = key.replace(&key[key.len() - 68..key.len() - 4], &"0".repeat(64));
    ctx.storage
        .put(&other, b"x".to_vec().into(), PutMode::CreateNew)
        .await
        .unwrap();
    let err = get(&ctx, SEG, &s.path("out")).await.unwrap_err();
    assert_eq!(err.exit_code(), code::CORRUPT, "{err}");
}

#[test]
fn config_without_backup_is_a_usage_error() {
    let s = Setup::new();
    let path = s.path("plain.toml");
    std::fs::write(&path, crate::config::tests_support::EXAMPLE).unwrap();
    let err = Context::open(&path, Instant::now()).err().unwrap();
    assert_eq!(err.exit_code(), code::USAGE);
    assert!(err.to_string().contains("no [backup] section"), "{err}");
}

// --- async mode: archive-push with the spool -------------------------------

mod async_mode {
    use super::*;
    use crate::archive::async_push::repository_id;
    use crate::archive::spool::{Ack, Failure, Spool};
    use crate::archive::Call;

    fn setup() -> (Setup, PathBuf, Spool) {
        let s = Setup::new();
        let spool_dir = s.path("spool");
        let config = s.config(
            "async.toml",
            "data",
            &format!(
                "archive_async = true\nspool_path = \"{}\"",
                spool_dir.display()
            ),
        );
        let spool = Spool::at(&spool_dir);
        (s, config, spool)
    }

    async fn push_async(config: &Path, file: &Path) -> Result<(), ArchiveError> {
        let call = Call::load(config, Instant::now()).unwrap();
        crate::archive::async_push::push(&call, file).await
    }

    fn ack_for(config: &Path, data: &[u8]) -> Ack {
        let call = Call::load(config, Instant::now()).unwrap();
        let sha = super::super::wal::sha256_hex(data);
        let layout = crate::repo::layout::Layout::new(call.backup.stanza("demo"));
        Ack {
            wal: SEG.into(),
            repository: repository_id(&call.backup, "demo"),
            key: layout.wal_key(&crate::repo::layout::WalName::parse(SEG).unwrap(), &sha),
            sha256: sha,
            size: data.len() as u64,
            stamp: None,
        }
    }

    #[tokio::test]
    async fn a_stamped_ack_answers_for_that_file_only() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let data = segment(1);
        let file = s.wal(SEG, &data);
        let mut ack = ack_for(&config, &data);
        ack.stamp = Some(crate::archive::wal::FileStamp::of_path(&file).unwrap());
        spool.write_ack(&ack).unwrap();
        std::fs::remove_dir(s.path("repo")).unwrap();
        push_async(&config, &file).await.unwrap();

        // The same name and size rewritten with other bytes: its stamp
        // moved on, its SHA-256 is not the acknowledged one.
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.wal(SEG, &segment(2));
        std::fs::create_dir(s.path("repo")).unwrap();
        push_async(&config, &file).await.unwrap();
        assert_eq!(s.snapshot().len(), 2, "the new bytes were pushed here");
        assert!(spool.read_ack(SEG).is_none(), "the stale ack is removed");
    }

    #[tokio::test]
    async fn without_a_spool_the_file_is_pushed_here() {
        let (s, config, _) = setup();
        push_async(&config, &s.wal(SEG, &segment(1))).await.unwrap();
        assert_eq!(s.snapshot().len(), 2, "repo.json and the segment");
    }

    #[tokio::test]
    async fn a_matching_ack_answers_without_the_repository() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let data = segment(1);
        spool.write_ack(&ack_for(&config, &data)).unwrap();
        // The repository is gone: only the acknowledgement can answer.
        std::fs::remove_dir(s.path("repo")).unwrap();
        push_async(&config, &s.wal(SEG, &data)).await.unwrap();
        assert!(!s.path("repo").exists());
    }

    #[tokio::test]
    async fn an_ack_for_other_bytes_is_not_trusted() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        // Same size, another SHA-256 (a stale ack from another cluster or timeline).
        spool.write_ack(&ack_for(&config, &segment(2))).unwrap();
        push_async(&config, &s.wal(SEG, &segment(1))).await.unwrap();
        assert_eq!(s.snapshot().len(), 2, "the segment was pushed here");
        assert!(spool.read_ack(SEG).is_none(), "the stale ack is removed");

        // An ack for another repository is not trusted either.
        let mut elsewhere = ack_for(&config, &segment(1));
        elsewhere.repository = "posix:/elsewhere#demo".into();
        spool.write_ack(&elsewhere).unwrap();
        std::fs::remove_dir_all(s.path("repo")).unwrap();
        let err = push_async(&config, &s.wal(SEG, &segment(1)))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), code::REPOSITORY, "{err}");
    }

    fn duplicate() -> Failure {
        Failure {
            code: code::DUPLICATE,
            message: "already archived with different content".into(),
        }
    }

    #[tokio::test]
    async fn a_failure_met_by_the_worker_while_waiting_is_the_answer() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let _worker = spool.lock_worker().unwrap().unwrap();
        let writer = spool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            writer.write_error(SEG, &duplicate()).unwrap();
        });
        let err = push_async(&config, &s.wal(SEG, &segment(1)))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), code::DUPLICATE);
        assert!(err.to_string().contains("push-ahead worker"), "{err}");
        assert!(s.snapshot().is_empty());
    }

    #[tokio::test]
    async fn an_earlier_failure_of_the_worker_does_not_block_a_push_here() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let _worker = spool.lock_worker().unwrap().unwrap();
        spool.write_error(SEG, &duplicate()).unwrap();
        push_async(&config, &s.wal(SEG, &segment(1))).await.unwrap();
        assert_eq!(s.snapshot().len(), 2);
    }

    #[tokio::test]
    async fn a_silent_worker_is_waited_for_briefly_then_the_file_is_pushed_here() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let _worker = spool.lock_worker().unwrap().unwrap();
        let started = std::time::Instant::now();
        push_async(&config, &s.wal(SEG, &segment(1))).await.unwrap();
        // archive_timeout = 10 s: a quarter of it, then a push here.
        assert!(started.elapsed() >= std::time::Duration::from_millis(2400));
        assert_eq!(s.snapshot().len(), 2);
    }

    #[tokio::test]
    async fn an_ack_arriving_while_waiting_is_used() {
        let (s, config, spool) = setup();
        spool.create().unwrap();
        let _worker = spool.lock_worker().unwrap().unwrap();
        let data = segment(1);
        let ack = ack_for(&config, &data);
        let writer = spool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            writer.write_ack(&ack).unwrap();
        });
        std::fs::remove_dir(s.path("repo")).unwrap();
        push_async(&config, &s.wal(SEG, &data)).await.unwrap();
    }
}
