//! The spool: a local directory that async archiving's commands and their
//! background workers share (`backup.spool_path`).
//!
//! ```text
//! <spool>/ahead.lock            locked (flock) by the push-ahead worker while it runs
//! <spool>/out/<wal>.ok          acknowledgement: <wal> is stored and checked (JSON)
//! <spool>/out/<wal>.error       the worker's last failure on <wal> (JSON)
//! <spool>/in/<wal>-<sha256>     a prefetched WAL file, decompressed and checked
//! <spool>/in/want               the segment recovery asked for last
//! <spool>/in/boot               the boot the queued files were checked in
//! <spool>/in/prefetch.lock      locked by the prefetcher while it runs
//! <spool>/in/prefetch.log       the prefetcher's log (its last run)
//! ```
//!
//! Nothing here is trusted on its word: an acknowledgement counts only when
//! the file PostgreSQL hands over is the one the worker read (same inode,
//! size and change time), or else has the size and SHA-256 it records; a
//! prefetched file was checked against the SHA-256 in its name before it
//! was queued, and counts unchecked only in the boot that queued it (a
//! crash can leave unwritten blocks in a file that was not fsynced); a
//! prefetched file only when its bytes hash to the SHA-256 in its name. The
//! directory lives outside the data directory (pg_basebackup and base
//! backups copy unknown files there) and belongs to PostgreSQL's OS user,
//! who runs the commands; the sidecar may run as root and gives what it
//! creates here to that user.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::repo::config::BackupSection;
use crate::repo::layout::{is_sha256_hex, WalName};

/// Proof that the worker stored a WAL file: what it read and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub wal: String,
    /// The repository (`Storage::location`) the file went to.
    pub repository: String,
    /// The object holding it.
    pub key: String,
    /// SHA-256 and size of the file's bytes as stored.
    pub sha256: String,
    pub size: u64,
    /// The file's inode and change time when the worker read it: a file
    /// with the same stamp holds those bytes, without hashing it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<crate::archive::wal::FileStamp>,
}

/// The worker's last failure on one file: exit code class and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// The segment recovery asked for last, and the WAL segment size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub wal: WalName,
    pub segment_size: u32,
}

/// A prefetched file in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub wal: WalName,
    pub sha256: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// Who gets what a root process creates: PostgreSQL's OS user.
    owner: Option<(u32, u32)>,
}

