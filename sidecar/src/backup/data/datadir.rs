//! The restore's target directory: the checks before anything is
//! written, the `--delta` clean-up, the tree of directories and links, the
//! last steps (backup_label, recovery settings, the signal file,
//! ownership, sync, pg_control last), and undoing a failed restore.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::extract;
use super::progress;
use crate::backup::model::manifest::Manifest;
use crate::backup::model::recovery::render_auto_conf;
use crate::backup::{BackupError, Result};
use crate::postgres::process::RunAs;

/// The state of the target before the restore, to undo a failed one.
pub struct Prepared {
    pub data_dir: PathBuf,
    /// The data directory did not exist (remove it on failure).
    pub created_data_dir: bool,
    /// Tablespace directories this restore writes into: (directory, whether
    /// the restore created it). They were absent or empty.
    pub tablespace_dirs: Vec<(PathBuf, bool)>,
    /// Manifest indexes of the files to write (the others are kept).
    pub to_write: Vec<usize>,
    pub kept_bytes: u64,
}

pub fn local(path: &Path, what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Local(format!("{what} {}: {e}", path.display()))
}

fn is_empty_dir(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(path)?.next().is_none())
}

/// Check the target and, with --delta, clean it up. Blocking.
pub fn prepare(
    data_dir: &Path,
    manifest: &Manifest,
    delta: bool,
    parallelism: usize,
) -> Result<Prepared> {
    let exists = data_dir.exists();
    if exists {
        if let Some(pid) = crate::postgres::process::read_pid_file(data_dir) {
            if crate::postgres::process::is_postmaster_of(pid.pid, data_dir) {
                return Err(BackupError::Local(format!(
                    "PostgreSQL (pid {}) is running on {}: stop it first",
                    pid.pid,
                    data_dir.display()
                )));
            }
        }
        let empty = is_empty_dir(data_dir).map_err(|e| local(data_dir, "cannot read", e))?;
        if !empty && !delta {
            return Err(BackupError::Local(format!(
                "{} is not empty: restore into an empty directory, or pass --delta to restore \
                 over it (files that match the backup are kept)",
                data_dir.display()
            )));
        }
    }
    let mut tablespace_dirs = Vec::new();
    for link in &manifest.links {
        let target = Path::new(&link.target);
        // --delta may clean a link's target only if it is this data
        // directory's own (the same link is there): never another
        // cluster's tablespace on the same machine.
        let ours = std::fs::read_link(data_dir.join(&link.path)).is_ok_and(|t| t == target);
        if target.exists()
            && !(delta && ours)
            && !is_empty_dir(target).map_err(|e| local(target, "cannot read", e))?
        {
            return Err(BackupError::Local(format!(
                "{} (the target of {} in the backup) is not empty{}: empty it, or move it away",
                target.display(),
                link.path,
                if delta {
                    " and is not this data directory's own"
                } else {
                    ""
                }
            )));
        }
        tablespace_dirs.push((target.to_path_buf(), !target.exists()));
    }
    let mut prepared = Prepared {
        data_dir: data_dir.to_path_buf(),
        created_data_dir: !exists,
        tablespace_dirs,
        to_write: (0..manifest.files.len()).collect(),
        kept_bytes: 0,
    };
    if delta && exists {
        delta_clean(data_dir, manifest, parallelism, &mut prepared)?;
    }
    Ok(prepared)
}

