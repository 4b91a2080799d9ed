//! The backup repository: one [`Storage`] trait, one file per driver.
//!
//! - [`posix`]: a directory (the default for a single machine);
//! - [`s3`]: any S3-compatible server, through aws-sdk-s3;
//! - [`retry`]: retries with backoff around any driver;
//! - [`layout`]: where things live inside the repository;
//! - [`identity`]: `repo.json`, which cluster a repository belongs to;
//! - [`config`]: the `[backup]` section of the member's file.
//!
//! Keys are relative to the repository's root (the posix directory, or the
//! bucket plus `backup.s3.prefix`), `/`-separated, never starting with `/`,
//! with no empty, `.` or `..` segment; no key is another key plus `/...`
//! (a directory cannot also be a file). Every driver gives the same promises,
//! checked by one test suite ([`conformance`]) that runs against each:
//!
//! - an object is visible whole or not at all: a crash or an error in the
//!   middle of `put` never leaves a partial object under the key;
//! - `put` returns only once the object is durable (posix: file and
//!   directory fsynced; S3: the server acknowledged it);
//! - `put` with [`PutMode::CreateNew`] never replaces an existing object;
//! - errors say whether trying again may help ([`ErrorKind`]).

/// The `[backup]` section's schema is plain data: [`crate::config::backup`];
/// this name stays for the paths that use it.
pub use crate::config::backup as config;
/// The storage conformance suite: compiled for tests and with the
/// `testing` feature (the tests crate runs it on S3), never into the
/// release binary.
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub(crate) mod identity;
pub mod layout;
pub mod posix;
pub(crate) mod retry;
pub mod s3;
mod s3_http;

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A stream of bytes read from or written to the repository.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// What to store.
pub enum Body {
    /// Bytes in memory: small objects and WAL segments. Can be sent again,
    /// so a failed `put` of bytes is retried.
    Bytes(Bytes),
    /// A stream of unknown length read to its end (a compressed tar part).
    /// Large streams go up in parts (S3 multipart). A stream cannot be
    /// replayed: a failed `put` of a stream is not retried by [`retry`].
    Reader(ByteReader),
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Bytes(Bytes::from(v))
    }
}

/// Whether `put` may replace an object already stored under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace what is there (atomically: readers see the old or the new object).
    Overwrite,
    /// Fail with [`ErrorKind::AlreadyExists`] if the key exists.
    CreateNew,
}

/// What `head` and `list` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes as stored.
    pub size: u64,
    /// Last modification time, when the backend reports one.
    pub modified: Option<SystemTime>,
}

/// An object being read: its stored size and a stream of its bytes (or of
/// the requested range).
pub struct Object {
    pub size: u64,
    pub reader: ByteReader,
}

impl Object {
    /// Read the whole stream into memory, refusing more than `limit` bytes.
    pub async fn into_bytes(mut self, key: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        if self.size > limit {
            return Err(StorageError::permanent(
                "get",
                key,
                format!(
                    "object is {} bytes, more than the {limit} expected",
                    self.size
                ),
            ));
        }
        let mut buf = Vec::with_capacity(self.size as usize);
        (&mut self.reader)
            .take(limit + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::from_io("get", key, &e))?;
        if buf.len() as u64 > limit {
            return Err(StorageError::permanent(
                "get",
                key,
                format!("object is larger than the {limit} bytes expected"),
            ));
        }
        Ok(buf)
    }
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The key holds no object.
    NotFound,
    /// `PutMode::CreateNew` and the key holds an object.
    AlreadyExists,
    /// May succeed if tried again: timeouts, refused or reset connections,
    /// HTTP 5xx / 429 / 408, ENOSPC, EIO.
    Transient,
    /// Will fail again until someone changes something: credentials,
    /// permissions, a missing bucket, a bad key, a corrupt object.
    Permanent,
}

/// A storage failure: which operation, on which key, what kind, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {key}: {message}")]
pub struct StorageError {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

impl StorageError {
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            kind,
            op,
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn not_found(op: &'static str, key: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, op, key, "not found")
    }

    pub fn already_exists(op: &'static str, key: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, op, key, "already exists")
    }

