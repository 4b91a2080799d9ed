//! `pgpilot restore`: a backup into a data directory, set up to recover.
//!
//! 1. Choose the backup: `--set`, or the newest one that can reach the
//!    target (for a time or LSN target: the newest that stopped before it).
//! 2. Check the target directory: empty (or absent), or `--delta`; never
//!    one a running PostgreSQL uses. Check that every data part is stored
//!    with the size the manifest records — before writing anything.
//! 3. `--delta`: first remove `global/pg_control`, `backup_label` and the
//!    signal files (from then on the directory cannot start until the
//!    restore completes); keep files whose SHA-256 matches the manifest,
//!    remove what the backup does not have.
//! 4. Directories, links (tablespaces), then every file from the data parts
//!    in parallel, each byte checked against the manifest's SHA-256 as it
//!    is written ([`crate::backup::data::extract`]; large files go to disk with direct
//!    I/O, [`crate::backup::data::place`]). `global/pg_control` goes to a temporary name.
//!    With data checksums on, the pages of relation files are checked as
//!    they are written ([`crate::backup::data::restorepages`]).
//! 5. Any mismatch: stop, remove what was written (an empty directory
//!    stays empty), report the damaged files. Exit 4.
//! 6. All verified: write backup_label, tablespace_map, the recovery
//!    settings (`postgresql.auto.conf`) and `recovery.signal` (for a new
//!    standby, [`StartAs::Standby`]: `standby.signal` and no settings), give
//!    everything to PostgreSQL's OS user, sync the file system, and last
//!    rename pg_control into place. Only now can PostgreSQL start it.
//! 7. Pages that failed their checksum do not stop the restore: they are
//!    logged and returned in [`Restored::pages`]; `pgpilot restore` lists
//!    them and exits 8.
//!
//! [`restore`] takes a typed [`RestoreRequest`]: the CLI builds it from its
//! flags, the HA loop when it creates a replica or a cluster from a backup.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::backup::data::datadir::{self, dest_path, local, Prepared};
use crate::backup::data::extract::{self, Problem};
use crate::backup::data::progress::{self, Progress};
use crate::backup::data::restorepages::{PageChecks, PageReport};
use crate::backup::model::catalog::{Catalog, Entry};
use crate::backup::model::manifest::{LoadError, Manifest};
use crate::backup::model::request::{RestoreRequest, StartAs, TargetAction};
use crate::backup::{code, BackupError, ConfigArg, Context, Result};
use crate::config::target::{check_timeline, Target, TargetText};
use crate::lsn::format_lsn;
use crate::postgres::process::RunAs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKeyword {
    /// Stop as soon as the backup is consistent.
    Immediate,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The backup: a label, or `latest` (default; with --target-time or
    /// --target-lsn, the newest backup that finished before the target).
    #[arg(long, default_value = "latest")]
    pub set: String,
    /// Recover until this time (`YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]`).
    #[arg(long, group = "recovery_target")]
    pub target_time: Option<String>,
    /// Recover until this WAL position (`X/Y`).
    #[arg(long, group = "recovery_target")]
    pub target_lsn: Option<String>,
    /// Recover until this transaction id has committed.
    #[arg(long, group = "recovery_target")]
    pub target_xid: Option<String>,
    /// Recover until this restore point (pg_create_restore_point).
    #[arg(long, group = "recovery_target")]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent.
    #[arg(long, value_enum, group = "recovery_target")]
    pub target: Option<TargetKeyword>,
    /// What PostgreSQL does at the target (PostgreSQL's default: pause).
    #[arg(long, value_enum)]
    pub target_action: Option<TargetAction>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    pub target_exclusive: bool,
    /// recovery_target_timeline: `current`, `latest` or a number (`0x2` too).
    /// Default: the newest archived timeline that runs through the backup's
    /// end (as a bootstrap from a backup follows), not a branch that forked
    /// off before it.
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Restore over an existing data directory: files whose SHA-256
    /// matches the backup are kept, the others replaced, extra ones removed.
    #[arg(long)]
    pub delta: bool,
    /// Restore into this directory instead of postgresql.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub label: String,
    /// Bytes written, and bytes kept by --delta.
    pub written: u64,
    pub kept: u64,
    pub elapsed: std::time::Duration,
    /// What the page checks found.
    pub pages: PageReport,
}

impl RestoreArgs {
    pub fn target(&self) -> Result<Target> {
        Target::parse(&TargetText {
            time: self.target_time.as_deref(),
            lsn: self.target_lsn.as_deref(),
            xid: self.target_xid.as_deref(),
            name: self.target_name.as_deref(),
            immediate: self.target == Some(TargetKeyword::Immediate),
        })
        .map_err(|(field, message)| BackupError::Usage(format!("--target-{field} {message}")))
    }

    /// The request these flags make, for the configuration in `context`.
    pub fn request(&self, context: &Context) -> Result<RestoreRequest> {
        Ok(RestoreRequest {
            set: self.set.clone(),
            target: self.target()?,
            target_action: self.target_action,
            target_exclusive: self.target_exclusive,
            target_timeline: self.target_timeline.clone(),
            delta: self.delta,
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| context.config.postgresql.data_dir.clone()),
            start_as: StartAs::Recovery,
        })
    }
}

