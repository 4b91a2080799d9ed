//! `pgpilot backup [--type full|incr] [--label L]`: a base backup.
//!
//! 1. Check the server (this data directory, archive_mode, wal_level) and
//!    the repository's identity; nothing is written for another cluster.
//! 2. `pg_backup_start(label, fast)` on one session, held open.
//! 3. List the data directory and stream it into compressed tar parts,
//!    uploaded in parallel ([`crate::backup::data::pipeline`]); with data checksums on,
//!    verify the pages of relation files on the way ([`crate::backup::data::pagecheck`]).
//!    Damaged pages do not fail the backup (like pgBackRest): they are
//!    logged, listed in the manifest and flag the backup (`error`).
//! 4. `pg_backup_stop()`: the backup_label and tablespace_map to store.
//! 5. Wait until every WAL segment from the start to the stop position is
//!    in the repository (`backup.archive_timeout`, exit 82 after that).
//! 6. Store the manifest, then list the backup in the catalog. Only now is
//!    the backup complete; on any failure before, its objects are removed
//!    (and never listed).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{self, Session};
use crate::backup::data::pagecheck::{self, PageCheck};
use crate::backup::data::pipeline::{self, ParentIndex};
use crate::backup::data::progress::{self, Progress};
use crate::backup::model::catalog::{self, Catalog};
use crate::backup::model::manifest::{self, BackupType, Compression, LoadError, Manifest};
use crate::backup::model::walrange::{self, segment_name, Archive, TimelinePath};
use crate::backup::{code, BackupError, Context, Result};
use crate::lsn::format_lsn;
use crate::repo::identity::{self, ClusterIdentity};
use crate::repo::layout::WalName;
use crate::repo::Storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    /// Every file.
    Full,
    /// Only the files changed since the latest backup (full or incremental).
    Incr,
}

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// The member's TOML configuration file.
    #[arg(short, long, env = "PGPILOT_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Full, or incremental to the latest backup.
    #[arg(long = "type", value_enum, default_value = "full")]
    pub backup_type: TypeArg,
    /// The label (default: `YYYYMMDD-HHMMSSF`, incrementals
    /// `<full>_YYYYMMDD-HHMMSSI`, UTC, like pgBackRest).
    #[arg(long)]
    pub label: Option<String>,
    #[command(subcommand)]
    pub action: Option<BackupAction>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupAction {
    /// List the backups (same as `pgpilot info`).
    List(super::info::InfoArgs),
}

/// Entry point; returns the exit code.
pub fn main(args: BackupArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    match args.action {
        Some(BackupAction::List(info)) => super::info::main(info, runtime),
        None => {
            let Some(config) = args.config else {
                eprintln!("pgpilot backup: --config (or PGPILOT_CONFIG) is required");
                return code::USAGE;
            };
            super::run(runtime, "backup", &config, async |context| {
                let done = take(&context, args.backup_type, args.label.as_deref()).await?;
                println!("new backup label = {}", done.label);
                Ok(code::OK)
            })
        }
    }
}

/// Uncompressed bytes per data part.
pub fn part_target(context: &Context) -> usize {
    (context.backup.part_mib as usize) << 20
}

/// Take a backup; returns its manifest once it is complete and listed.
pub async fn take(context: &Context, requested: TypeArg, label: Option<&str>) -> Result<Manifest> {
    let started = Instant::now();
    let config = &context.config;
    let storage = context.storage();
    let layout = &context.layout;
    let data_dir = config.postgresql.data_dir.clone();

    // 1. The server and the repository.
    let local = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || ClusterIdentity::from_data_dir(&dir))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?
            .map_err(BackupError::Local)?
    };
    let session = Session::connect(config).await?;
    check_server(&session.settings, &data_dir, &local)?;
    identity::ensure(storage, layout, &local)
        .await
        .map_err(|e| BackupError::identity(storage, e))?;

    let catalog = catalog::load_or_rebuild(context).await?;
    let (backup_type, parent) = choose_parent(context, &catalog, requested, &local).await?;
    let label = match label {
        Some(label) => {
            manifest::check_label(label).map_err(BackupError::Usage)?;
            if label_taken(context, &catalog, label).await? {
                return Err(BackupError::Usage(format!(
                    "{} already holds a backup labelled {label}: choose another label",
                    storage.location()
                )));
            }
            label.to_string()
        }
        None => {
            // Labels have a one-second resolution: wait for a free one.
            let mut label = new_label(backup_type, parent.as_ref());
            for _ in 0..3 {
                if !label_taken(context, &catalog, &label).await? {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
                label = new_label(backup_type, parent.as_ref());
            }
            if label_taken(context, &catalog, &label).await? {
                return Err(BackupError::Usage(format!(
                    "the label {label} is taken: try again"
                )));
            }
            label
        }
    };

    // 2..6, removing what was stored if anything fails.
    match run_backup(
        context,
        &session,
        &label,
        backup_type,
        parent,
        &catalog,
        started,
    )
    .await
    {
        Ok(manifest) => Ok(manifest),
        Err(e) => {
            remove_incomplete(storage, layout, &label).await;
            Err(e)
        }
    }
}

