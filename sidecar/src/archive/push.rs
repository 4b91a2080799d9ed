//! `pgpilot archive-push [--config FILE] <path>`: store one WAL file
//! (segment, `.partial`, `.backup` or `.history`) in the repository.
//!
//! 1. Read the file once, in pieces: SHA-256 of each piece here, zstd on
//!    `backup.parallelism` threads of its own ([`wal::pack_file`]); a
//!    segment's page header must name this cluster and the segment the file
//!    is named after.
//! 2. Check the repository's identity (`repo.json`; created on first use).
//! 3. List the stored copies of the file: the same SHA-256 → done (warning);
//!    another SHA-256 → refuse, exit 45, touch nothing.
//! 4. Store `<walname>-<sha256>.zst` (create-only), then check that the
//!    object is there with the size written. Only then exit 0.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{wal, ArchiveError, ConfigArg, Context};
use crate::repo::identity::{self, ClusterIdentity};
use crate::repo::layout::WalName;
use crate::repo::{ErrorKind, PutMode, Storage};

#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The file to archive (PostgreSQL's %p, relative to the data directory).
    pub path: PathBuf,
}

/// Entry point; returns the exit code (see [`super::code`]).
pub fn main(args: PushArgs) -> i32 {
    let path = args.path;
    super::run("archive-push", &args.config.config, async move |call| {
        if call.backup.archive_async {
            return super::async_push::push(call, &path).await;
        }
        push(call.context()?, &path).await.map(|_| ())
    })
}

/// How a push ended well: where the file is and what was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The object holding the file.
    pub key: String,
    /// SHA-256 and size of the file's bytes as read (the object holds them).
    pub sha256: String,
    pub size: u64,
    /// The same content was stored already (by an earlier attempt).
    pub already_stored: bool,
    /// The file as it was read: an unchanged stamp means the same bytes.
    pub stamp: wal::FileStamp,
}

/// Archive the file at `path` into the context's repository, compressing
/// on `backup.parallelism` threads.
pub async fn push(context: &Context, path: &Path) -> Result<Pushed, ArchiveError> {
    push_on(context, path, context.backup.parallelism as u32).await
}

/// [`push`] with zstd on `workers` threads besides the one that reads and
/// hashes (the push-ahead worker, which pushes several files at once, uses 1).
pub async fn push_on(context: &Context, path: &Path, workers: u32) -> Result<Pushed, ArchiveError> {
    let started = std::time::Instant::now();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(WalName::parse)
        .ok_or_else(|| {
            ArchiveError::Usage(format!(
                "{} is not a WAL file name (segment, .partial, .backup or .history)",
                path.display()
            ))
        })?;
    // One hop off the runtime for all the local work: the cluster's
    // identity, then the file read once (hashed and compressed on the way).
    let owned_path = path.to_path_buf();
    let data_dir = context.config.postgresql.data_dir.clone();
    let level = context.backup.compression_level;
    let (local, packed) = tokio::task::spawn_blocking(move || {
        let local = ClusterIdentity::from_data_dir(&data_dir).map_err(ArchiveError::Local)?;
        let packed = wal::pack_file(&owned_path, level, workers).map_err(|e| {
            ArchiveError::Local(format!("cannot read {}: {e}", owned_path.display()))
        })?;
        Ok::<_, ArchiveError>((local, packed))
    })
    .await
    .map_err(|e| ArchiveError::Local(e.to_string()))??;
    check_header(&name, packed.header, &local)?;
    let sha = packed.sha256;
    let compressed = Bytes::from(packed.compressed);

    let storage = &context.storage;
    let layout = &context.layout;
    let repo_err = |e| ArchiveError::repository(storage, e);
    identity::ensure(storage, layout, &local)
        .await
        .map_err(|e| ArchiveError::identity(storage, e))?;

    let key = layout.wal_key(&name, &sha);
    let pushed = |already_stored| Pushed {
        key: key.clone(),
        sha256: sha.clone(),
        size: packed.size,
        already_stored,
        stamp: packed.stamp,
    };
    let stored = stored_copies(context, &name).await?;
    if stored.iter().any(|(k, _)| *k == key) {
        return already_stored(context, &name, &key, &sha, &compressed)
            .await
            .map(pushed);
    }
    if !stored.is_empty() {
        let shas: Vec<&str> = stored.iter().map(|(_, s)| s.as_str()).collect();
        return Err(ArchiveError::Duplicate(format!(
            "{name} is already archived in {} with different content (SHA-256 {}; this file's is \
             {sha}). Nothing was written and the stored copy is kept. Two primaries may have \
             written the same timeline, or this repository holds another cluster's WAL under the \
             same stanza: find out which copy is right before removing anything.",
            storage.location(),
            shas.join(", ")
        )));
    }

    match storage
        .put(&key, compressed.clone().into(), PutMode::CreateNew)
        .await
    {
        Ok(_) => {}
        // A concurrent or earlier attempt stored it: check that copy.
        Err(e) if e.kind == ErrorKind::AlreadyExists => {
            return already_stored(context, &name, &key, &sha, &compressed)
                .await
                .map(pushed);
        }
        Err(e) => return Err(repo_err(e)),
    }
    verify_size(context, &key, compressed.len() as u64).await?;
    tracing::info!(
        "archived {name} ({} → {} bytes) in {} ms",
        packed.size,
        compressed.len(),
        started.elapsed().as_millis()
    );
    Ok(pushed(false))
}

