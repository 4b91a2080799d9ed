//! Which files of the data directory a backup holds.
//!
//! The rules are PostgreSQL's ("Backing Up the Data Directory" in the
//! documentation, and what pg_basebackup leaves out):
//!
//! - the contents of `pg_wal`, `pg_replslot`, `pg_dynshmem`, `pg_notify`,
//!   `pg_serial`, `pg_snapshots`, `pg_subtrans` and `pg_stat_tmp` (the
//!   directories themselves are kept, and `pg_wal/archive_status`);
//! - `postmaster.pid`, `postmaster.opts`, `backup_label`, `tablespace_map`
//!   (PostgreSQL's are stored from pg_backup_stop), their `.old` copies,
//!   `recovery.signal`, `standby.signal`, `current_logfiles`,
//!   `postgresql.auto.conf.tmp`;
//! - `pg_internal.init` files, temporary files and directories
//!   (`pgsql_tmp*`), temporary relations (`t<n>_<relfilenode>`);
//! - every fork but the init fork of unlogged relations (PostgreSQL
//!   recreates them from the init fork at the end of recovery).
//!
//! Tablespaces (`pg_tblspc/<oid>` links) and a `pg_wal` link are recorded as
//! links; the tablespaces' files are in the backup under `pg_tblspc/<oid>/`.
//! Other links are followed: what they point at is stored as ordinary files
//! and directories. Sockets and other special files are skipped.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::backup::model::manifest::{Dir, Link};

/// A file to back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Relative to the data directory (tablespaces under `pg_tblspc/<oid>/`).
    pub path: String,
    /// Where to read it.
    pub abs: PathBuf,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub directories: Vec<Dir>,
    pub links: Vec<Link>,
    pub files: Vec<LocalFile>,
}

const TOP_SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "recovery.signal",
    "standby.signal",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
];

const TOP_EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_stat_tmp",
];

/// `t<backend>_<relfilenode>[_fork][.segment]`: a temporary relation.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && rel.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// The relfilenode a relation file name belongs to: `123`, `123.4`,
/// `123_fsm`, `123_vm.1`, `123_init`.
fn relfilenode(name: &str) -> Option<(&str, &str)> {
    let digits = name.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (node, rest) = name.split_at(digits);
    let fork = rest.split('.').next().unwrap_or("");
    matches!(fork, "" | "_fsm" | "_vm" | "_init").then_some((node, fork))
}

/// The segment number of a relation data file (`123`, `123.4`, `123_fsm`,
/// `123_vm.1`, `123_init`) in a database directory: `base/<db>/`,
/// `global/`, or `pg_tblspc/<oid>/<version>/<db>/`. `None` for every
/// other file (`pg_filenode.map`, `PG_VERSION`, `pg_control`, ...): only
/// relation files are made of checksummed pages.
pub fn relation_segment(path: &str) -> Option<u32> {
    let parts: Vec<&str> = path.split('/').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let in_database = match parts.as_slice() {
        ["global", _] => true,
        ["base", db, _] => numeric(db),
        ["pg_tblspc", oid, _version, db, _] => numeric(oid) && numeric(db),
        _ => false,
    };
    let name = parts.last()?;
    if !in_database || relfilenode(name).is_none() {
        return None;
    }
    match name.split_once('.') {
        None => Some(0),
        Some((_, segment)) if numeric(segment) => segment.parse().ok(),
        Some(_) => None,
    }
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}

