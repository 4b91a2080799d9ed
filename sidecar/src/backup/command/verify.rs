//! `pgpilot verify [--set LABEL]`: read back everything and say what is wrong.
//!
//! - every manifest (its checksum, its consistency), and the catalog;
//! - every data part: its stored SHA-256, then every file in it against
//!   the manifest's size and SHA-256 — a damaged part names its files;
//! - files an incremental refers to: the referenced backup still holds them;
//! - every WAL object: it decompresses and hashes to the SHA-256 its name
//!   carries; no WAL file is stored twice with different content;
//! - WAL continuity: for each backup, every segment from its start to its
//!   stop (else the backup cannot be restored), and from there to the
//!   newest archived segment (else point-in-time recovery stops at the gap),
//!   following timeline switches through the history files.
//!
//! - backups flagged `error`: the files whose pages failed their checksum
//!   when copied. Those are warnings, not problems: the repository holds
//!   exactly what was read (the cluster's pages were damaged, not the
//!   backup), but a restore brings those pages back as they are.
//!
//! Prints one line per problem and per warning, and exits 4 if there is
//! any problem, 0 otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use crate::archive::wal;
use crate::backup::data::extract;
use crate::backup::data::pagecheck::describe_blocks;
use crate::backup::data::progress::{self, Progress};
use crate::backup::model::catalog::{self, Entry};
use crate::backup::model::manifest::{LoadError, Manifest};
use crate::backup::model::walrange::{self, parse_segment, Archive, TimelinePath};
use crate::backup::{code, ConfigArg, Context, Result};
use crate::repo::Storage;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Check only this backup's data (the WAL is always checked).
    #[arg(long)]
    pub set: Option<String>,
}

pub fn main(args: VerifyArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = args.config.config.clone();
    super::run(runtime, "verify", &config, async |context| {
        let report = verify(&context, args.set.as_deref()).await?;
        progress::clear_line();
        for note in &report.notes {
            println!("note: {note}");
        }
        for warning in &report.warnings {
            println!("WARNING: {warning}");
        }
        for problem in &report.problems {
            println!("PROBLEM: {problem}");
        }
        if report.problems.is_empty() {
            println!(
                "verify: OK — {} backups, {} data parts, {} WAL objects checked{}",
                report.backups,
                report.parts,
                report.wal_objects,
                if report.warnings.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} files hold pages that failed their checksum when backed up",
                        report.warnings.len()
                    )
                }
            );
            Ok(code::OK)
        } else {
            println!("verify: {} problems found", report.problems.len());
            Ok(code::CORRUPT)
        }
    })
}

#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    /// Damaged pages recorded when backups were taken.
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub backups: usize,
    pub parts: usize,
    pub wal_objects: usize,
}