/// --delta: make the directory unstartable, keep what matches, remove the rest.
fn delta_clean(
    data_dir: &Path,
    manifest: &Manifest,
    parallelism: usize,
    prepared: &mut Prepared,
) -> Result<()> {
    for name in [
        "global/pg_control",
        "backup_label",
        "tablespace_map",
        "recovery.signal",
        "standby.signal",
        "postmaster.pid",
    ] {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(local(&path, "cannot remove", e)),
        }
    }
    nix::unistd::sync();
    // Links that point elsewhere than the backup's are replaced.
    for link in &manifest.links {
        let path = data_dir.join(&link.path);
        if let Ok(current) = std::fs::read_link(&path) {
            if current != Path::new(&link.target) {
                std::fs::remove_file(&path).map_err(|e| local(&path, "cannot remove", e))?;
            }
        } else if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| local(&path, "cannot remove", e))?;
        }
    }
    // Which files still hold the backup's content: hash in parallel.
    let candidates: Vec<usize> = manifest
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.path != "global/pg_control")
        .filter(|(_, f)| {
            std::fs::symlink_metadata(data_dir.join(&f.path))
                .is_ok_and(|m| m.is_file() && m.len() == f.size)
        })
        .map(|(i, _)| i)
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let kept: std::sync::Mutex<HashSet<usize>> = std::sync::Mutex::new(HashSet::new());
    std::thread::scope(|scope| {
        for _ in 0..parallelism.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&idx) = candidates.get(i) else {
                    return;
                };
                let file = &manifest.files[idx];
                if extract::file_matches(&data_dir.join(&file.path), file).unwrap_or(false) {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).insert(idx);
                }
            });
        }
    });
    let kept = kept.into_inner().unwrap_or_else(|e| e.into_inner());
    let index: HashMap<&str, usize> = manifest
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_str(), i))
        .collect();
    let wanted_dirs: HashSet<&str> = manifest
        .directories
        .iter()
        .map(|d| d.path.as_str())
        .chain(manifest.links.iter().map(|l| l.path.as_str()))
        .collect();
    // Remove what is not a kept file of the backup, deepest first.
    let mut stack = vec![(data_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| local(&dir, "cannot read", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| local(&dir, "cannot read", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let meta = std::fs::metadata(&path);
            let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
            if is_dir && wanted_dirs.contains(rel_path.as_str()) {
                stack.push((path, rel_path));
                continue;
            }
            let keep = !is_dir
                && index
                    .get(rel_path.as_str())
                    .is_some_and(|i| kept.contains(i));
            if keep {
                continue;
            }
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            let result = if is_dir && !link {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            result.map_err(|e| local(&path, "cannot remove", e))?;
        }
    }
    prepared.kept_bytes = kept.iter().map(|i| manifest.files[*i].size).sum();
    prepared.to_write = (0..manifest.files.len())
        .filter(|i| !kept.contains(i))
        .collect();
    tracing::info!(
        "--delta: {} files ({}) already match the backup and are kept",
        kept.len(),
        progress::mib(prepared.kept_bytes)
    );
    Ok(())
}

/// Where a file is written while the restore runs.
pub fn dest_path(data_dir: &Path, path: &str) -> PathBuf {
    if path == "global/pg_control" {
        data_dir.join("global/pg_control.pgpilot-restore")
    } else {
        data_dir.join(path)
    }
}

/// Create the directories and links of the backup. Blocking.
pub fn make_tree(data_dir: &Path, manifest: &Manifest, run_as: &RunAs) -> Result<()> {
    let create = |path: &Path, mode: u32| -> Result<()> {
        if !path.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(path)
                .map_err(|e| local(path, "cannot create", e))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| local(path, "cannot chmod", e))?;
        run_as
            .give(path)
            .map_err(|e| BackupError::Local(e.to_string()))
    };
    create(data_dir, 0o700)?;
    let link_paths: HashSet<&str> = manifest.links.iter().map(|l| l.path.as_str()).collect();
    for link in &manifest.links {
        let path = data_dir.join(&link.path);
        if let Some(parent) = path.parent() {
            create(parent, 0o700)?;
        }
        create(Path::new(&link.target), 0o700)?;
        if std::fs::read_link(&path).is_err() {
            std::os::unix::fs::symlink(&link.target, &path)
                .map_err(|e| local(&path, "cannot create the link", e))?;
            let _ = nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &path,
                run_as.switch_to.map(|(u, _)| u),
                run_as.switch_to.map(|(_, g)| g),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
    let mut dirs: Vec<&crate::backup::model::manifest::Dir> = manifest.directories.iter().collect();
    dirs.sort_by_key(|d| d.path.matches('/').count());
    for dir in dirs {
        if link_paths.contains(dir.path.as_str()) {
            continue;
        }
        create(&data_dir.join(&dir.path), dir.mode)?;
    }
    Ok(())
}

/// Recovery files, file metadata and ownership, sync, and pg_control.
/// `signal`: `recovery.signal` or `standby.signal`.
pub fn finish(
    data_dir: &Path,
    manifest: &Manifest,
    written: &[usize],
    settings: &[(String, String)],
    signal: &str,
    run_as: &RunAs,
) -> Result<()> {
    let write_private = |name: &str, text: &str| -> Result<()> {
        let path = data_dir.join(name);
        std::fs::write(&path, text).map_err(|e| local(&path, "cannot write", e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| local(&path, "cannot chmod", e))?;
        run_as
            .give(&path)
            .map_err(|e| BackupError::Local(e.to_string()))
    };
    write_private("backup_label", &manifest.backup_label)?;
    if let Some(map) = &manifest.tablespace_map {
        write_private("tablespace_map", map)?;
    }
    let auto = data_dir.join("postgresql.auto.conf");
    let existing = std::fs::read_to_string(&auto).unwrap_or_default();
    write_private(
        "postgresql.auto.conf",
        &render_auto_conf(&existing, &manifest.label, settings),
    )?;
    write_private(signal, "")?;
    for idx in written {
        let file = &manifest.files[*idx];
        let path = dest_path(data_dir, &file.path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| local(&path, "cannot chmod", e))?;
        run_as
            .give(&path)
            .map_err(|e| BackupError::Local(e.to_string()))?;
        let mtime = nix::sys::time::TimeSpec::new(file.mtime, i64::from(file.mtime_ns));
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| local(&path, "cannot set the time of", e))?;
    }
    // Everything durable before pg_control makes the directory startable.
    let syncing = std::time::Instant::now();
    sync_fs(data_dir)?;
    for link in &manifest.links {
        sync_fs(Path::new(&link.target))?;
    }
    tracing::info!(
        "flushed to disk in {:.1} s",
        syncing.elapsed().as_secs_f64()
    );
    if manifest.files.iter().any(|f| f.path == "global/pg_control") {
        let from = dest_path(data_dir, "global/pg_control");
        let to = data_dir.join("global/pg_control");
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| local(&to, "cannot rename onto", e))?;
        }
        let global = std::fs::File::open(data_dir.join("global"))
            .map_err(|e| local(data_dir, "cannot open", e))?;
        global
            .sync_all()
            .map_err(|e| local(data_dir, "cannot sync", e))?;
    }
    Ok(())
}

fn sync_fs(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).map_err(|e| local(dir, "cannot open", e))?;
    nix::unistd::syncfs(&handle).map_err(|e| local(dir, "cannot sync", e))
}