async fn run_backup(
    context: &Context,
    session: &Session,
    label: &str,
    backup_type: BackupType,
    parent: Option<Manifest>,
    catalog: &Catalog,
    started: Instant,
) -> Result<Manifest> {
    let config = &context.config;
    let layout = &context.layout;
    let settings = &session.settings;
    let segment_size = settings.segment_size;
    let role = if settings.in_recovery {
        "standby"
    } else {
        "primary"
    };
    tracing::info!(
        "backup {label} ({}) starting on the {role}, into {}",
        backup_type.as_str(),
        context.storage().location()
    );

    // 2. Start.
    let start_time_us = crate::backup::now_micros();
    let start_lsn = session.start(label).await?;
    tracing::info!("backup start LSN {}", format_lsn(start_lsn));
    let page_check = page_check(session, start_lsn).await?;

    // 3. The files.
    let dir = config.postgresql.data_dir.clone();
    let listing = tokio::task::spawn_blocking(move || crate::backup::data::walk::walk(&dir))
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?
        .map_err(BackupError::Local)?;
    let total: u64 = listing.files.iter().map(|f| f.size).sum();
    let progress = Progress::start(&format!("backup {label}"), total);
    let storage: Arc<dyn crate::repo::Storage> = context.storage.clone();
    let output = pipeline::run(
        storage,
        layout,
        label,
        pipeline::Input {
            files: listing.files,
            parent: parent.as_ref().map(ParentIndex::of),
            part_target: part_target(context),
            level: context.backup.compression_level,
            parallelism: context.backup.parallelism,
            page_check,
        },
        progress.counter(),
    )
    .await?;
    let copy_time = progress.elapsed();
    progress.finish();
    tracing::info!(
        "copied {} in {} files ({}), {} unchanged in {} files, stored {} in {} parts, in {:.1} s",
        progress::mib(output.copied_bytes),
        output.files.len() - output.referenced_files,
        progress::rate(output.copied_bytes + output.referenced_bytes, copy_time),
        progress::mib(output.referenced_bytes),
        output.referenced_files,
        progress::mib(output.parts.iter().map(|p| p.size).sum()),
        output.parts.len(),
        copy_time.as_secs_f64()
    );
    if page_check.is_some() {
        report_pages(&output);
    }

    // 4. Stop.
    let stopped = session.stop().await?;
    let stop_time_us = crate::backup::now_micros();
    let timeline = session::label_timeline(&stopped.backup_label).ok_or_else(|| {
        BackupError::Postgres(format!(
            "pg_backup_stop returned a backup_label without START TIMELINE: {:?}",
            stopped.backup_label
        ))
    })?;
    let stop_timeline = session.stop_timeline(stopped.lsn).await?;
    let first = walrange::segment_of(start_lsn, segment_size);
    let last = walrange::segment_before(stopped.lsn, segment_size).max(first);
    tracing::info!(
        "backup stop LSN {}; waiting for WAL {}..{} in the repository",
        format_lsn(stopped.lsn),
        segment_name(timeline, first, segment_size),
        segment_name(stop_timeline, last, segment_size)
    );

    // 5. The WAL from start to stop.
    let upstream = if settings.in_recovery {
        session.upstream().await
    } else {
        None
    };
    wait_for_wal(
        context,
        (timeline, first),
        (stop_timeline, last),
        segment_size,
        upstream,
    )
    .await?;

    // 6. Manifest, then catalog.
    let mut references: BTreeMap<String, Manifest> = BTreeMap::new();
    if let Some(parent) = &parent {
        for r in &parent.reference {
            if let Ok(m) = Manifest::load(context.storage(), layout, r).await {
                references.insert(r.clone(), m);
            }
        }
        references.insert(parent.label.clone(), parent.clone());
    }
    let mut reference: Vec<String> = output
        .files
        .iter()
        .filter_map(|f| f.reference.clone())
        .collect();
    reference.sort_by_key(|r| catalog.get(r).map(|e| e.start_time_us).unwrap_or(i64::MAX));
    reference.dedup();
    let manifest = Manifest {
        label: label.to_string(),
        backup_type,
        prior: parent.as_ref().map(|p| p.label.clone()),
        reference,
        stanza: layout.stanza().to_string(),
        system_identifier: settings.system_identifier.clone(),
        pg_version: (settings.version_num / 10_000).to_string(),
        pg_version_num: settings.version_num,
        from_standby: settings.in_recovery,
        timeline,
        stop_timeline,
        start_lsn: format_lsn(start_lsn),
        stop_lsn: format_lsn(stopped.lsn),
        start_wal: segment_name(timeline, first, segment_size),
        stop_wal: segment_name(stop_timeline, last, segment_size),
        wal_segment_size: segment_size,
        start_time_us,
        stop_time_us,
        backup_label: stopped.backup_label,
        tablespace_map: stopped.tablespace_map,
        compression: Compression {
            kind: "zstd".into(),
            level: context.backup.compression_level,
        },
        pgpilot_version: crate::VERSION.to_string(),
        parts: output.parts,
        directories: listing.directories,
        links: listing.links,
        page_checksums: page_check.is_some(),
        segment_blocks: page_check.map(|c| c.blocks_per_segment),
        error: output.files.iter().any(|f| f.has_page_errors()),
        files: output.files,
    };
    manifest
        .validate()
        .map_err(|why| BackupError::Internal(format!("the new manifest is inconsistent: {why}")))?;
    manifest
        .store(context.storage(), layout)
        .await
        .map_err(|e| context.repo_err(e))?;
    let entry =
        catalog::Entry::from_manifest(&manifest, catalog::repo_size(&manifest, &references));
    catalog::update(
        context.storage(),
        layout,
        |c| {
            c.backups.retain(|b| b.label != entry.label);
            c.backups.push(entry.clone());
        },
        |c| c.get(label).is_some(),
    )
    .await
    .map_err(|e| manifest::load_error(context, e))?;
    let elapsed = started.elapsed();
    tracing::info!(
        "backup {label} complete: {} of data, {} stored, {:.1} s ({})",
        progress::mib(manifest.data_size()),
        progress::mib(manifest.stored_size()),
        elapsed.as_secs_f64(),
        progress::rate(manifest.data_size(), elapsed)
    );
    if manifest.error {
        tracing::warn!(
            "backup {label} holds pages that failed their checksum in {} file(s): it is \
             complete, but restoring it brings those pages back as they are. `pgpilot info` \
             lists them; find the damage's cause (storage, memory) and repair the tables",
            manifest.damaged_files().count()
        );
    }
    Ok(manifest)
}

