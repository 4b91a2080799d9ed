//! A repository in a local (or mounted) directory.
//!
//! An object is a file under the root; its key is its relative path. A write
//! goes to a temporary file in the target directory (`.<name>.<pid>.<n>` +
//! [`TEMP_SUFFIX`]), which is fsynced, then renamed over the key (or, for
//! [`PutMode::CreateNew`], renamed only if the key is free), and the directory
//! is fsynced. A crash leaves at worst a temporary file, which listings skip.
//!
//! File system calls run on tokio's blocking pool, or, for a process that
//! makes one call at a time and bounds it from another thread (the WAL
//! commands, see `archive::run`), on the calling thread ([`PosixStorage::inline`]):
//! no hand-over between threads per call.
//!
//! The root must exist: a missing mount point must not make pgpilot write
//! WAL onto the local disk underneath it. New files and directories belong
//! to whoever writes them (PostgreSQL's user for `archive-push`), except that
//! a process running as root hands them to the owner of the root directory,
//! so that root-run commands never leave entries PostgreSQL cannot write into.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    check_key, check_prefix, Body, ByteReader, Object, ObjectMeta, PutMode, Storage, StorageError,
};

/// Suffix of temporary files; keys may not use it.
pub const TEMP_SUFFIX: &str = ".pgpilot-tmp";

const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

#[derive(Debug, Clone)]
pub struct PosixStorage {
    root: PathBuf,
    /// uid/gid new entries are given (running as root, root dir owned by another user).
    owner: Option<(u32, u32)>,
    /// File system calls on the calling thread rather than the blocking pool.
    inline: bool,
}

