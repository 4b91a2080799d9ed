//! archive-get in async mode: the segments after the one recovery asks
//! for are fetched ahead into `<spool>/in/`, decompressed and checked, so
//! that the next calls only check and move a local file.
//!
//! Who fetches ahead: a detached `pgpilot archive-get-prefetch` process that
//! the first archive-get starts (one per spool, by lock), not the sidecar.
//! Recovery also runs where no sidecar loop runs (`pgpilot restore`
//! followed by PostgreSQL's start, a PITR, a member bootstrapping from a
//! backup), and the process runs as PostgreSQL's user, who owns the files.
//!
//! - archive-get N (a segment): if `N-<sha256>` is queued, it is moved onto
//!   the destination (a rename). The prefetcher checked its bytes against
//!   that SHA-256 before it queued it; a file queued before the machine last
//!   started is hashed again first, and one of the wrong size is not used.
//!   Otherwise N is fetched as without async mode. Then the call records N as wanted,
//!   drops queued files of other timelines and before N, and starts the
//!   prefetcher if none runs. A missing N (exit 1) starts nothing.
//! - The prefetcher keeps the next `backup.archive_get_queue` segments
//!   after the wanted one queued, `backup.parallelism` fetches at once. A
//!   segment missing from the repository is the end of the archive: it
//!   fetches nothing at or past it until recovery asks for a later segment.
//!   It exits when recovery has asked for nothing new for [`IDLE`] (the
//!   queue is then emptied), when PostgreSQL stops, or after [`LIFETIME`].

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::spool::{next_segment, Queued, Spool, Want};
use super::{code, wal, Archive, ArchiveError, Call};
use crate::config::Config;
use crate::repo::layout::{WalKind, WalName};
use crate::repo::Storage;

/// The prefetcher exits when recovery asked for nothing new for this long.
pub const IDLE: Duration = Duration::from_secs(10);
/// The prefetcher never lives longer than this; the next call starts another.
pub const LIFETIME: Duration = Duration::from_secs(3600);
/// Longest wait for a segment the prefetcher is fetching.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How often the prefetcher looks at what recovery wants.
const POLL: Duration = Duration::from_millis(20);
/// The prefetcher's log is started afresh past this size.
const MAX_LOG: u64 = 1 << 20;

/// The async-mode archive-get.
pub async fn get(call: &Call, walname: &str, dest: &Path) -> Result<(), ArchiveError> {
    let plain = async || super::get::get(call.context()?, walname, dest).await;
    let Some(name) = WalName::parse(walname).filter(|n| n.kind() == WalKind::Segment) else {
        return plain().await; // history, backup and partial files, bad names
    };
    let spool = match Spool::new(&call.config, &call.backup)
        .and_then(|spool| spool.create().map_err(|e| e.to_string()).map(|()| spool))
    {
        Ok(spool) => spool,
        Err(e) => {
            tracing::warn!("prefetch is off: {e}");
            return plain().await;
        }
    };
    let hit = match queued_or_arriving(&spool, &name, call.backup.archive_timeout()).await {
        Some(queued) => take(&spool, &queued, &name, dest).await?,
        None => false,
    };
    if !hit {
        plain().await?;
        let segment_size = segment_size_of(dest).unwrap_or(16 << 20);
        let _ = spool.write_want(&Want {
            wal: name.clone(),
            segment_size,
        });
    }
    // Recovery moved to N: older segments and other timelines are useless.
    let _ = spool.prune_queue(|w| w.timeline() == name.timeline() && w.as_str() > name.as_str());
    if !spool.prefetcher_running() {
        start_prefetcher(&call.config, &spool);
    }
    Ok(())
}