/// Whether and how to verify pages: only with data checksums on and
/// PostgreSQL's usual 8 KiB block size.
async fn page_check(session: &Session, start_lsn: u64) -> Result<Option<PageCheck>> {
    let row = session
        .client()
        .query_one(
            "SELECT current_setting('data_checksums'), current_setting('block_size')::int, \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'segment_size')",
            &[],
        )
        .await
        .map_err(|e| {
            BackupError::Postgres(format!("reading data_checksums and segment_size: {e}"))
        })?;
    let (checksums, block_size, segment_blocks): (String, i32, i64) =
        (row.get(0), row.get(1), row.get(2));
    if checksums != "on" {
        tracing::info!(
            "data checksums are off on this cluster: pages are not verified (pg_checksums \
             --enable, on a stopped cluster, turns them on)"
        );
        return Ok(None);
    }
    if block_size as usize != pagecheck::PAGE_SIZE || segment_blocks <= 0 {
        tracing::warn!(
            "block_size is {block_size}, not {}: pages are not verified",
            pagecheck::PAGE_SIZE
        );
        return Ok(None);
    }
    Ok(Some(PageCheck {
        lsn_limit: start_lsn,
        blocks_per_segment: u32::try_from(segment_blocks).unwrap_or(u32::MAX),
    }))
}