impl Spool {
    /// The spool of a member's configuration (nothing is created).
    pub fn new(config: &Config, backup: &BackupSection) -> Result<Spool, String> {
        let root = backup
            .spool_dir(&config.postgresql.data_dir)
            .map_err(|e| format!("{}: {}", e.key, e.message))?;
        let owner = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(&config.postgresql.os_user)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "OS user {:?} (postgresql.os_user) does not exist: it must own the spool {}",
                        config.postgresql.os_user,
                        root.display()
                    )
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        Ok(Spool { root, owner })
    }

    /// A spool at `root` (tests).
    pub fn at(root: &Path) -> Spool {
        Spool {
            root: root.to_path_buf(),
            owner: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn out_dir(&self) -> PathBuf {
        self.root.join("out")
    }

    pub fn in_dir(&self) -> PathBuf {
        self.root.join("in")
    }

    /// Create the directories (mode 0700) if missing; the parent must exist.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.out_dir(), self.in_dir()] {
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}", dir.display()),
                    ))
                }
            }
            self.give(&dir)?;
        }
        Ok(())
    }

    fn give(&self, path: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Write `bytes` to `dir/name` whole or not at all (temporary file, rename).
    fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            self.give(&temp)?;
            std::fs::rename(&temp, dir.join(name))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    // --- the push-ahead worker's acknowledgements and failures ------------

    fn ack_path(&self, wal: &str) -> PathBuf {
        self.out_dir().join(format!("{wal}.ok"))
    }

    fn error_path(&self, wal: &str) -> PathBuf {
        self.out_dir().join(format!("{wal}.error"))
    }

    pub fn write_ack(&self, ack: &Ack) -> std::io::Result<()> {
        let json = serde_json::to_vec(ack).map_err(std::io::Error::other)?;
        self.write_atomic(&self.out_dir(), &format!("{}.ok", ack.wal), &json)
    }

    /// The acknowledgement of `wal`, if there is a readable one.
    pub fn read_ack(&self, wal: &str) -> Option<Ack> {
        let bytes = std::fs::read(self.ack_path(wal)).ok()?;
        serde_json::from_slice::<Ack>(&bytes)
            .ok()
            .filter(|ack| ack.wal == wal)
    }

    pub fn has_ack(&self, wal: &str) -> bool {
        self.ack_path(wal).exists()
    }

    pub fn remove_ack(&self, wal: &str) {
        let _ = std::fs::remove_file(self.ack_path(wal));
    }

    pub fn write_error(&self, wal: &str, failure: &Failure) -> std::io::Result<()> {
        let json = serde_json::to_vec(failure).map_err(std::io::Error::other)?;
        self.write_atomic(&self.out_dir(), &format!("{wal}.error"), &json)
    }

    pub fn read_error(&self, wal: &str) -> Option<Failure> {
        let bytes = std::fs::read(self.error_path(wal)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The failure of `wal` if it was recorded at or after `since`.
    pub fn read_error_since(&self, wal: &str, since: std::time::SystemTime) -> Option<Failure> {
        let modified = std::fs::metadata(self.error_path(wal))
            .and_then(|m| m.modified())
            .ok()?;
        (modified >= since).then(|| self.read_error(wal)).flatten()
    }

    pub fn remove_error(&self, wal: &str) {
        let _ = std::fs::remove_file(self.error_path(wal));
    }

    /// WAL names with an acknowledgement or a failure in `out/`.
    pub fn out_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.out_dir())? {
            let file = entry?.file_name();
            let Some(file) = file.to_str() else { continue };
            if let Some(wal) = file
                .strip_suffix(".ok")
                .or_else(|| file.strip_suffix(".error"))
            {
                if WalName::parse(wal).is_some() {
                    names.push(wal.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Take the worker's lock: `None` if another worker holds it.
    pub fn lock_worker(&self) -> std::io::Result<Option<File>> {
        self.lock(&self.root.join("ahead.lock"))
    }

    /// Is a push-ahead worker running on this spool?
    pub fn worker_running(&self) -> bool {
        is_locked(&self.root.join("ahead.lock"))
    }

    // --- the prefetch queue -----------------------------------------------

    pub fn lock_prefetcher(&self) -> std::io::Result<Option<File>> {
        self.lock(&self.in_dir().join("prefetch.lock"))
    }

    pub fn prefetcher_running(&self) -> bool {
        is_locked(&self.in_dir().join("prefetch.lock"))
    }

    pub fn prefetch_log(&self) -> PathBuf {
        self.in_dir().join("prefetch.log")
    }

    pub fn write_want(&self, want: &Want) -> std::io::Result<()> {
        let text = format!("{} {}\n", want.wal, want.segment_size);
        self.write_atomic(&self.in_dir(), "want", text.as_bytes())
    }

    pub fn read_want(&self) -> std::io::Result<Option<Want>> {
        let text = match std::fs::read_to_string(self.in_dir().join("want")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut words = text.split_whitespace();
        let wal = words.next().and_then(WalName::parse);
        let size = words.next().and_then(|s| s.parse::<u32>().ok());
        Ok(match (wal, size) {
            (Some(wal), Some(segment_size)) => Some(Want { wal, segment_size }),
            _ => None,
        })
    }

    fn boot_path(&self) -> PathBuf {
        self.in_dir().join("boot")
    }

    /// Were the queued files checked since the machine last started? The
    /// prefetcher records the boot it runs in ([`Spool::claim_queue`]).
    pub fn queue_is_from_this_boot(&self) -> bool {
        match (std::fs::read_to_string(self.boot_path()), current_boot()) {
            (Ok(recorded), Some(now)) => recorded.trim() == now,
            _ => false,
        }
    }

    /// The prefetcher, at its start: queued files of an earlier boot are
    /// removed (they may hold blocks a crash did not write), then this boot
    /// is recorded.
    pub fn claim_queue(&self) -> std::io::Result<()> {
        let Some(now) = current_boot() else {
            let _ = std::fs::remove_file(self.boot_path());
            return Ok(());
        };
        if !self.queue_is_from_this_boot() {
            self.prune_queue(|_| false)?;
        }
        self.write_atomic(&self.in_dir(), "boot", format!("{now}\n").as_bytes())
    }

    fn fetching_path(&self, wal: &WalName) -> PathBuf {
        self.in_dir().join(format!(".{wal}.fetching.tmp"))
    }

    /// Mark `wal` as being fetched until the returned guard is dropped.
    pub fn fetching(&self, wal: &WalName) -> FetchingMarker {
        let path = self.fetching_path(wal);
        let _ = File::create(&path);
        FetchingMarker { path }
    }

    /// Is the prefetcher fetching `wal` now?
    pub fn is_fetching(&self, wal: &WalName) -> bool {
        self.fetching_path(wal).exists()
    }

    /// Where a prefetched file goes once checked.
    pub fn queue_path(&self, wal: &WalName, sha256: &str) -> PathBuf {
        self.in_dir().join(format!("{wal}-{sha256}"))
    }

    /// The prefetched files, in WAL order.
    pub fn queued(&self) -> std::io::Result<Vec<Queued>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.in_dir())? {
            let entry = entry?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some((wal, sha)) = file.rsplit_once('-') else {
                continue;
            };
            if let (Some(wal), true) = (WalName::parse(wal), is_sha256_hex(sha)) {
                out.push(Queued {
                    wal,
                    sha256: sha.to_string(),
                    path: entry.path(),
                });
            }
        }
        out.sort_by(|a, b| a.wal.as_str().cmp(b.wal.as_str()));
        Ok(out)
    }

    /// Remove the queued files `keep` rejects, and leftover temporary files.
    pub fn prune_queue(&self, keep: impl Fn(&WalName) -> bool) -> std::io::Result<usize> {
        let mut removed = 0;
        for queued in self.queued()? {
            if !keep(&queued.wal) && std::fs::remove_file(&queued.path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Remove temporary files a killed prefetcher may have left.
    pub fn remove_queue_temporaries(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.in_dir())? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| {
                n.starts_with('.') && (n.ends_with(".pgpilot-tmp") || n.ends_with(".tmp"))
            }) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> std::io::Result<Option<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        self.give(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The kernel's id of this boot (a new one at every start of the machine).
fn current_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// Removes its "being fetched" marker when dropped.
#[derive(Debug)]
pub struct FetchingMarker {
    path: PathBuf,
}

impl Drop for FetchingMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Does a live process hold the lock at `path`? (The kernel drops a dead
/// process's lock, so a crashed worker never counts as running.)
fn is_locked(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// The segment after `wal` on the same timeline, for `segment_size` bytes
/// per segment; `None` for non-segment names.
pub fn next_segment(wal: &WalName, segment_size: u32) -> Option<WalName> {
    if wal.kind() != crate::repo::layout::WalKind::Segment || segment_size == 0 {
        return None;
    }
    let name = wal.as_str();
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000u64 / u64::from(segment_size);
    let (log, seg) = if seg + 1 >= per_log {
        (log.checked_add(1)?, 0)
    } else {
        (log, seg + 1)
    };
    if log > 0xFFFF_FFFF {
        return None;
    }
    WalName::parse(&format!("{}{log:08X}{seg:08X}", &name[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(s: &str) -> WalName {
        WalName::parse(s).unwrap()
    }

    #[test]
    fn next_segments_roll_over_the_log() {
        let mib16 = 16 << 20;
        assert_eq!(
            next_segment(&wal("000000010000000000000003"), mib16),
            Some(wal("000000010000000000000004"))
        );
        assert_eq!(
            next_segment(&wal("0000000200000001000000FF"), mib16),
            Some(wal("000000020000000200000000"))
        );
        // 1 GiB segments: four per log.
        assert_eq!(
            next_segment(&wal("000000010000000000000003"), 1 << 30),
            Some(wal("000000010000000100000000"))
        );
        assert_eq!(next_segment(&wal("00000002.history"), mib16), None);
        assert_eq!(
            next_segment(&wal("000000010000000000000003.partial"), mib16),
            None
        );
    }

    #[test]
    fn acks_and_failures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::at(&dir.path().join("spool"));
        spool.create().unwrap();
        spool.create().unwrap();
        let ack = Ack {
            wal: "000000010000000000000003".into(),
            repository: "/srv/repo".into(),
            key: "demo/archive/x".into(),
            sha256: "ab".repeat(32),
            size: 16 << 20,
            stamp: None,
        };
        assert!(spool.read_ack(&ack.wal).is_none());
        spool.write_ack(&ack).unwrap();
        assert_eq!(spool.read_ack(&ack.wal), Some(ack.clone()));
        // An acknowledgement under another name is not this file's.
        std::fs::copy(
            spool.ack_path(&ack.wal),
            spool.ack_path("000000010000000000000004"),
        )
        .unwrap();
        assert!(spool.read_ack("000000010000000000000004").is_none());
        let failure = Failure {
            code: 3,
            message: "repository down".into(),
        };
        spool
            .write_error("000000010000000000000005", &failure)
            .unwrap();
        assert_eq!(spool.read_error("000000010000000000000005"), Some(failure));
        assert_eq!(
            spool.out_names().unwrap(),
            vec![
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005"
            ]
        );
        spool.remove_ack(&ack.wal);
        spool.remove_error("000000010000000000000005");
        assert_eq!(spool.out_names().unwrap(), vec!["000000010000000000000004"]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(spool.out_dir()).unwrap().count(), 1);
    }

    #[test]
    fn the_worker_lock_tells_whether_a_worker_runs() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::at(dir.path());
        spool.create().unwrap();
        assert!(!spool.worker_running());
        let held = spool.lock_worker().unwrap().expect("free");
        assert!(spool.worker_running());
        assert!(spool.lock_worker().unwrap().is_none());
        drop(held);
        assert!(!spool.worker_running());
    }

    #[test]
    fn the_queue_lists_checked_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::at(dir.path());
        spool.create().unwrap();
        let sha = "cd".repeat(32);
        for name in ["000000010000000000000004", "000000010000000000000003"] {
            std::fs::write(spool.queue_path(&wal(name), &sha), b"x").unwrap();
        }
        std::fs::write(spool.in_dir().join("junk-1"), b"x").unwrap();
        std::fs::write(
            spool
                .in_dir()
                .join(".000000010000000000000005-x.pgpilot-tmp"),
            b"x",
        )
        .unwrap();
        let names: Vec<String> = spool
            .queued()
            .unwrap()
            .iter()
            .map(|q| q.wal.to_string())
            .collect();
        assert_eq!(
            names,
            vec!["000000010000000000000003", "000000010000000000000004"]
        );
        assert_eq!(
            spool
                .prune_queue(|w| w.as_str() >= "000000010000000000000004")
                .unwrap(),
            1
        );
        let marker = spool.fetching(&wal("000000010000000000000006"));
        assert!(spool.is_fetching(&wal("000000010000000000000006")));
        drop(marker);
        assert!(!spool.is_fetching(&wal("000000010000000000000006")));
        std::mem::forget(spool.fetching(&wal("000000010000000000000007")));
        spool.remove_queue_temporaries().unwrap();
        assert!(!spool.is_fetching(&wal("000000010000000000000007")));
        assert_eq!(spool.queued().unwrap().len(), 1);
        assert_eq!(std::fs::read_dir(spool.in_dir()).unwrap().count(), 2);

        // Files queued before a restart of the machine are not trusted.
        assert!(!spool.queue_is_from_this_boot());
        std::fs::write(spool.in_dir().join("boot"), "another boot\n").unwrap();
        assert!(!spool.queue_is_from_this_boot());
        spool.claim_queue().unwrap();
        assert!(
            spool.queued().unwrap().is_empty(),
            "an earlier boot's queue is removed"
        );
        assert!(spool.queue_is_from_this_boot());
        std::fs::write(
            spool.queue_path(&wal("000000010000000000000008"), &sha),
            b"x",
        )
        .unwrap();
        spool.claim_queue().unwrap();
        assert_eq!(
            spool.queued().unwrap().len(),
            1,
            "this boot's queue is kept"
        );
        std::fs::remove_file(spool.queue_path(&wal("000000010000000000000008"), &sha)).unwrap();
        std::fs::remove_file(spool.in_dir().join("boot")).unwrap();

        assert_eq!(spool.read_want().unwrap(), None);
        let want = Want {
            wal: wal("000000010000000000000004"),
            segment_size: 16 << 20,
        };
        spool.write_want(&want).unwrap();
        assert_eq!(spool.read_want().unwrap(), Some(want));
    }
}
