//! `archive-push` in async mode (`backup.archive_async`). The sidecar's
//! push-ahead worker ([`super::ahead`]) has usually stored the file already
//! and left an acknowledgement in the spool.
//!
//! 1. An acknowledgement for this name, for this repository and stanza,
//!    for the very file PostgreSQL hands over (same inode, size and change
//!    time as when the worker read it: one `stat`), or else whose size and
//!    SHA-256 match the file's bytes: exit 0 without touching the repository.
//! 2. The worker is active (it holds the spool's lock): the failure it
//!    recorded for this file is the answer (same exit code as a sync push);
//!    otherwise wait for its acknowledgement, up to a short bound.
//! 3. Otherwise (no active worker, no spool, no answer in time, or an
//!    acknowledgement that does not match): push synchronously, exactly as
//!    without async mode. Archiving never depends on the sidecar.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::spool::{Ack, Spool};
use super::{wal, ArchiveError, Call};
use crate::repo::config::{BackupSection, RepositoryType};
use crate::repo::layout::{Layout, WalName};

/// Longest wait for the worker's acknowledgement before pushing here.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the spool is looked at while waiting.
const POLL: Duration = Duration::from_millis(10);

/// Which repository and area an acknowledgement is about: a changed
/// `[backup]` section never trusts an older acknowledgement.
pub fn repository_id(backup: &BackupSection, scope: &str) -> String {
    let stanza = backup.stanza(scope);
    match (&backup.repository, &backup.posix, &backup.s3) {
        (RepositoryType::Posix, Some(posix), _) => {
            format!("posix:{}#{stanza}", posix.path.display())
        }
        (RepositoryType::S3, _, Some(s3)) => format!(
            "s3:{}/{}/{}#{stanza}",
            s3.endpoint.as_deref().unwrap_or("aws"),
            s3.bucket,
            s3.normalized_prefix()
        ),
        _ => format!("{}#{stanza}", backup.location()),
    }
}

/// The async-mode archive-push.
pub async fn push(call: &Call, path: &Path) -> Result<(), ArchiveError> {
    let sync = async || super::push::push(call.context()?, path).await.map(|_| ());
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(WalName::parse)
    else {
        return sync().await; // which reports the bad name
    };
    let spool = match Spool::new(&call.config, &call.backup) {
        Ok(spool) => spool,
        Err(e) => {
            tracing::warn!("async archiving: {e}; pushing {name} here");
            return sync().await;
        }
    };
    let expected = Expected {
        repository: repository_id(&call.backup, &call.config.cluster.scope),
        layout: Layout::new(call.backup.stanza(&call.config.cluster.scope)),
    };
    if let Some(ack) = spool.read_ack(name.as_str()) {
        if proves(&expected, &name, &ack, path).await? {
            return Ok(());
        }
        spool.remove_ack(name.as_str());
    } else if spool.worker_running() {
        // A failure recorded before this call is the worker's past: it
        // retries on its own schedule, and this call pushes the file here.
        // One recorded while this call waits is the answer.
        let since = SystemTime::now();
        let waited = Instant::now();
        let bound = (call.backup.archive_timeout() / 4).min(MAX_WAIT);
        let mut answer = "no answer";
        if spool.read_error(name.as_str()).is_some() {
            answer = "an earlier failure";
        } else {
            while waited.elapsed() < bound && spool.worker_running() {
                tokio::time::sleep(POLL).await;
                if let Some(ack) = spool.read_ack(name.as_str()) {
                    if proves(&expected, &name, &ack, path).await? {
                        return Ok(());
                    }
                    spool.remove_ack(name.as_str());
                    answer = "an acknowledgement that does not match";
                    break;
                }
                if let Some(failure) = spool.read_error_since(name.as_str(), since) {
                    return Err(reported(failure));
                }
            }
        }
        tracing::info!(
            "{name}: {answer} from the push-ahead worker after {} ms: pushing it here",
            waited.elapsed().as_millis()
        );
    }
    sync().await
}

fn reported(failure: super::spool::Failure) -> ArchiveError {
    // Never a success (or "not found") from a file: only a failure code
    // PostgreSQL retries after.
    let code = if (2..126).contains(&failure.code) {
        failure.code
    } else {
        super::code::LOCAL
    };
    ArchiveError::Reported {
        code,
        message: format!(
            "the sidecar's push-ahead worker could not archive this file: {}",
            failure.message
        ),
    }
}

struct Expected {
    repository: String,
    layout: Layout,
}

/// Does `ack` prove that the bytes of the file at `path` are stored? The
/// file's size and SHA-256 must be the acknowledged ones, and the object
/// the one this configuration would store them under.
async fn proves(
    expected: &Expected,
    name: &WalName,
    ack: &Ack,
    path: &Path,
) -> Result<bool, ArchiveError> {
    let why_not = if ack.repository != expected.repository {
        Some(format!("it is for {}", ack.repository))
    } else if ack.key != expected.layout.wal_key(name, &ack.sha256) {
        Some(format!("its key {} is not this file's", ack.key))
    } else if ack
        .stamp
        .is_some_and(|stamp| wal::FileStamp::of_path(path).is_ok_and(|now| now == stamp))
    {
        // The file the worker read and hashed, unchanged since.
        None
    } else {
        let owned = path.to_path_buf();
        let size = ack.size;
        let digest = tokio::task::spawn_blocking(move || hash_if_size(&owned, size))
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
            .map_err(|e| ArchiveError::Local(format!("cannot read {}: {e}", path.display())))?;
        match digest {
            None => Some(format!("it records {} bytes", ack.size)),
            Some(sha) if sha != ack.sha256 => Some(format!(
                "it records the SHA-256 {}, the file's is {sha}",
                ack.sha256
            )),
            Some(_) => None,
        }
    };
    match why_not {
        None => {
            tracing::info!(
                "{name}: stored ahead by the sidecar as {} (size and SHA-256 match)",
                ack.key
            );
            Ok(true)
        }
        Some(why) => {
            tracing::warn!(
                "{name}: the spool's acknowledgement does not match this file ({why}): \
                 not trusted; pushing the file here"
            );
            Ok(false)
        }
    }
}

/// The SHA-256 of the file, if it has `size` bytes.
fn hash_if_size(path: &Path, size: u64) -> std::io::Result<Option<String>> {
    if std::fs::metadata(path)?.len() != size {
        return Ok(None);
    }
    let digest = wal::hash_file(path)?;
    Ok((digest.size == size).then_some(digest.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_only_at_the_recorded_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(hash_if_size(&path, 4).unwrap(), None);
        assert_eq!(
            hash_if_size(&path, 3).unwrap(),
            Some(wal::sha256_hex(b"abc"))
        );
    }
}