/// The queued copy of `name`; if the prefetcher is fetching it right now,
/// wait for it (up to a quarter of `archive_timeout`, at most [`MAX_WAIT`])
/// rather than fetch it a second time.
async fn queued_or_arriving(spool: &Spool, name: &WalName, timeout: Duration) -> Option<Queued> {
    let find = || {
        spool
            .queued()
            .unwrap_or_default()
            .into_iter()
            .find(|q| q.wal == *name)
    };
    let waited = Instant::now();
    let bound = (timeout / 4).min(MAX_WAIT);
    loop {
        if let Some(queued) = find() {
            return Some(queued);
        }
        let arriving = spool.is_fetching(name) && spool.prefetcher_running();
        if !arriving || waited.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serve `name` from the queue: check its bytes, record it as wanted (so
/// the prefetcher moves on), move it onto `dest`. False when the queued
/// file cannot be used (it is removed, and the caller fetches the segment).
async fn take(
    spool: &Spool,
    queued: &Queued,
    name: &WalName,
    dest: &Path,
) -> Result<bool, ArchiveError> {
    let checked = if spool.queue_is_from_this_boot() {
        // Checked by the prefetcher before it was queued, in this boot.
        queued_size(&queued.path)
    } else {
        let path = queued.path.clone();
        let sha = queued.sha256.clone();
        tokio::task::spawn_blocking(move || check_queued(&path, &sha))
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
    };
    let segment_size = match checked {
        Ok(segment_size) => segment_size,
        Err(why) => {
            tracing::warn!(
                "{name}: the prefetched copy {} is not used ({why}); fetching it again",
                queued.path.display()
            );
            let _ = std::fs::remove_file(&queued.path);
            return Ok(false);
        }
    };
    let _ = spool.write_want(&Want {
        wal: name.clone(),
        segment_size,
    });
    // A rename; a copy (off the runtime) when the spool is on another file system.
    let moved = match std::fs::rename(&queued.path, dest) {
        Ok(()) => Ok(()),
        Err(_) => {
            let (from, to) = (queued.path.clone(), dest.to_path_buf());
            tokio::task::spawn_blocking(move || move_into_place(&from, &to))
                .await
                .map_err(|e| ArchiveError::Local(e.to_string()))?
        }
    };
    match moved {
        Ok(()) => {
            tracing::info!("{name}: restored from the prefetch queue");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!("{name}: cannot use the prefetched copy ({e}); fetching it again");
            let _ = std::fs::remove_file(&queued.path);
            Ok(false)
        }
    }
}

/// The segment size of a queued file whose bytes hash to `sha`.
fn check_queued(path: &Path, sha: &str) -> Result<u32, String> {
    let digest = wal::hash_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    if digest.sha256 != sha {
        return Err(format!(
            "its content hashes to {}, not {sha}",
            digest.sha256
        ));
    }
    digest
        .header
        .map(|h| h.segment_size)
        .ok_or_else(|| "it does not start with a WAL page header".to_string())
}

/// The segment size of a queued file that is whole: as long as the
/// segment size its first page header records.
fn queued_size(path: &Path) -> Result<u32, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    let segment_size = segment_size_of(path).ok_or("it does not start with a WAL page header")?;
    if size != u64::from(segment_size) {
        return Err(format!(
            "it holds {size} bytes, not the {segment_size} of a segment"
        ));
    }
    Ok(segment_size)
}

/// A rename when the spool shares the destination's file system; else a
/// copy through a temporary file beside the destination.
fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    let file_name = to
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", to.display())))?;
    let temp = to.with_file_name(format!(".{file_name}.pgpilot-tmp"));
    let copied = std::fs::copy(from, &temp).and_then(|_| std::fs::rename(&temp, to));
    if copied.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let _ = std::fs::remove_file(from);
    copied
}

/// The segment size a restored segment's first page header records.
fn segment_size_of(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut head = [0u8; 64];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    wal::long_page_header(&head).map(|h| h.segment_size)
}

/// Start `pgpilot archive-get-prefetch` detached: its own process group,
/// output to the spool's log. A failure only costs the prefetch.
fn start_prefetcher(config: &Config, spool: &Spool) {
    let (Some(config_path), Ok(exe)) = (config.source.as_ref(), std::env::current_exe()) else {
        return;
    };
    let log_path = spool.prefetch_log();
    let fresh = std::fs::metadata(&log_path).is_ok_and(|m| m.len() > MAX_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(!fresh)
        .write(true)
        .truncate(fresh)
        .mode(0o600)
        .open(&log_path);
    let stderr = match log {
        Ok(file) => std::process::Stdio::from(file),
        Err(_) => std::process::Stdio::null(),
    };
    let started = std::process::Command::new(exe)
        .arg("archive-get-prefetch")
        .arg("--config")
        .arg(config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn();
    match started {
        // Not waited for: it outlives this call and is reaped by init.
        Ok(child) => tracing::debug!("started the prefetcher (pid {})", child.id()),
        Err(e) => tracing::warn!("cannot start the prefetcher: {e}"),
    }
}

/// `pgpilot archive-get-prefetch --config FILE` (hidden; started by archive-get).
#[derive(Debug, Clone, clap::Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
}

/// Entry point of `pgpilot archive-get-prefetch` on the runtime the binary
/// made (one thread).
pub fn main(args: PrefetchArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let archive = match Archive::open(&args.config.config) {
        Ok(archive) => archive,
        Err(e) => {
            eprintln!(
                "pgpilot archive-get-prefetch: ERROR [{:03}]: {e}",
                e.exit_code()
            );
            return e.exit_code();
        }
    };
    crate::logging::set_up(&archive.config.log.level, archive.config.log.json);
    let result = runtime.block_on(prefetch(archive));
    match result {
        Ok(()) => code::OK,
        Err(e) => {
            tracing::error!("prefetcher: {e}");
            code::LOCAL
        }
    }
}

/// The segments to keep queued after `want`.
fn window(want: &Want, queue: usize) -> Vec<WalName> {
    let mut out = Vec::with_capacity(queue);
    let mut last = want.wal.clone();
    while out.len() < queue {
        match next_segment(&last, want.segment_size) {
            Some(next) => {
                out.push(next.clone());
                last = next;
            }
            None => break,
        }
    }
    out
}

type Fetched = (WalName, Result<(), ArchiveError>);

async fn prefetch(archive: Archive) -> Result<(), String> {
    let spool = Spool::new(&archive.config, &archive.backup)?;
    let Some(_lock) = spool.lock_prefetcher().map_err(|e| e.to_string())? else {
        return Ok(()); // another prefetcher serves this spool
    };
    spool
        .remove_queue_temporaries()
        .and_then(|()| spool.claim_queue())
        .map_err(|e| format!("{}: {e}", spool.in_dir().display()))?;
    let postmaster = archive.config.postgresql.data_dir.join("postmaster.pid");
    let queue = archive.backup.archive_get_queue;
    let parallelism = archive.backup.parallelism;
    tracing::info!(queue, parallelism, "prefetcher started");
    let started = Instant::now();
    let mut want: Option<Want> = None;
    let mut changed = Instant::now();
    // The first segment found missing since `want` last changed.
    let mut end: Option<WalName> = None;
    let mut tasks: JoinSet<Fetched> = JoinSet::new();
    let mut fetching: Vec<WalName> = Vec::new();
    let mut served = 0u64;
    loop {
        if started.elapsed() > LIFETIME || !postmaster.exists() {
            break;
        }
        let current = match spool.read_want() {
            Ok(current) => current,
            Err(_) => break, // the spool is gone
        };
        if current != want {
            want = current;
            changed = Instant::now();
            end = None;
        }
        if changed.elapsed() > IDLE && tasks.is_empty() {
            // Recovery is over (or streams): nothing queued will be asked for.
            let _ = spool.prune_queue(|_| false);
            break;
        }
        if let Some(want) = &want {
            let wanted = window(want, queue);
            let _ = spool.prune_queue(|w| *w == want.wal || wanted.contains(w));
            let present: Vec<WalName> = spool
                .queued()
                .unwrap_or_default()
                .into_iter()
                .map(|q| q.wal)
                .collect();
            for name in wanted {
                if tasks.len() >= parallelism
                    || end.as_ref().is_some_and(|e| name.as_str() >= e.as_str())
                {
                    break;
                }
                if present.contains(&name) || fetching.contains(&name) {
                    continue;
                }
                fetching.push(name.clone());
                let archive = archive.clone();
                let spool = spool.clone();
                tasks.spawn(async move {
                    let result = fetch_one(&archive, &spool, &name).await;
                    (name, result)
                });
            }
        }
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((name, result)) = done else { continue };
                fetching.retain(|n| *n != name);
                match result {
                    Ok(()) => served += 1,
                    Err(ArchiveError::NotFound) => {
                        tracing::debug!("{name} is not in the repository (yet): end of the archive");
                        if end.as_ref().is_none_or(|e| name.as_str() < e.as_str()) {
                            end = Some(name);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("prefetch of {name} failed [{:03}]: {e}", e.exit_code());
                        if end.as_ref().is_none_or(|e| name.as_str() < e.as_str()) {
                            end = Some(name);
                        }
                    }
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tasks.abort_all();
    tracing::info!(fetched = served, "prefetcher stopped");
    Ok(())
}

/// Fetch one segment into the queue (decompressed, checked, renamed into place).
async fn fetch_one(archive: &Archive, spool: &Spool, name: &WalName) -> Result<(), ArchiveError> {
    // Tells archive-get to wait for this segment instead of fetching it too.
    let _marker = spool.fetching(name);
    let context = archive.call(Instant::now());
    context
        .within_deadline(async {
            let (key, sha) = super::get::locate(&context, name).await?;
            let compressed = super::get::fetch(&context, &key).await?;
            let dest = spool.queue_path(name, &sha);
            let location = context.storage.location();
            tokio::task::spawn_blocking(move || {
                super::get::write_verified(&compressed, &sha, &dest, &key, &location)
            })
            .await
            .map_err(|e| ArchiveError::Local(e.to_string()))?
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_wanted_segment() {
        let want = Want {
            wal: WalName::parse("0000000100000000000000FE").unwrap(),
            segment_size: 16 << 20,
        };
        let names: Vec<String> = window(&want, 3).iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            vec![
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert!(window(&want, 0).is_empty());
    }
}