/// Entry point; returns the exit code.
pub fn main(args: RestoreArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = args.config.config.clone();
    super::run(runtime, "restore", &config, async |context| {
        let mut request = args.request(&context)?;
        if request.target_timeline.is_none() {
            request.target_timeline = Some(default_timeline(&context, &request).await?.to_string());
        }
        let restored = restore(&context, &request).await?;
        println!(
            "restored backup {} into {}; start PostgreSQL to recover{} on timeline {}",
            restored.label,
            request.data_dir.display(),
            describe_target(&request.target),
            request.target_timeline.as_deref().unwrap_or("latest")
        );
        match restored.pages.problem(&restored.label) {
            None => Ok(code::OK),
            Some(problem) => {
                println!("{problem}");
                Ok(code::DAMAGED_PAGES)
            }
        }
    })
}

/// The timeline a restore follows when none is asked for, as a bootstrap
/// from a backup chooses it: the newest archived timeline whose history
/// runs through the backup's end. (PostgreSQL's own default, `latest`,
/// follows the newest timeline even when it forked off before the backup
/// ended, and recovery then refuses to start: "requested timeline is not a
/// child of this server's history".)
pub async fn default_timeline(context: &Context, request: &RestoreRequest) -> Result<u32> {
    let catalog = crate::backup::model::catalog::load_or_rebuild(context).await?;
    let entry = choose(&catalog, &request.set, &request.target)?;
    let lineage =
        crate::backup::model::lineage::Lineage::load(context, entry.wal_segment_size).await?;
    Ok(lineage.newest_through(entry))
}

/// Choose the backup for `set` and `target`.
pub fn choose<'a>(catalog: &'a Catalog, set: &str, target: &Target) -> Result<&'a Entry> {
    if catalog.backups.is_empty() {
        return Err(BackupError::NotFound(
            "the repository holds no complete backup".into(),
        ));
    }
    if set != "latest" {
        let entry = catalog.get(set).ok_or_else(|| {
            BackupError::NotFound(format!(
                "no complete backup is labelled {set:?}; `pgpilot info` lists them"
            ))
        })?;
        match target {
            Target::Time { text, micros } if entry.stop_time_us > *micros => {
                return Err(BackupError::Usage(format!(
                    "backup {set} finished at {}, after the target time {text}: recovery cannot \
                     stop before the backup is consistent; choose an older backup",
                    crate::backup::pg_time(entry.stop_time_us)
                )))
            }
            Target::Lsn(lsn) if entry.stop_lsn() > *lsn => {
                return Err(BackupError::Usage(format!(
                    "backup {set} stops at {}, after the target LSN {}: choose an older backup",
                    entry.stop_lsn,
                    format_lsn(*lsn)
                )))
            }
            _ => {}
        }
        return Ok(entry);
    }
    let fits = |e: &&Entry| match target {
        Target::Time { micros, .. } => e.stop_time_us <= *micros,
        Target::Lsn(lsn) => e.stop_lsn() <= *lsn,
        _ => true,
    };
    catalog.backups.iter().rev().find(fits).ok_or_else(|| {
        let oldest = &catalog.backups[0];
        BackupError::NotFound(match target {
            Target::Time { text, .. } => format!(
                "no backup finished before {text}: the oldest, {}, finished at {}",
                oldest.label,
                crate::backup::pg_time(oldest.stop_time_us)
            ),
            Target::Lsn(lsn) => format!(
                "no backup stops before {}: the oldest, {}, stops at {}",
                format_lsn(*lsn),
                oldest.label,
                oldest.stop_lsn
            ),
            _ => "no backup".into(),
        })
    })
}

