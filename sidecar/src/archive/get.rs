//! `pgpilot archive-get [--config FILE] <walname> <destpath>`: restore one
//! WAL file from the repository (PostgreSQL's `restore_command`).
//!
//! Found: decompress into a temporary file next to the destination, check
//! the SHA-256 its key names, rename onto the destination, exit 0. Not in the
//! repository: exit 1 and print nothing (PostgreSQL's convention for "no such
//! file"). Anything else exits with another code and a message.
//!
//! The destination is not fsynced: PostgreSQL replays the file at once and
//! fsyncs what it keeps (`KeepFileRestoredFromArchive` does a durable rename).
//!
//! In async mode a segment may come from the prefetch queue instead
//! ([`super::prefetch`]).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{wal, ArchiveError, ConfigArg, Context};
use crate::repo::layout::WalName;
use crate::repo::Storage;

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The file PostgreSQL asks for (%f).
    pub walname: String,
    /// Where to write it (%p, relative to the data directory).
    pub dest: PathBuf,
}

/// Entry point; returns the exit code (see [`super::code`]).
pub fn main(args: GetArgs) -> i32 {
    let (walname, dest) = (args.walname, args.dest);
    super::run("archive-get", &args.config.config, async move |call| {
        if call.backup.archive_async && call.backup.archive_get_queue > 0 {
            return super::prefetch::get(call, &walname, &dest).await;
        }
        get(call.context()?, &walname, &dest).await
    })
}

/// Restore `walname` into `dest`.
pub async fn get(context: &Context, walname: &str, dest: &Path) -> Result<(), ArchiveError> {
    let name = WalName::parse(walname).ok_or_else(|| {
        ArchiveError::Usage(format!(
            "{walname:?} is not a WAL file name (segment, .partial, .backup or .history)"
        ))
    })?;
    let (key, sha) = locate(context, &name).await?;
    let compressed = fetch(context, &key).await?;
    let dest = dest.to_path_buf();
    let location = context.storage.location();
    tokio::task::spawn_blocking(move || write_verified(&compressed, &sha, &dest, &key, &location))
        .await
        .map_err(|e| ArchiveError::Local(e.to_string()))?
}

/// The key and SHA-256 of the one stored copy of `name`.
pub async fn locate(context: &Context, name: &WalName) -> Result<(String, String), ArchiveError> {
    let storage = &context.storage;
    let listed = storage
        .list(&context.layout.wal_prefix(name))
        .await
        .map_err(|e| ArchiveError::repository(storage, e))?;
    let copies: Vec<(String, String)> = listed
        .into_iter()
        .filter_map(|meta| {
            let (wal, sha) = context.layout.parse_wal_key(&meta.key)?;
            (wal == *name).then_some((meta.key, sha))
        })
        .collect();
    match copies.as_slice() {
        [] => Err(ArchiveError::NotFound),
        [one] => Ok(one.clone()),
        several => {
            let keys: Vec<&str> = several.iter().map(|(k, _)| k.as_str()).collect();
            Err(ArchiveError::Corrupt(format!(
                "{name} is stored more than once with different content ({}): refusing to guess \
                 which one to replay; remove the wrong copy",
                keys.join(", ")
            )))
        }
    }
}

/// Fetch a whole object, retrying transient errors (also mid-stream).
pub async fn fetch(context: &Context, key: &str) -> Result<Vec<u8>, ArchiveError> {
    let storage = &context.storage;
    storage
        .run("get", key, || async {
            storage.get(key).await?.into_bytes(key, 2 << 30).await
        })
        .await
        .map_err(|e| ArchiveError::repository(storage, e))
}

/// Decompress into a temporary file beside `dest`, hashing on the way;
/// rename it onto `dest` only if the SHA-256 is the one the object's key
/// names (else the temporary file is removed and `dest` is untouched).
pub(crate) fn write_verified(
    compressed: &[u8],
    sha: &str,
    dest: &Path,
    key: &str,
    location: &str,
) -> Result<(), ArchiveError> {
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ArchiveError::Usage(format!("{} is not a file path", dest.display())))?;
    let corrupt = |why: String| {
        ArchiveError::Corrupt(format!("{location}/{key} {why}; the file was not restored"))
    };
    let temp = dest.with_file_name(format!(".{file_name}.pgpilot-tmp"));
    let local =
        |e: std::io::Error| ArchiveError::Local(format!("cannot write {}: {e}", temp.display()));
    let outcome = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(local)
        .and_then(|mut file| match wal::decompress_to(compressed, &mut file) {
            Ok((got, _)) if got == sha => Ok(()),
            Ok((got, _)) => Err(corrupt(format!(
                "is corrupt: its content hashes to {got}, not {sha}"
            ))),
            Err(wal::StreamFailure::Decode(e)) => {
                Err(corrupt(format!("cannot be decompressed ({e})")))
            }
            Err(wal::StreamFailure::Write(e)) => Err(local(e)),
        })
        .and_then(|()| {
            std::fs::rename(&temp, dest).map_err(|e| {
                ArchiveError::Local(format!("cannot rename onto {}: {e}", dest.display()))
            })
        });
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    outcome
}