/// List what to back up in `data_dir`.
pub fn walk(data_dir: &Path) -> Result<Listing, String> {
    let mut listing = Listing::default();
    walk_dir(data_dir, "", true, &mut listing)?;
    // pg_control last, like pg_basebackup: the longer the copy runs, the
    // more recent a control file restore starts from does not matter, but
    // this keeps the order familiar.
    if let Some(i) = listing
        .files
        .iter()
        .position(|f| f.path == "global/pg_control")
    {
        let control = listing.files.remove(i);
        listing.files.push(control);
    }
    Ok(listing)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn walk_dir(dir: &Path, rel: &str, top: bool, listing: &mut Listing) -> Result<(), String> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        // Dropped while we walked (a database, a temporary directory).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !top => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    for entry in read {
        let entry = entry.map_err(|e| io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(format!(
                "{}: a file name is not UTF-8; pgpilot cannot back it up",
                entry.path().display()
            ));
        };
        entries.push((name, entry.path()));
    }
    entries.sort();
    // Unlogged relations: the relfilenodes that have an init fork here.
    let unlogged: BTreeSet<String> = entries
        .iter()
        .filter_map(|(name, _)| match relfilenode(name) {
            Some((node, "_init")) => Some(node.to_string()),
            _ => None,
        })
        .collect();

    for (name, path) in entries {
        let rel_path = join(rel, &name);
        if top && TOP_SKIP_FILES.contains(&name.as_str()) {
            continue;
        }
        if name == "pg_internal.init"
            || name.starts_with("pgsql_tmp")
            || name.ends_with(crate::repo::posix::TEMP_SUFFIX)
            || is_temp_relation(&name)
        {
            continue;
        }
        if let Some((node, fork)) = relfilenode(&name) {
            if fork != "_init" && unlogged.contains(node) {
                continue;
            }
        }
        let link_meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path, e)),
        };
        let is_tablespace = rel == "pg_tblspc";
        if link_meta.file_type().is_symlink() && (is_tablespace || (top && name == "pg_wal")) {
            let target = std::fs::read_link(&path).map_err(|e| io(&path, e))?;
            let target = if target.is_absolute() {
                target
            } else {
                dir.join(target)
            };
            listing.links.push(Link {
                path: rel_path.clone(),
                target: target.display().to_string(),
            });
        }
        // Follow links: the metadata of what the entry points at.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path, e)),
        };
        if meta.is_dir() {
            listing.directories.push(Dir {
                path: rel_path.clone(),
                mode: meta.mode() & 0o7777,
            });
            if top && TOP_EMPTY_DIRS.contains(&name.as_str()) {
                if name == "pg_wal" {
                    listing.directories.push(Dir {
                        path: "pg_wal/archive_status".into(),
                        mode: meta.mode() & 0o7777,
                    });
                }
                continue;
            }
            walk_dir(&path, &rel_path, false, listing)?;
        } else if meta.is_file() {
            listing.files.push(LocalFile {
                path: rel_path,
                abs: path,
                size: meta.len(),
                mtime: meta.mtime(),
                mtime_ns: meta.mtime_nsec() as u32,
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_temp_relation("t3_16384"));
        assert!(is_temp_relation("t3_16384_fsm"));
        assert!(!is_temp_relation("tablespace"));
        assert!(!is_temp_relation("t_1"));
        assert_eq!(relfilenode("16384"), Some(("16384", "")));
        assert_eq!(relfilenode("16384.2"), Some(("16384", "")));
        assert_eq!(relfilenode("16384_vm"), Some(("16384", "_vm")));
        assert_eq!(relfilenode("16384_init"), Some(("16384", "_init")));
        assert_eq!(relfilenode("PG_VERSION"), None);
        assert_eq!(relfilenode("16384_x"), None);
        assert_eq!(relation_segment("base/5/16384"), Some(0));
        assert_eq!(relation_segment("base/5/16384.3"), Some(3));
        assert_eq!(relation_segment("base/5/16384_vm.1"), Some(1));
        assert_eq!(relation_segment("base/5/16384_fsm"), Some(0));
        assert_eq!(relation_segment("global/1262"), Some(0));
        assert_eq!(
            relation_segment("pg_tblspc/17001/PG_15_1/5/17000.2"),
            Some(2)
        );
        assert_eq!(relation_segment("base/5/pg_filenode.map"), None);
        assert_eq!(relation_segment("base/5/PG_VERSION"), None);
        assert_eq!(relation_segment("global/pg_control"), None);
        assert_eq!(relation_segment("base/5/16384.x"), None);
        assert_eq!(relation_segment("base/x/16384"), None);
        assert_eq!(relation_segment("pg_xact/0000"), None);
        assert_eq!(relation_segment("base/5/t3_16500"), None);
    }

    #[test]
    fn exclusions() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mk = |p: &str, content: &str| {
            let path = d.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        };
        for p in [
            "PG_VERSION",
            "postgresql.conf",
            "postmaster.pid",
            "backup_label.old",
            "standby.signal",
            "global/pg_control",
            "global/1262",
            "global/pg_internal.init",
            "base/5/1259",
            "base/5/1259_fsm",
            "base/5/16400",
            "base/5/16400_init",
            "base/5/16400_fsm",
            "base/5/16400.1",
            "base/5/t3_16500",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_replslot/slot/state",
            "pg_stat_tmp/global.stat",
            "pg_subtrans/0000",
            "pg_xact/0000",
        ] {
            mk(p, "x");
        }
        let ts = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ts.path().join("PG_15_1/5")).unwrap();
        std::fs::write(ts.path().join("PG_15_1/5/17000"), "t").unwrap();
        std::fs::create_dir(d.join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(ts.path(), d.join("pg_tblspc/17001")).unwrap();

        let listing = walk(d).unwrap();
        let files: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            vec![
                "PG_VERSION",
                "base/5/1259",
                "base/5/1259_fsm",
                "base/5/16400_init",
                "global/1262",
                "pg_tblspc/17001/PG_15_1/5/17000",
                "pg_xact/0000",
                "postgresql.conf",
                "global/pg_control",
            ]
        );
        let dirs: Vec<&str> = listing
            .directories
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        for want in [
            "base",
            "base/5",
            "pg_wal",
            "pg_wal/archive_status",
            "pg_replslot",
            "pg_stat_tmp",
            "pg_subtrans",
            "pg_tblspc/17001",
            "pg_tblspc/17001/PG_15_1",
        ] {
            assert!(dirs.contains(&want), "{want} in {dirs:?}");
        }
        assert!(!dirs.contains(&"pg_replslot/slot"));
        assert!(!dirs.contains(&"base/pgsql_tmp"));
        assert_eq!(listing.links.len(), 1);
        assert_eq!(listing.links[0].path, "pg_tblspc/17001");
        assert_eq!(listing.links[0].target, ts.path().display().to_string());
    }
}