pub async fn restore(context: &Context, request: &RestoreRequest) -> Result<Restored> {
    let started = Instant::now();
    let target = &request.target;
    if *target == Target::End && request.target_action.is_some() {
        tracing::warn!("--target-action has no effect without a recovery target");
    }
    if let Some(tl) = &request.target_timeline {
        check_timeline(tl).map_err(|m| BackupError::Usage(format!("--target-timeline {m}")))?;
    }
    let storage = context.storage();
    let layout = &context.layout;
    let data_dir = request.data_dir.clone();
    if !data_dir.is_absolute() {
        return Err(BackupError::Usage(format!(
            "the data directory {} must be an absolute path",
            data_dir.display()
        )));
    }
    let run_as = RunAs::resolve(&context.config.postgresql.os_user)
        .map_err(|e| BackupError::Usage(e.to_string()))?;

    // 1. The backup.
    let catalog = crate::backup::model::catalog::load_or_rebuild(context).await?;
    let entry = choose(&catalog, &request.set, target)?;
    let manifest = match Manifest::load(storage, layout, &entry.label).await {
        Ok(m) => m,
        Err(LoadError::Corrupt(why)) => {
            return Err(BackupError::Corrupt(format!(
                "the manifest of backup {} is damaged ({why}); nothing was written. Restore \
                 another backup with --set.",
                entry.label
            )))
        }
        Err(LoadError::Storage(e)) => return Err(context.repo_err(e)),
    };
    let parts = extract::part_records(storage, layout, &manifest)
        .await
        .map_err(|e| match e {
            LoadError::Corrupt(why) => BackupError::Corrupt(format!(
                "backup {} needs a backup whose manifest is damaged ({why}); nothing was written",
                manifest.label
            )),
            LoadError::Storage(e) => context.repo_err(e),
        })?;
    tracing::info!(
        "restoring backup {} ({}, {} files, {}) into {}",
        manifest.label,
        manifest.backup_type.as_str(),
        manifest.files.len(),
        progress::mib(manifest.data_size()),
        data_dir.display()
    );

    // 2. Check before writing anything.
    check_parts_stored(context, &manifest, &parts).await?;
    let prepared = {
        let manifest = manifest.clone();
        let data_dir = data_dir.clone();
        let delta = request.delta;
        let parallelism = context.backup.parallelism;
        tokio::task::spawn_blocking(move || {
            datadir::prepare(&data_dir, &manifest, delta, parallelism)
        })
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))??
    };

    // 3..6, undoing on failure.
    let manifest = Arc::new(manifest);
    match write_all(
        context,
        request,
        manifest.clone(),
        &parts,
        &prepared,
        &run_as,
    )
    .await
    {
        Ok((written, pages)) => {
            let elapsed = started.elapsed();
            tracing::info!(
                "restored backup {} into {}: {} written, {} kept, in {:.1} s ({})",
                manifest.label,
                data_dir.display(),
                progress::mib(written),
                progress::mib(prepared.kept_bytes),
                elapsed.as_secs_f64(),
                progress::rate(written + prepared.kept_bytes, elapsed)
            );
            Ok(Restored {
                label: manifest.label.clone(),
                written,
                kept: prepared.kept_bytes,
                elapsed,
                pages,
            })
        }
        Err(e) => {
            let state = datadir::undo(&prepared, request.delta);
            Err(match e {
                BackupError::Corrupt(m) => BackupError::Corrupt(format!("{m}. {state}")),
                BackupError::Local(m) => BackupError::Local(format!("{m}. {state}")),
                BackupError::Repository { location, error } => {
                    tracing::error!("{state}");
                    BackupError::Repository { location, error }
                }
                other => {
                    tracing::error!("{state}");
                    other
                }
            })
        }
    }
}

/// " to <target>", for messages.
pub fn describe_target(target: &Target) -> String {
    match target {
        Target::End => " to the end of the archived WAL".into(),
        Target::Immediate => " to the end of the backup".into(),
        Target::Time { text, .. } => format!(" to {text}"),
        Target::Lsn(lsn) => format!(" to LSN {}", format_lsn(*lsn)),
        Target::Xid(xid) => format!(" to transaction {xid}"),
        Target::Name(name) => format!(" to restore point {name:?}"),
    }
}