/// A segment must come from this cluster and be the segment it is named after.
fn check_header(
    name: &WalName,
    header: Option<wal::PageHeader>,
    local: &ClusterIdentity,
) -> Result<(), ArchiveError> {
    if !name.has_page_header() {
        return Ok(());
    }
    let header = header.ok_or_else(|| {
        ArchiveError::Local(format!(
            "{name} does not start with a WAL page header: refusing to archive it"
        ))
    })?;
    if header.system_identifier != local.system_identifier {
        return Err(ArchiveError::WrongCluster(format!(
            "{name} was written by the cluster with system identifier {}, but the data directory \
             in the configuration holds {}: check postgresql.data_dir and archive_command",
            header.system_identifier, local.system_identifier
        )));
    }
    if wal::segment_start(name, header.segment_size) != Some(header.page_address) {
        return Err(ArchiveError::Local(format!(
            "{name} holds WAL from position {:X}/{:X}, not the segment its name says: refusing to \
             archive it under that name",
            header.page_address >> 32,
            header.page_address & 0xffff_ffff
        )));
    }
    Ok(())
}

/// Keys and SHA-256s of the stored copies of `name`.
async fn stored_copies(
    context: &Context,
    name: &WalName,
) -> Result<Vec<(String, String)>, ArchiveError> {
    let listed = context
        .storage
        .list(&context.layout.wal_prefix(name))
        .await
        .map_err(|e| ArchiveError::repository(&context.storage, e))?;
    Ok(listed
        .into_iter()
        .filter_map(|meta| {
            let (wal, sha) = context.layout.parse_wal_key(&meta.key)?;
            (wal == *name).then_some((meta.key, sha))
        })
        .collect())
}

/// The same content is stored already: make sure that copy is whole (read
/// it back and check its SHA-256), repairing it if it is not. True when the
/// stored copy was good, false when it was replaced.
async fn already_stored(
    context: &Context,
    name: &WalName,
    key: &str,
    sha: &str,
    compressed: &Bytes,
) -> Result<bool, ArchiveError> {
    let storage = &context.storage;
    let stored = storage
        .get(key)
        .await
        .map_err(|e| ArchiveError::repository(storage, e))?
        .into_bytes(key, 2 << 30)
        .await
        .map_err(|e| ArchiveError::repository(storage, e))?;
    let good = tokio::task::spawn_blocking(move || {
        wal::decompress_into(&stored, &mut std::io::sink()).map(|(s, _)| s)
    })
    .await
    .map_err(|e| ArchiveError::Local(e.to_string()))?;
    match good {
        Ok(stored_sha) if stored_sha == sha => {
            tracing::warn!(
                "{name} is already archived with the same content (SHA-256 {sha}): nothing to do. \
                 This is normal after an interrupted archive_command or a restart."
            );
            Ok(true)
        }
        failed => {
            // The object's name promises this content and it does not hold
            // it: it is unusable as it is, and we hold the right bytes.
            let why = match failed {
                Ok(other) => format!("its content hashes to {other}"),
                Err(e) => e.to_string(),
            };
            tracing::warn!("the stored copy of {name} ({key}) is damaged ({why}): replacing it");
            storage
                .put(key, compressed.clone().into(), PutMode::Overwrite)
                .await
                .map_err(|e| ArchiveError::repository(storage, e))?;
            verify_size(context, key, compressed.len() as u64).await?;
            Ok(false)
        }
    }
}

/// The object must be visible with exactly the bytes written.
async fn verify_size(context: &Context, key: &str, want: u64) -> Result<(), ArchiveError> {
    let storage = &context.storage;
    match storage
        .head(key)
        .await
        .map_err(|e| ArchiveError::repository(storage, e))?
    {
        Some(meta) if meta.size == want => Ok(()),
        Some(meta) => Err(ArchiveError::Corrupt(format!(
            "{}/{key} holds {} bytes after storing {want}: the repository lost data; \
             PostgreSQL will retry",
            storage.location(),
            meta.size
        ))),
        None => Err(ArchiveError::Corrupt(format!(
            "{}/{key} is not visible after it was stored; PostgreSQL will retry",
            storage.location()
        ))),
    }
}