pub async fn verify(context: &Context, set: Option<&str>) -> Result<Report> {
    let storage = context.storage();
    let layout = &context.layout;
    let mut report = Report::default();

    let catalog = match catalog::load(storage, layout).await {
        Ok(c) => c,
        Err(LoadError::Corrupt(why)) => {
            report.problems.push(format!(
                "the catalog is damaged ({why}); the next backup or expire rebuilds it"
            ));
            catalog::rebuild(storage, layout)
                .await
                .map_err(|e| crate::backup::model::manifest::load_error(context, e))?
                .0
        }
        Err(LoadError::Storage(e)) => return Err(context.repo_err(e)),
    };
    let dirs = catalog::backup_dirs(storage, layout)
        .await
        .map_err(|e| context.repo_err(e))?;
    for (label, dir) in &dirs {
        if catalog.get(label).is_none() {
            report.notes.push(if dir.has_manifest {
                format!("backup {label} is complete but not in the catalog; `pgpilot expire` lists it again")
            } else {
                format!("backup {label} never completed (or is running); `pgpilot expire` removes it")
            });
        }
    }
    if let Some(set) = set {
        if catalog.get(set).is_none() {
            return Err(crate::backup::BackupError::NotFound(format!(
                "no complete backup is labelled {set:?}"
            )));
        }
    }

    // Manifests.
    let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
    for entry in &catalog.backups {
        if !dirs.get(&entry.label).is_some_and(|d| d.has_manifest) {
            report.problems.push(format!(
                "backup {}: listed in the catalog but its manifest is missing",
                entry.label
            ));
            continue;
        }
        match Manifest::load(storage, layout, &entry.label).await {
            Ok(m) => {
                manifests.insert(entry.label.clone(), m);
            }
            Err(LoadError::Corrupt(why)) => report.problems.push(format!(
                "backup {}: the manifest is damaged: {why}",
                entry.label
            )),
            Err(LoadError::Storage(e)) => return Err(context.repo_err(e)),
        }
    }
    let selected: Vec<&Manifest> = manifests
        .values()
        .filter(|m| set.is_none_or(|s| s == m.label))
        .collect();
    report.backups = selected.len();

    // Data parts, and references.
    let total: u64 = selected
        .iter()
        .flat_map(|m| m.files.iter().filter(|f| f.reference.is_none()))
        .map(|f| f.size)
        .sum();
    let progress = Progress::start("verify", total);
    for m in &selected {
        report.problems.extend(check_references(m, &manifests));
        report.warnings.extend(page_errors(m));
        let mut parts = HashMap::new();
        for part in &m.parts {
            parts.insert((m.label.clone(), part.index), part.clone());
        }
        let own = m
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.reference.is_none())
            .map(|(i, _)| i);
        let jobs = match extract::plan(m, own, &parts) {
            Ok(jobs) => jobs,
            Err(why) => {
                report.problems.push(format!("backup {}: {why}", m.label));
                continue;
            }
        };
        // Parts the manifest lists that no file uses are still checked.
        let used: std::collections::HashSet<u32> = jobs.iter().map(|j| j.part.index).collect();
        let mut jobs = jobs;
        for part in &m.parts {
            if !used.contains(&part.index) {
                jobs.push(extract::PartJob {
                    label: m.label.clone(),
                    part: part.clone(),
                    wanted: HashMap::new(),
                });
            }
        }
        report.parts += jobs.len();
        let manifest = Arc::new((*m).clone());
        let counter = progress.counter();
        let problems = extract::run_parts(
            context.storage.clone(),
            layout,
            jobs,
            context.backup.parallelism,
            false,
            move |key, bytes, job| {
                let mut sink = |_: usize, _: u64, _: &[u8]| Ok(());
                extract::read_part(key, bytes, job, &manifest.files, &mut sink, Some(&counter))
            },
        )
        .await?;
        for p in problems {
            report.problems.push(format!("backup {}: {p}", m.label));
        }
        if let Some(dir) = dirs.get(&m.label) {
            let expected: std::collections::HashSet<String> = m
                .parts
                .iter()
                .map(|p| layout.data_part_key(&m.label, p.index))
                .chain([layout.manifest_key(&m.label)])
                .collect();
            for key in &dir.keys {
                if !expected.contains(key) {
                    report
                        .notes
                        .push(format!("backup {}: {key} is not in its manifest", m.label));
                }
            }
        }
    }
    progress.finish();

    // WAL.
    let segment_size = manifests
        .values()
        .next()
        .map(|m| m.wal_segment_size)
        .unwrap_or(16 << 20);
    let archive = Archive::list(storage, layout, segment_size)
        .await
        .map_err(|e| context.repo_err(e))?;
    report.wal_objects = archive.objects.len();
    report
        .problems
        .extend(check_wal_objects(context, &archive).await?);
    let entries: Vec<&Entry> = catalog
        .backups
        .iter()
        .filter(|b| set.is_none_or(|s| s == b.label))
        .collect();
    report
        .problems
        .extend(check_continuity(context, &archive, &entries, segment_size).await?);
    Ok(report)
}

/// The files of `m` whose pages failed their checksum when copied.
fn page_errors(m: &Manifest) -> Vec<String> {
    m.damaged_files()
        .map(|f| {
            format!(
                "backup {}: {} holds pages that failed their checksum when {} (blocks {}); \
                 a restore brings them back as they were read",
                m.label,
                f.path,
                match &f.reference {
                    Some(holder) => format!("backup {holder} copied it"),
                    None => "it was copied".to_string(),
                },
                describe_blocks(&f.checksum_errors, f.checksum_error_count)
            )
        })
        .collect()
}

/// Each referenced file must be in the referenced backup, identical.
fn check_references(m: &Manifest, manifests: &BTreeMap<String, Manifest>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut index: HashMap<&str, HashMap<&str, &crate::backup::model::manifest::File>> =
        HashMap::new();
    for label in &m.reference {
        match manifests.get(label) {
            Some(other) => {
                index.insert(
                    label,
                    other
                        .files
                        .iter()
                        .filter(|f| f.reference.is_none())
                        .map(|f| (f.path.as_str(), f))
                        .collect(),
                );
            }
            None => problems.push(format!(
                "backup {}: refers to backup {label}, which is missing or damaged: it cannot be restored",
                m.label
            )),
        }
    }
    for file in &m.files {
        let Some(label) = &file.reference else {
            continue;
        };
        let Some(files) = index.get(label.as_str()) else {
            continue;
        };
        match files.get(file.path.as_str()) {
            Some(stored) if stored.sha256 == file.sha256 && stored.pieces == file.pieces => {}
            _ => problems.push(format!(
                "backup {}: {} refers to backup {label}, which does not hold that content",
                m.label, file.path
            )),
        }
    }
    problems
}