/// Log what the page checks found: a warning per damaged file (also the
/// files an incremental refers to: the stored copy is damaged).
fn report_pages(output: &pipeline::Output) {
    let pages = output.pages;
    tracing::info!(
        "page checksums: {} pages verified, {} new (all zero), {} changed during the backup \
         (WAL replay rewrites them), {} failed",
        pages.valid,
        pages.new,
        pages.recent,
        pages.damaged
    );
    for file in output.files.iter().filter(|f| f.has_page_errors()) {
        let blocks = pagecheck::describe_blocks(&file.checksum_errors, file.checksum_error_count);
        match &file.reference {
            None => tracing::warn!(
                "page checksum failure in {}, blocks: {blocks} (stored as read; WAL replay \
                 does not repair it)",
                file.path
            ),
            Some(holder) => tracing::warn!(
                "page checksum failure in {}, blocks: {blocks} (the unchanged copy stored by \
                 backup {holder}, which this backup refers to)",
                file.path
            ),
        }
    }
}

/// The server must be the one of this configuration and able to archive.
fn check_server(
    settings: &session::Settings,
    data_dir: &Path,
    local: &ClusterIdentity,
) -> Result<()> {
    let theirs = std::fs::canonicalize(&settings.data_directory)
        .unwrap_or_else(|_| settings.data_directory.clone().into());
    let ours = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if theirs != ours {
        return Err(BackupError::Usage(format!(
            "the PostgreSQL on postgresql.socket_dir/port runs on {}, but postgresql.data_dir is {}: \
             pgpilot reads the files directly and must back up the server it talks to",
            theirs.display(),
            ours.display()
        )));
    }
    if settings.system_identifier != local.system_identifier.to_string() {
        return Err(BackupError::Postgres(format!(
            "the server's system identifier {} is not the data directory's {}",
            settings.system_identifier, local.system_identifier
        )));
    }
    if settings.version_num < 100_000 {
        return Err(BackupError::Postgres(
            "PostgreSQL 10 or later is needed".into(),
        ));
    }
    if settings.wal_level == "minimal" {
        return Err(BackupError::Postgres(
            "wal_level is minimal: set it to replica (or logical) to take online backups".into(),
        ));
    }
    if !settings.in_recovery {
        if settings.archive_mode == "off" {
            return Err(BackupError::Postgres(
                "archive_mode is off: the WAL a restore of this backup needs would not be \
                 archived. Set archive_mode = on and archive_command to pgpilot archive-push."
                    .into(),
            ));
        }
        if !settings.archive_command.contains("archive-push") {
            tracing::warn!(
                "archive_command is {:?}, not pgpilot archive-push: the backup completes only \
                 once its WAL reaches this repository",
                settings.archive_command
            );
        }
    }
    Ok(())
}

async fn choose_parent(
    context: &Context,
    catalog: &Catalog,
    requested: TypeArg,
    local: &ClusterIdentity,
) -> Result<(BackupType, Option<Manifest>)> {
    if requested == TypeArg::Full {
        return Ok((BackupType::Full, None));
    }
    let latest = catalog.backups.iter().rev().find(|b| {
        b.system_identifier == local.system_identifier.to_string()
            && b.pg_version == local.pg_version
    });
    let Some(latest) = latest else {
        tracing::warn!(
            "no prior backup of this cluster: taking a full backup instead of an incremental"
        );
        return Ok((BackupType::Full, None));
    };
    match Manifest::load(context.storage(), &context.layout, &latest.label).await {
        Ok(m) => Ok((BackupType::Incr, Some(m))),
        Err(LoadError::Corrupt(why)) => Err(BackupError::Corrupt(format!(
            "the latest backup's manifest is damaged ({why}): take a full backup"
        ))),
        Err(e) => Err(manifest::load_error(context, e)),
    }
}

/// Is `label` listed, or does the repository hold objects under it?
async fn label_taken(context: &Context, catalog: &Catalog, label: &str) -> Result<bool> {
    if catalog.get(label).is_some() {
        return Ok(true);
    }
    let existing = context
        .storage()
        .list(&context.layout.backup_dir(label))
        .await
        .map_err(|e| context.repo_err(e))?;
    Ok(!existing.is_empty())
}

fn new_label(backup_type: BackupType, parent: Option<&Manifest>) -> String {
    let now = crate::backup::label_time(crate::backup::now_micros() / 1_000_000);
    match (backup_type, parent) {
        (BackupType::Incr, Some(parent)) => {
            let full = parent.label.split('_').next().unwrap_or(&parent.label);
            format!("{full}_{now}I")
        }
        _ => format!("{now}F"),
    }
}