impl PosixStorage {
    /// Use an existing directory as the repository root.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let shown = root.display().to_string();
        let meta = std::fs::metadata(root).map_err(|e| {
            let mut err = StorageError::from_io("open", shown.clone(), &e);
            if err.is_not_found() {
                // A missing root is a setup problem, not a missing object.
                err = StorageError::permanent(
                    "open",
                    shown.clone(),
                    "the repository directory does not exist: create it (owned by the user \
                     PostgreSQL runs as) or fix backup.posix.path",
                );
            }
            err
        })?;
        if !meta.is_dir() {
            return Err(StorageError::permanent(
                "open",
                shown,
                "not a directory: fix backup.posix.path",
            ));
        }
        let owner = (nix::unistd::geteuid().is_root() && meta.uid() != 0)
            .then_some((meta.uid(), meta.gid()));
        Ok(PosixStorage {
            root: root.to_path_buf(),
            owner,
            inline: false,
        })
    }

    /// Run file system calls on the calling thread. Only for a process that
    /// does one thing at a time and bounds it from another thread: a call
    /// that hangs (a dead NFS server) blocks the runtime's thread with it.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Run `f` on the calling thread or on the blocking pool.
    async fn io<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        if self.inline {
            f()
        } else {
            blocking(f).await
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn give(&self, path: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Create the missing directories between the root and `key`'s parent,
    /// fsyncing each parent so the new entries survive a crash.
    fn create_parents(&self, key: &str) -> std::io::Result<PathBuf> {
        let mut dir = self.root.clone();
        let segments: Vec<&str> = key.split('/').collect();
        for segment in &segments[..segments.len() - 1] {
            let next = dir.join(segment);
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(&next) {
                Ok(()) => {
                    self.give(&next)?;
                    fsync_dir(&dir)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !next.is_dir() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            format!("{} exists and is not a directory", next.display()),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
            dir = next;
        }
        Ok(dir)
    }

    /// A new temporary file next to `key`: (its path, the open file).
    fn create_temp(&self, key: &str) -> std::io::Result<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.create_parents(key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)
            {
                Ok(file) => {
                    if let Err(e) = self.give(&temp) {
                        let _ = std::fs::remove_file(&temp);
                        return Err(e);
                    }
                    return Ok((temp, file));
                }
                // Left by a crashed process that had the same pid: pick another name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Move a complete, fsynced temporary file to `key` and fsync the directory.
    fn publish(&self, temp: &Path, key: &str, mode: PutMode) -> std::io::Result<()> {
        let target = self.path(key);
        let dir_path = target.parent().unwrap_or(&self.root);
        let dir = File::open(dir_path)?;
        match mode {
            PutMode::Overwrite => std::fs::rename(temp, &target)?,
            PutMode::CreateNew => rename_noreplace(&dir, temp, &target)?,
        }
        dir.sync_all()
    }

    fn put_bytes_blocking(&self, key: &str, bytes: &[u8], mode: PutMode) -> std::io::Result<()> {
        if mode == PutMode::CreateNew && self.path(key).exists() {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        let (temp, mut file) = self.create_temp(key)?;
        let result = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                drop(file);
                self.publish(&temp, key, mode)
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    async fn put_reader(
        &self,
        key: &str,
        mut reader: ByteReader,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        let err = |e: std::io::Error| StorageError::from_io("put", key, &e);
        let this = self.clone();
        let owned_key = key.to_string();
        let (temp, file) = blocking(move || this.create_temp(&owned_key))
            .await
            .map_err(err)?;
        let mut file = tokio::fs::File::from_std(file);
        let copied = async {
            let n = tokio::io::copy(&mut reader, &mut file).await?;
            file.sync_all().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        drop(file);
        let result = match copied {
            Ok(n) => {
                let this = self.clone();
                let (temp, owned_key) = (temp.clone(), key.to_string());
                blocking(move || this.publish(&temp, &owned_key, mode))
                    .await
                    .map(|()| n)
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(err)
    }

    fn list_blocking(&self, prefix: &str) -> std::io::Result<Vec<ObjectMeta>> {
        let dir_key = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut found = Vec::new();
        let mut stack = vec![(self.root.join(dir_key), dir_key.to_string())];
        while let Some((dir, dir_key)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue; // not UTF-8: not one of ours
                };
                if name.ends_with(TEMP_SUFFIX) {
                    continue;
                }
                let key = format!("{dir_key}{name}");
                let sub = format!("{key}/");
                // Only entries that can match (a file under the prefix, or
                // a directory on the way to it) are looked at: listing one
                // WAL file's copies costs one stat, not one per segment.
                if !(sub.starts_with(prefix) || prefix.starts_with(&sub)) {
                    continue;
                }
                let meta = match std::fs::metadata(entry.path()) {
                    Ok(meta) => meta,
                    // Removed while we list: not there.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if meta.is_dir() {
                    stack.push((entry.path(), sub));
                } else if meta.is_file() && key.starts_with(prefix) {
                    found.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// rename(2) that fails with AlreadyExists instead of replacing the target.
fn rename_noreplace(dir: &File, from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    let (Some(from_name), Some(to_name)) = (from.file_name(), to.file_name()) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    match renameat2(dir, from_name, dir, to_name, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(std::io::ErrorKind::AlreadyExists.into()),
        // The filesystem lacks RENAME_NOREPLACE (NFS, some FUSE): link(2)
        // also refuses an existing target.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// A file read on the calling thread ([`PosixStorage::inline`]).
struct InlineReader(File);

impl tokio::io::AsyncRead for InlineReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        let n = self.0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("blocking task failed: {e}")))?
}

#[async_trait::async_trait]
impl Storage for PosixStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<u64, StorageError> {
        check_key("put", key)?;
        match body {
            Body::Bytes(bytes) => {
                let this = self.clone();
                let (owned_key, len) = (key.to_string(), bytes.len() as u64);
                self.io(move || this.put_bytes_blocking(&owned_key, &bytes, mode))
                    .await
                    .map(|()| len)
                    .map_err(|e| StorageError::from_io("put", key, &e))
            }
            Body::Reader(reader) => {
                if mode == PutMode::CreateNew && self.head(key).await?.is_some() {
                    return Err(StorageError::already_exists("put", key));
                }
                self.put_reader(key, reader, mode).await
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Object, StorageError> {
        check_key("get", key)?;
        if self.inline {
            let err = |e: std::io::Error| StorageError::from_io("get", key, &e);
            let file = File::open(self.path(key)).map_err(err)?;
            let meta = file.metadata().map_err(err)?;
            if !meta.is_file() {
                return Err(StorageError::not_found("get", key));
            }
            return Ok(Object {
                size: meta.len(),
                reader: Box::pin(InlineReader(file)),
            });
        }
        let file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| StorageError::from_io("get", key, &e))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| StorageError::from_io("get", key, &e))?;
        if !meta.is_file() {
            return Err(StorageError::not_found("get", key));
        }
        Ok(Object {
            size: meta.len(),
            reader: Box::pin(file),
        })
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Object, StorageError> {
        check_key("get", key)?;
        let err = |e: std::io::Error| StorageError::from_io("get", key, &e);
        let mut file = tokio::fs::File::open(self.path(key)).await.map_err(err)?;
        let size = file.metadata().await.map_err(err)?.len();
        if offset > size {
            return Err(StorageError::permanent(
                "get",
                key,
                format!("range starts at {offset}, after the end of the {size}-byte object"),
            ));
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(err)?;
        let len = len.min(size - offset);
        Ok(Object {
            size: len,
            reader: Box::pin(file.take(len)),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        check_key("head", key)?;
        let path = self.path(key);
        match self.io(move || std::fs::metadata(path)).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
                modified: meta.modified().ok(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::from_io("head", key, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        check_prefix(prefix)?;
        let this = self.clone();
        let owned = prefix.to_string();
        self.io(move || this.list_blocking(&owned))
            .await
            .map_err(|e| StorageError::from_io("list", prefix, &e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key("delete", key)?;
        let path = self.path(key);
        let result = self
            .io(move || {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
                fsync_dir(path.parent().expect("a key has a parent directory"))
            })
            .await;
        result.map_err(|e| StorageError::from_io("delete", key, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, PosixStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = PosixStorage::open(dir.path()).unwrap();
        (dir, storage)
    }

    #[tokio::test]
    async fn conformance() {
        let (_dir, files) = storage();
        crate::repo::conformance::run(&files).await.unwrap();
        let (_dir, files) = storage();
        crate::repo::conformance::run(&files.inline())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn temporary_files_are_invisible_and_cleaned_up() {
        let (dir, storage) = storage();
        storage
            .put("a/b", Body::from(b"x".to_vec()), PutMode::Overwrite)
            .await
            .unwrap();
        // A crash mid-write leaves a temporary file: never listed, never read.
        std::fs::write(dir.path().join("a/.b.1.0.pgpilot-tmp"), b"partial").unwrap();
        let keys: Vec<String> = storage
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["a/b".to_string()]);
        // A failed CreateNew leaves no temporary file behind.
        let err = storage
            .put("a/b", Body::from(b"y".to_vec()), PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::AlreadyExists);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn missing_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = PosixStorage::open(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Permanent);
        assert!(err.message.contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn unwritable_directory_is_a_permanent_error() {
        if nix::unistd::geteuid().is_root() {
            return; // root writes anyway; the e2e tests cover this as the postgres user
        }
        let (dir, storage) = storage();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        let err = storage
            .put("k", Body::from(b"x".to_vec()), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Permanent);
    }
}