/// Every WAL object decompresses to the content its name promises.
async fn check_wal_objects(context: &Context, archive: &Archive) -> Result<Vec<String>> {
    let storage = context.storage.clone();
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in &archive.objects {
        names.entry(o.name.as_str()).or_default().push(&o.key);
    }
    for (name, keys) in &names {
        if keys.len() > 1 {
            problems.push(format!(
                "WAL {name} is stored {} times with different content ({}): recovery refuses to guess",
                keys.len(),
                keys.join(", ")
            ));
        }
    }
    let total: u64 = archive.objects.iter().map(|o| o.size).sum();
    let progress = Progress::start("verify WAL", total);
    let counter = progress.counter();
    let results: Vec<Result<Option<String>>> = stream::iter(archive.objects.iter().cloned())
        .map(|object| {
            let storage = storage.clone();
            let counter = counter.clone();
            async move {
                let key = object.key.clone();
                let fetched = storage
                    .run("get", &key, || async {
                        storage.get(&key).await?.into_bytes(&key, 2 << 30).await
                    })
                    .await;
                let bytes = match fetched {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => {
                        return Ok(Some(format!(
                            "WAL {}: {key} vanished while verifying",
                            object.name
                        )))
                    }
                    Err(e) => return Err(crate::backup::BackupError::repository(&*storage, e)),
                };
                counter.add(bytes.len() as u64);
                let want = object.sha256.clone();
                let name = object.name.to_string();
                tokio::task::spawn_blocking(move || match wal::decompress(&bytes) {
                    Err(e) => Some(format!("WAL {name}: {key} cannot be decompressed ({e})")),
                    Ok(data) => {
                        let got = wal::sha256_hex(&data);
                        (got != want).then(|| {
                            format!("WAL {name}: {key} is damaged: its content hashes to {got}")
                        })
                    }
                })
                .await
                .map_err(|e| crate::backup::BackupError::Internal(e.to_string()))
            }
        })
        .buffer_unordered(context.backup.parallelism * 2)
        .collect()
        .await;
    progress.finish();
    for result in results {
        if let Some(problem) = result? {
            problems.push(problem);
        }
    }
    problems.sort();
    Ok(problems)
}

/// The timeline path ending on `target`, from its history file.
async fn path_for(
    storage: &dyn Storage,
    archive: &Archive,
    target: u32,
    segment_size: u64,
    problems: &mut Vec<String>,
) -> Result<TimelinePath, crate::backup::BackupError> {
    if target <= 1 {
        return Ok(TimelinePath::single(target.max(1)));
    }
    let Some(key) = archive.histories.get(&target) else {
        problems.push(format!(
            "the history file of timeline {target} ({target:08X}.history) is not archived: \
             recovery cannot follow that timeline"
        ));
        return Ok(TimelinePath::single(target));
    };
    let bytes = storage
        .get(key)
        .await
        .map_err(|e| crate::backup::BackupError::repository(storage, e))?
        .into_bytes(key, 16 << 20)
        .await
        .map_err(|e| crate::backup::BackupError::repository(storage, e))?;
    match wal::decompress(&bytes) {
        Ok(text) => Ok(TimelinePath::new(
            target,
            &walrange::parse_history(&String::from_utf8_lossy(&text)),
            segment_size,
        )),
        Err(_) => Ok(TimelinePath::single(target)),
    }
}

async fn check_continuity(
    context: &Context,
    archive: &Archive,
    backups: &[&Entry],
    segment_size: u64,
) -> Result<Vec<String>> {
    let storage = context.storage();
    let mut problems = Vec::new();
    let Some(newest_tli) = archive.newest_timeline() else {
        if !backups.is_empty() {
            problems.push("the WAL archive is empty: no backup can be restored".into());
        }
        return Ok(problems);
    };
    let newest_path = path_for(storage, archive, newest_tli, segment_size, &mut problems).await?;
    for b in backups {
        let Some((_, first)) = parse_segment(&b.start_wal, segment_size) else {
            continue;
        };
        let Some((_, last)) = parse_segment(&b.stop_wal, segment_size) else {
            continue;
        };
        let path = if newest_path.contains(b.timeline) && newest_path.contains(b.stop_timeline) {
            newest_path.clone()
        } else {
            path_for(
                storage,
                archive,
                b.stop_timeline,
                segment_size,
                &mut problems,
            )
            .await?
        };
        let needed = walrange::missing_segments(archive, &path, first, last);
        if !needed.is_empty() {
            problems.push(format!(
                "backup {}: WAL it needs is missing ({}): it cannot be restored",
                b.label,
                walrange::describe_segments(&needed, segment_size)
            ));
            continue;
        }
        let newest = archive
            .segments
            .iter()
            .filter(|(t, _)| path.contains(*t))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(last);
        if newest > last {
            let gap = walrange::missing_segments(archive, &path, last + 1, newest);
            if !gap.is_empty() {
                problems.push(format!(
                    "backup {}: gap in the WAL after it ({}): point-in-time recovery from it stops \
                     before the gap",
                    b.label,
                    walrange::describe_segments(&gap, segment_size)
                ));
            }
        }
    }
    Ok(problems)
}