/// Every part the restore reads must be stored with the recorded size.
async fn check_parts_stored(
    context: &Context,
    manifest: &Manifest,
    parts: &HashMap<(String, u32), crate::backup::model::manifest::Part>,
) -> Result<()> {
    let storage = context.storage();
    let mut labels: Vec<&str> = manifest.reference.iter().map(String::as_str).collect();
    labels.push(&manifest.label);
    let mut stored: HashMap<String, u64> = HashMap::new();
    for label in labels {
        for meta in storage
            .list(&context.layout.backup_dir(label))
            .await
            .map_err(|e| context.repo_err(e))?
        {
            stored.insert(meta.key, meta.size);
        }
    }
    let mut problems = Vec::new();
    let needed: std::collections::BTreeSet<(String, u32)> = manifest
        .files
        .iter()
        .flat_map(|f| {
            let label = manifest.data_label(f).to_string();
            f.pieces.iter().map(move |p| (label.clone(), p.part))
        })
        .collect();
    for (label, index) in needed {
        let key = context.layout.data_part_key(&label, index);
        let Some(record) = parts.get(&(label.clone(), index)) else {
            problems.push(format!("{key} is not in backup {label}'s manifest"));
            continue;
        };
        match stored.get(&key) {
            None => problems.push(format!("{key} is missing")),
            Some(size) if *size != record.size => problems.push(format!(
                "{key} holds {size} bytes, the manifest says {}",
                record.size
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Corrupt(format!(
            "backup {} cannot be restored, nothing was written: {}. Run `pgpilot verify` and \
             restore another backup with --set.",
            manifest.label,
            problems.join("; ")
        )))
    }
}

async fn write_all(
    context: &Context,
    request: &RestoreRequest,
    manifest: Arc<Manifest>,
    parts: &HashMap<(String, u32), crate::backup::model::manifest::Part>,
    prepared: &Prepared,
    run_as: &RunAs,
) -> Result<(u64, PageReport)> {
    let data_dir = prepared.data_dir.clone();
    // Directories and links.
    {
        let manifest = manifest.clone();
        let data_dir = data_dir.clone();
        let run_as = run_as.clone();
        tokio::task::spawn_blocking(move || datadir::make_tree(&data_dir, &manifest, &run_as))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))??;
    }
    // Files.
    let jobs = extract::plan(&manifest, prepared.to_write.iter().copied(), parts)
        .map_err(|why| BackupError::Corrupt(format!("backup {}: {why}", manifest.label)))?;
    let to_write: u64 = prepared
        .to_write
        .iter()
        .map(|i| manifest.files[*i].size)
        .sum();
    let progress = Progress::start(&format!("restore {}", manifest.label), to_write);
    let counter = progress.counter();
    // Empty files have no piece: create them here, while the workers
    // write the others (a --delta restore removed the ones it replaces).
    let empty_files = {
        let manifest = manifest.clone();
        let data_dir = data_dir.clone();
        let to_write = prepared.to_write.clone();
        tokio::task::spawn_blocking(move || {
            for idx in to_write {
                let file = &manifest.files[idx];
                if !file.pieces.is_empty() {
                    continue;
                }
                let path = dest_path(&data_dir, &file.path);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| local(&path, "cannot create", e))?;
            }
            Ok::<(), BackupError>(())
        })
    };
    let paths: Arc<Vec<PathBuf>> = Arc::new(
        manifest
            .files
            .iter()
            .map(|f| dest_path(&data_dir, &f.path))
            .collect(),
    );
    let placer = Arc::new(crate::backup::data::place::Placer::new(
        paths,
        prepared
            .to_write
            .iter()
            .map(|i| (*i, manifest.files[*i].size)),
        true, // direct I/O where the file system takes it
    ));
    let checks = PageChecks::new(&manifest).map(Arc::new);
    let work_checks = checks.clone();
    let work_manifest = manifest.clone();
    let problems = extract::run_parts(
        context.storage.clone(),
        &context.layout,
        jobs,
        // One more worker than `parallelism`, so that a worker waiting for
        // its direct write does not leave a core idle.
        context.backup.parallelism + 1,
        true,
        move |key, bytes, job| {
            let mut sink = |file_idx: usize, offset: u64, data: &[u8]| {
                // Judged while the bytes are in hand, then written.
                if let Some(checks) = &work_checks {
                    checks.check(file_idx, offset, data);
                }
                placer.write(file_idx, offset, data)
            };
            extract::read_part(
                key,
                bytes,
                job,
                &work_manifest.files,
                &mut sink,
                Some(&counter),
            )
        },
    )
    .await;
    let empty_files = empty_files
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?;
    let problems = problems?;
    empty_files?;
    let write_time = progress.elapsed();
    progress.finish();
    tracing::info!(
        "wrote {} in {:.1} s ({})",
        progress::mib(to_write),
        write_time.as_secs_f64(),
        progress::rate(to_write, write_time)
    );
    if !problems.is_empty() {
        return Err(BackupError::Corrupt(refusal(&manifest.label, &problems)));
    }
    let pages = checks
        .map(|checks| checks.report(&manifest))
        .unwrap_or_default();
    tracing::info!("{}", pages.summary());
    if let Some(problem) = pages.problem(&manifest.label) {
        tracing::error!("{problem}");
    }

    // Recovery files, ownership, sync, and pg_control last.
    let settings = crate::backup::model::recovery::recovery_settings(context, request)?;
    let signal = match request.start_as {
        StartAs::Recovery => "recovery.signal",
        StartAs::Standby => "standby.signal",
    };
    let manifest2 = manifest.clone();
    let run_as = run_as.clone();
    let to_write = prepared.to_write.clone();
    tokio::task::spawn_blocking(move || {
        datadir::finish(&data_dir, &manifest2, &to_write, &settings, signal, &run_as)
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    Ok((to_write_bytes(&manifest, &prepared.to_write), pages))
}

fn to_write_bytes(manifest: &Manifest, to_write: &[usize]) -> u64 {
    to_write.iter().map(|i| manifest.files[*i].size).sum()
}

fn refusal(label: &str, problems: &[Problem]) -> String {
    let mut lines: Vec<String> = problems.iter().take(20).map(|p| format!("  {p}")).collect();
    if problems.len() > 20 {
        lines.push(format!("  ... and {} more", problems.len() - 20));
    }
    format!(
        "backup {label} is damaged in the repository; the restore was refused:\n{}\nRun \
         `pgpilot verify` for the full report, and restore another backup with --set",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::model::catalog::Entry;
    use crate::backup::model::manifest::BackupType;

    fn entry(label: &str, stop_us: i64, stop_lsn: &str) -> Entry {
        Entry {
            label: label.into(),
            backup_type: BackupType::Full,
            prior: None,
            reference: vec![],
            system_identifier: "1".into(),
            pg_version: "15".into(),
            from_standby: false,
            timeline: 1,
            stop_timeline: 1,
            start_lsn: "0/1000000".into(),
            stop_lsn: stop_lsn.into(),
            start_wal: String::new(),
            stop_wal: String::new(),
            wal_segment_size: 16 << 20,
            start_time_us: stop_us - 10,
            stop_time_us: stop_us,
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            error: false,
        }
    }

    #[test]
    fn choosing_a_backup() {
        let catalog = Catalog {
            backups: vec![entry("a", 100, "0/2000000"), entry("b", 200, "0/5000000")],
        };
        let time = |us| Target::Time {
            text: "t".into(),
            micros: us,
        };
        assert_eq!(choose(&catalog, "latest", &Target::End).unwrap().label, "b");
        assert_eq!(choose(&catalog, "latest", &time(150)).unwrap().label, "a");
        assert_eq!(choose(&catalog, "latest", &time(200)).unwrap().label, "b");
        assert!(matches!(
            choose(&catalog, "latest", &time(50)),
            Err(BackupError::NotFound(_))
        ));
        assert_eq!(
            choose(&catalog, "latest", &Target::Lsn(0x300_0000))
                .unwrap()
                .label,
            "a"
        );
        assert!(choose(&catalog, "b", &time(150)).is_err());
        assert_eq!(
            choose(&catalog, "a", &Target::Immediate).unwrap().label,
            "a"
        );
        assert!(matches!(
            choose(&catalog, "c", &Target::End),
            Err(BackupError::NotFound(_))
        ));
        assert!(matches!(
            choose(&Catalog::default(), "latest", &Target::End),
            Err(BackupError::NotFound(_))
        ));
    }
}