/// Poll the repository until every segment of the range is there.
async fn wait_for_wal(
    context: &Context,
    (start_tli, first): (u32, u64),
    (stop_tli, last): (u32, u64),
    segment_size: u64,
    upstream: Option<(String, u16)>,
) -> Result<()> {
    let storage = context.storage();
    let layout = &context.layout;
    let timeout = context.backup.archive_timeout();
    let deadline = Instant::now() + timeout;
    let mut nudged = upstream.is_none();
    let waiting_since = Instant::now();
    let mut path = (start_tli == stop_tli).then(|| TimelinePath::single(stop_tli));
    let mut missing: Vec<u64> = (first..=last).collect();
    loop {
        if path.is_none() {
            // The timeline changed during the backup: read its history.
            let archive = Archive::list(storage, layout, segment_size)
                .await
                .map_err(|e| context.repo_err(e))?;
            if let Some(key) = archive.histories.get(&stop_tli) {
                let text = storage
                    .get(key)
                    .await
                    .map_err(|e| context.repo_err(e))?
                    .into_bytes(key, 1 << 20)
                    .await
                    .map_err(|e| context.repo_err(e))?;
                let text = crate::archive::wal::decompress(&text).map_err(|e| {
                    BackupError::Corrupt(format!("{key} cannot be decompressed: {e}"))
                })?;
                path = Some(TimelinePath::new(
                    stop_tli,
                    &walrange::parse_history(&String::from_utf8_lossy(&text)),
                    segment_size,
                ));
            }
        }
        if let Some(path) = &path {
            let mut still = Vec::new();
            for n in missing {
                let name = segment_name(path.timeline_of(n), n, segment_size);
                let wal = WalName::parse(&name).expect("a segment name");
                let found = storage
                    .list(&layout.wal_prefix(&wal))
                    .await
                    .map_err(|e| context.repo_err(e))?
                    .iter()
                    .any(|m| layout.parse_wal_key(&m.key).is_some_and(|(w, _)| w == wal));
                if !found {
                    still.push(n);
                }
            }
            missing = still;
            if missing.is_empty() {
                return Ok(());
            }
        }
        if !nudged && waiting_since.elapsed() > Duration::from_secs(2) {
            nudged = true;
            if let Some((host, port)) = &upstream {
                match session::nudge_primary(&context.config, host, *port).await {
                    Ok(segment) => tracing::info!(
                        "asked the primary {host}:{port} to switch WAL segments ({segment} is complete)"
                    ),
                    Err(e) => tracing::warn!(
                        "cannot ask the primary {host}:{port} to switch WAL segments ({e}); \
                         waiting for it to fill the segment"
                    ),
                }
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<(u32, u64)> = missing
                .iter()
                .map(|n| {
                    (
                        path.as_ref().map(|p| p.timeline_of(*n)).unwrap_or(stop_tli),
                        *n,
                    )
                })
                .collect();
            return Err(BackupError::Timeout(format!(
                "WAL segment {} not archived in {} within backup.archive_timeout ({} s): the \
                 backup is not complete and was removed. Check archive_command (it must be \
                 pgpilot archive-push with this configuration) and pg_stat_archiver on the primary.",
                walrange::describe_segments(&names, segment_size),
                storage.location(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Best effort: remove what an unfinished backup stored. A backup the
/// catalog lists is complete (only reading the catalog back failed): it
/// stays.
async fn remove_incomplete(
    storage: &dyn Storage,
    layout: &crate::repo::layout::Layout,
    label: &str,
) {
    match catalog::load(storage, layout).await {
        Ok(c) if c.get(label).is_none() => {}
        Ok(_) => {
            tracing::warn!("backup {label} is listed in the catalog: it is complete and stays");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot read the catalog ({e}): the objects of backup {label} stay; `pgpilot expire` removes them if the backup is not listed");
            return;
        }
    }
    let Ok(objects) = storage.list(&layout.backup_dir(label)).await else {
        tracing::warn!("could not list the objects of the unfinished backup {label}; `pgpilot expire` removes them later");
        return;
    };
    // The manifest first: without it nothing treats the rest as a backup.
    let mut keys: Vec<String> = objects.into_iter().map(|m| m.key).collect();
    keys.sort_by_key(|k| !k.ends_with("/manifest.json"));
    let count = keys.len();
    for key in keys {
        if let Err(e) = storage.delete(&key).await {
            tracing::warn!("could not remove {key} of the unfinished backup {label}: {e}; `pgpilot expire` removes it later");
            return;
        }
    }
    if count > 0 {
        tracing::info!("removed the {count} objects the unfinished backup {label} had stored");
    }
}