/// Undo a failed restore as far as possible; says what state is left.
pub fn undo(prepared: &Prepared, delta: bool) -> String {
    let data_dir = &prepared.data_dir;
    let mut failed = Vec::new();
    if delta {
        // Never remove an operator's files: the directory has no
        // pg_control (removed first), so PostgreSQL cannot start it.
        let _ = std::fs::remove_file(data_dir.join("global/pg_control.pgpilot-restore"));
        return format!(
            "{} was partly overwritten and has no global/pg_control: PostgreSQL will not start \
             it. Run the restore again once the problem is fixed.",
            data_dir.display()
        );
    }
    let clear = |dir: &Path, remove_self: bool, failed: &mut Vec<String>| {
        if remove_self {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    failed.push(format!("{}: {e}", dir.display()));
                }
            }
            return;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                let result = if is_dir {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = result {
                    failed.push(format!("{}: {e}", path.display()));
                }
            }
        }
    };
    clear(data_dir, prepared.created_data_dir, &mut failed);
    for (dir, created) in &prepared.tablespace_dirs {
        clear(dir, *created, &mut failed);
    }
    if failed.is_empty() {
        if prepared.created_data_dir {
            format!("Nothing was left: {} was removed", data_dir.display())
        } else {
            format!(
                "Everything written was removed: {} is empty",
                data_dir.display()
            )
        }
    } else {
        format!(
            "Some of what was written could not be removed ({}); the directory has no \
             global/pg_control, so PostgreSQL will not start it",
            failed.join("; ")
        )
    }
}