    pub fn transient(op: &'static str, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, op, key, message)
    }

    pub fn permanent(op: &'static str, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, op, key, message)
    }

    /// Classify an I/O error: missing file, or whether retrying may help.
    pub fn from_io(op: &'static str, key: impl Into<String>, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match e.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied
            | Io::ReadOnlyFilesystem
            | Io::InvalidInput
            | Io::InvalidData
            | Io::NotADirectory
            | Io::IsADirectory
            | Io::Unsupported
            | Io::DirectoryNotEmpty => ErrorKind::Permanent,
            // Timeouts, interrupted or reset connections, a full disk or
            // quota, EIO, stale NFS handles: may pass.
            _ => ErrorKind::Transient,
        };
        Self::new(kind, op, key, e.to_string())
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

/// One repository driver. Object-safe: use it as `Arc<dyn Storage>`.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where this repository is, for messages (`/srv/backup`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Store `body` under `key` durably; returns the number of bytes stored.
    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<u64, StorageError>;

    /// Read a whole object as a stream.
    async fn get(&self, key: &str) -> Result<Object, StorageError>;

    /// Read `len` bytes from `offset` (fewer if the object ends first).
    /// `Object::size` is the size of the range returned.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Object, StorageError>;

    /// Size and time of an object; `None` if there is none under `key`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` (a plain string prefix,
    /// not only whole directories), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Remove an object; removing a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
}

/// Check a key against the rules in the module documentation.
pub fn check_key(op: &'static str, key: &str) -> Result<(), StorageError> {
    let bad = |why: &str| {
        Err(StorageError::permanent(
            op,
            key,
            format!("invalid key: {why}"),
        ))
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("starts with '/'");
    }
    if key.contains('\0') || key.contains('\\') {
        return bad("contains NUL or '\\'");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("has an empty, '.' or '..' segment");
        }
        if segment.ends_with(posix::TEMP_SUFFIX) {
            return bad("uses the suffix reserved for temporary files");
        }
    }
    Ok(())
}

/// Check a listing prefix: like a key, but may be empty or end with '/'.
pub fn check_prefix(prefix: &str) -> Result<(), StorageError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err(StorageError::permanent(
            "list",
            prefix,
            "invalid prefix: '/'",
        ));
    }
    check_key("list", trimmed)
}

/// Open the repository the configuration describes.
pub fn open(section: &config::BackupSection) -> Result<Arc<dyn Storage>, StorageError> {
    match section.repository {
        config::RepositoryType::Posix => {
            let posix = section.posix.as_ref().ok_or_else(|| {
                StorageError::permanent("open", "", "backup.posix.path is not set")
            })?;
            Ok(Arc::new(posix::PosixStorage::open(&posix.path)?))
        }
        config::RepositoryType::S3 => {
            let s3 = section
                .s3
                .as_ref()
                .ok_or_else(|| StorageError::permanent("open", "", "[backup.s3] is not set"))?;
            Ok(Arc::new(s3::S3Storage::new(s3::S3Settings::from_config(
                s3,
                section.parallelism,
            )?)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "a/b",
            "stanza/archive/0000000100000000/x-y.zst",
            "a.b/c",
        ] {
            assert!(check_key("t", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a//b",
            "a/./b",
            "a/../b",
            "a/",
            "a\\b",
            "a/.x.pgpilot-tmp",
        ] {
            assert_eq!(
                check_key("t", bad).unwrap_err().kind,
                ErrorKind::Permanent,
                "{bad}"
            );
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a/").is_ok());
        assert!(check_prefix("a/b-").is_ok());
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("../").is_err());
    }

    #[test]
    fn io_errors_are_classified() {
        let e = |k| StorageError::from_io("op", "k", &std::io::Error::from(k)).kind;
        assert_eq!(e(std::io::ErrorKind::NotFound), ErrorKind::NotFound);
        assert_eq!(
            e(std::io::ErrorKind::PermissionDenied),
            ErrorKind::Permanent
        );
        assert_eq!(e(std::io::ErrorKind::TimedOut), ErrorKind::Transient);
        assert_eq!(e(std::io::ErrorKind::StorageFull), ErrorKind::Transient);
    }
}
