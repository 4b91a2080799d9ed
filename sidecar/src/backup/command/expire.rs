//! `pgpilot expire [--retention-full N] [--retention-days D] [--dry-run]`:
//! remove the backups the retention policy no longer keeps, and the WAL
//! older than what the oldest kept backup needs.
//!
//! Plan first ([`plan`], a pure function), print it, then act — or stop
//! there with `--dry-run`. The policy:
//!
//! - `retention_full = N`: keep the newest N full backups;
//! - `retention_days = D`: keep the full backups that finished in the last
//!   D days, and the newest one before that (so that every time in the
//!   window can still be restored);
//! - both: keep what either keeps. The newest full backup is always kept.
//! - an incremental backup is kept with the full backup it builds on, and
//!   removed with it;
//! - WAL segments (and `.partial`, `.backup` files) before the start of the
//!   oldest kept backup are removed; timeline history files are kept.
//!
//! Also cleaned up: the objects of backups that never completed (no
//! manifest, nothing written for a while), and catalog entries whose
//! manifest is gone. A complete backup missing from the catalog (a crash
//! between its manifest and the catalog) is put back in it first, and the
//! policy applies to it like to the others.
//!
//! Order of removal: catalog, then manifest, then data, then WAL — a backup
//! is never listed while its objects are being removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, StreamExt};

use crate::backup::data::progress::mib;
use crate::backup::model::catalog::{self, BackupDir, Catalog, Entry};
use crate::backup::model::manifest::{BackupType, LoadError, Manifest};
use crate::backup::model::walrange::{parse_segment, segment_name, Archive};
use crate::backup::{code, BackupError, ConfigArg, Context, Result};
use crate::repo::layout::WalKind;

#[derive(Debug, Clone, clap::Args)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Keep this many full backups (default: backup.retention_full).
    #[arg(long)]
    pub retention_full: Option<u32>,
    /// Keep the full backups of the last this many days, and the newest
    /// before them (default: backup.retention_days).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn main(args: ExpireArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = args.config.config.clone();
    super::run(runtime, "expire", &config, async |context| {
        expire(&context, &args).await?;
        Ok(code::OK)
    })
}

/// The retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub full: Option<u32>,
    pub days: Option<u32>,
}

impl Policy {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.full {
            parts.push(format!("{n} full backups"));
        }
        if let Some(d) = self.days {
            parts.push(format!("{d} days"));
        }
        parts.join(" or ")
    }
}

/// Which backups to keep and which to remove, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub keep: Vec<String>,
    /// (label, why), oldest first.
    pub expire: Vec<(String, String)>,
}

/// Decide from the backups (oldest first) at time `now_us`.
pub fn plan(backups: &[Entry], policy: Policy, now_us: i64) -> Decision {
    let fulls: Vec<&Entry> = backups
        .iter()
        .filter(|b| b.backup_type == BackupType::Full)
        .collect();
    let mut kept_fulls: BTreeSet<&str> = BTreeSet::new();
    if let Some(n) = policy.full {
        for b in fulls.iter().rev().take(n.max(1) as usize) {
            kept_fulls.insert(&b.label);
        }
    }
    if let Some(days) = policy.days {
        let cutoff = now_us - i64::from(days) * 86_400 * 1_000_000;
        let mut newest_before: Option<&Entry> = None;
        for b in &fulls {
            if b.stop_time_us >= cutoff {
                kept_fulls.insert(&b.label);
            } else {
                newest_before = Some(b);
            }
        }
        if let Some(b) = newest_before {
            kept_fulls.insert(&b.label);
        }
    }
    if let Some(newest) = fulls.last() {
        kept_fulls.insert(&newest.label);
    }
    let by_label: BTreeMap<&str, &Entry> = backups.iter().map(|b| (b.label.as_str(), b)).collect();
    let root_full = |b: &Entry| -> Option<String> {
        let mut current = b;
        for _ in 0..10_000 {
            if current.backup_type == BackupType::Full {
                return Some(current.label.clone());
            }
            current = by_label.get(current.prior.as_deref()?)?;
        }
        None
    };
    let mut decision = Decision::default();
    for b in backups {
        match (b.backup_type, root_full(b)) {
            (BackupType::Full, _) if kept_fulls.contains(b.label.as_str()) => {
                decision.keep.push(b.label.clone())
            }
            (BackupType::Full, _) => decision.expire.push((
                b.label.clone(),
                "older than the retention policy keeps".into(),
            )),
            (BackupType::Incr, Some(full)) if kept_fulls.contains(full.as_str()) => {
                decision.keep.push(b.label.clone())
            }
            (BackupType::Incr, Some(full)) => decision.expire.push((
                b.label.clone(),
                format!("incremental to {full}, which expires"),
            )),
            (BackupType::Incr, None) => decision.expire.push((
                b.label.clone(),
                "the backups it builds on are gone: it cannot be restored".into(),
            )),
        }
    }
    decision
}

/// Keys of WAL objects older than the oldest kept backup needs.
pub fn wal_to_remove(
    archive: &Archive,
    oldest_start: u64,
    segment_size: u64,
) -> Vec<(String, u64)> {
    archive
        .objects
        .iter()
        .filter(|o| o.name.kind() != WalKind::History)
        .filter(|o| {
            parse_segment(o.name.as_str(), segment_size).is_some_and(|(_, n)| n < oldest_start)
        })
        .map(|o| (o.key.clone(), o.size))
        .collect()
}

struct Work {
    catalog: Catalog,
    /// Backups to remove: label → keys (manifest first).
    backups: Vec<(String, String, Vec<String>, u64)>,
    /// Objects of backups that never completed.
    leftovers: Vec<(String, Vec<String>, u64)>,
    /// Left because something may still be writing them.
    young: Vec<String>,
    /// Catalog entries whose manifest is gone.
    dangling: Vec<String>,
    /// Complete backups missing from the catalog, put back.
    adopted: Vec<String>,
    wal: Vec<(String, u64)>,
    wal_before: Option<String>,
    keep: Vec<String>,
}

pub async fn expire(context: &Context, args: &ExpireArgs) -> Result<()> {
    let policy = Policy {
        full: args.retention_full.or(context.backup.retention_full),
        days: args.retention_days.or(context.backup.retention_days),
    };
    if policy.full.is_none() && policy.days.is_none() {
        return Err(BackupError::Usage(
            "no retention policy: pass --retention-full and/or --retention-days, or set \
             backup.retention_full / backup.retention_days"
                .into(),
        ));
    }
    if policy.full == Some(0) || policy.days == Some(0) {
        return Err(BackupError::Usage(
            "--retention-full and --retention-days must be at least 1".into(),
        ));
    }
    let work = gather(context, policy).await?;
    print_plan(context, policy, &work, args.dry_run);
    if args.dry_run {
        return Ok(());
    }
    act(context, work).await
}

async fn gather(context: &Context, policy: Policy) -> Result<Work> {
    let storage = context.storage();
    let layout = &context.layout;
    let mut catalog = crate::backup::model::catalog::load_or_rebuild(context).await?;
    let dirs: BTreeMap<String, BackupDir> = catalog::backup_dirs(storage, layout)
        .await
        .map_err(|e| context.repo_err(e))?;

    // Reconcile the catalog with the manifests.
    let dangling: Vec<String> = catalog
        .backups
        .iter()
        .filter(|b| !dirs.get(&b.label).is_some_and(|d| d.has_manifest))
        .map(|b| b.label.clone())
        .collect();
    catalog.backups.retain(|b| !dangling.contains(&b.label));
    let mut adopted = Vec::new();
    let mut leftovers = Vec::new();
    let mut young = Vec::new();
    let grace = Duration::from_secs(3600).max(context.backup.archive_timeout() * 2);
    let now = SystemTime::now();
    for (label, dir) in &dirs {
        if catalog.get(label).is_some() {
            continue;
        }
        if dir.has_manifest {
            match Manifest::load(storage, layout, label).await {
                Ok(m) => {
                    catalog
                        .backups
                        .push(Entry::from_manifest(&m, m.stored_size()));
                    adopted.push(label.clone());
                    continue;
                }
                Err(LoadError::Corrupt(why)) => {
                    tracing::warn!("backup {label} is not listed and its manifest is damaged ({why}): its objects are removed");
                }
                Err(LoadError::Storage(e)) => return Err(context.repo_err(e)),
            }
        }
        let recent = dir
            .newest
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() < grace);
        if recent && !dir.has_manifest {
            young.push(label.clone());
        } else {
            leftovers.push((label.clone(), dir.keys.clone(), dir.bytes));
        }
    }
    catalog
        .backups
        .sort_by(|a, b| (a.start_time_us, &a.label).cmp(&(b.start_time_us, &b.label)));

    let decision = plan(&catalog.backups, policy, crate::backup::now_micros());
    let mut backups = Vec::new();
    for (label, why) in &decision.expire {
        let dir = dirs.get(label).cloned().unwrap_or_default();
        let mut keys = dir.keys.clone();
        keys.sort_by_key(|k| !k.ends_with("/manifest.json"));
        backups.push((label.clone(), why.clone(), keys, dir.bytes));
    }

    // WAL before the oldest kept backup.
    let oldest = catalog
        .backups
        .iter()
        .filter(|b| decision.keep.contains(&b.label))
        .min_by_key(|b| {
            parse_segment(&b.start_wal, b.wal_segment_size)
                .map(|(_, n)| n)
                .unwrap_or(0)
        });
    let (wal, wal_before) = match oldest {
        Some(b) => {
            let segment_size = b.wal_segment_size;
            let (tli, start) = parse_segment(&b.start_wal, segment_size).ok_or_else(|| {
                BackupError::Corrupt(format!(
                    "backup {} has a bad start_wal {:?}",
                    b.label, b.start_wal
                ))
            })?;
            let archive = Archive::list(storage, layout, segment_size)
                .await
                .map_err(|e| context.repo_err(e))?;
            (
                wal_to_remove(&archive, start, segment_size),
                Some(segment_name(tli, start, segment_size)),
            )
        }
        None => (Vec::new(), None),
    };
    Ok(Work {
        catalog,
        backups,
        leftovers,
        young,
        dangling,
        adopted,
        wal,
        wal_before,
        keep: decision.keep,
    })
}

fn print_plan(context: &Context, policy: Policy, work: &Work, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "remove" };
    let mut out = format!(
        "expire plan for stanza {} in {} (keep {}){}:\n",
        context.layout.stanza(),
        context.storage().location(),
        policy.describe(),
        if dry_run { ", dry run" } else { "" }
    );
    for label in &work.keep {
        let b = work.catalog.get(label);
        out.push_str(&format!(
            "  keep          {label} ({}, finished {})\n",
            b.map(|b| b.backup_type.as_str()).unwrap_or("?"),
            b.map(|b| crate::backup::pg_time(b.stop_time_us))
                .unwrap_or_default()
        ));
    }
    for label in &work.adopted {
        out.push_str(&format!(
            "  list again    {label}: complete but missing from the catalog\n"
        ));
    }
    for label in &work.dangling {
        out.push_str(&format!(
            "  unlist        {label}: listed but its manifest is gone\n"
        ));
    }
    for (label, why, keys, bytes) in &work.backups {
        out.push_str(&format!(
            "  {verb:<13} {label}: {why} ({} objects, {})\n",
            keys.len(),
            mib(*bytes)
        ));
    }
    for (label, keys, bytes) in &work.leftovers {
        out.push_str(&format!(
            "  {verb:<13} {label}: an unfinished backup ({} objects, {})\n",
            keys.len(),
            mib(*bytes)
        ));
    }
    for label in &work.young {
        out.push_str(&format!(
            "  leave         {label}: unfinished, written to recently (a backup may be running)\n"
        ));
    }
    match &work.wal_before {
        Some(before) => out.push_str(&format!(
            "  {verb:<13} {} WAL objects ({}) before {before}, the start of the oldest kept backup\n",
            work.wal.len(),
            mib(work.wal.iter().map(|(_, s)| s).sum())
        )),
        None => out.push_str("  keep          all WAL (no backup to anchor it)\n"),
    }
    print!("{out}");
}

async fn act(context: &Context, work: Work) -> Result<()> {
    let storage = context.storage();
    let layout = &context.layout;
    let gone: BTreeSet<String> = work
        .backups
        .iter()
        .map(|(l, ..)| l.clone())
        .chain(work.dangling.iter().cloned())
        .collect();
    let adopted: Vec<Entry> = work
        .catalog
        .backups
        .iter()
        .filter(|b| work.adopted.contains(&b.label) && !gone.contains(&b.label))
        .cloned()
        .collect();
    if !gone.is_empty() || !adopted.is_empty() {
        catalog::update(
            storage,
            layout,
            |c| {
                c.backups.retain(|b| !gone.contains(&b.label));
                for entry in &adopted {
                    if c.get(&entry.label).is_none() {
                        c.backups.push(entry.clone());
                    }
                }
            },
            |c| c.backups.iter().all(|b| !gone.contains(&b.label)),
        )
        .await
        .map_err(|e| crate::backup::model::manifest::load_error(context, e))?;
    }
    let parallel = context.backup.parallelism * 4;
    let delete_all = |keys: Vec<String>| async move {
        let results: Vec<_> = stream::iter(keys)
            .map(|key| async move { storage.delete(&key).await })
            .buffer_unordered(parallel)
            .collect()
            .await;
        results
            .into_iter()
            .collect::<std::result::Result<Vec<()>, _>>()
    };
    for (label, _, keys, _) in work.backups {
        let mut keys = keys.into_iter();
        // The manifest alone first: from then on nothing treats the rest as a backup.
        if let Some(first) = keys.next() {
            storage
                .delete(&first)
                .await
                .map_err(|e| context.repo_err(e))?;
        }
        delete_all(keys.collect())
            .await
            .map_err(|e| context.repo_err(e))?;
        tracing::info!("removed backup {label}");
    }
    for (label, keys, _) in work.leftovers {
        delete_all(keys).await.map_err(|e| context.repo_err(e))?;
        tracing::info!("removed the unfinished backup {label}");
    }
    let wal_count = work.wal.len();
    delete_all(work.wal.into_iter().map(|(k, _)| k).collect())
        .await
        .map_err(|e| context.repo_err(e))?;
    if wal_count > 0 {
        tracing::info!("removed {wal_count} WAL objects");
    }
    println!("expire done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * 1_000_000;

    fn b(label: &str, kind: BackupType, prior: Option<&str>, day: i64) -> Entry {
        Entry {
            label: label.into(),
            backup_type: kind,
            prior: prior.map(str::to_string),
            reference: prior.map(|p| vec![p.to_string()]).unwrap_or_default(),
            system_identifier: "1".into(),
            pg_version: "15".into(),
            from_standby: false,
            timeline: 1,
            stop_timeline: 1,
            start_lsn: "0/0".into(),
            stop_lsn: "0/0".into(),
            start_wal: format!("0000000100000000000000{day:02X}"),
            stop_wal: String::new(),
            wal_segment_size: 16 << 20,
            start_time_us: day * DAY,
            stop_time_us: day * DAY + 1,
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            error: false,
        }
    }

    fn backups() -> Vec<Entry> {
        use BackupType::*;
        vec![
            b("F1", Full, None, 1),
            b("F1_I1", Incr, Some("F1"), 2),
            b("F2", Full, None, 10),
            b("F2_I1", Incr, Some("F2"), 11),
            b("F2_I2", Incr, Some("F2_I1"), 12),
            b("F3", Full, None, 20),
        ]
    }

    fn expired(d: &Decision) -> Vec<&str> {
        d.expire.iter().map(|(l, _)| l.as_str()).collect()
    }

    #[test]
    fn count_keeps_the_newest_fulls_with_their_incrementals() {
        let d = plan(
            &backups(),
            Policy {
                full: Some(2),
                days: None,
            },
            30 * DAY,
        );
        assert_eq!(d.keep, vec!["F2", "F2_I1", "F2_I2", "F3"]);
        assert_eq!(expired(&d), vec!["F1", "F1_I1"]);
        let d = plan(
            &backups(),
            Policy {
                full: Some(1),
                days: None,
            },
            30 * DAY,
        );
        assert_eq!(d.keep, vec!["F3"]);
        let d = plan(
            &backups(),
            Policy {
                full: Some(5),
                days: None,
            },
            30 * DAY,
        );
        assert!(d.expire.is_empty());
    }

    #[test]
    fn days_keep_the_window_and_the_full_before_it() {
        // Window of 15 days at day 30: from day 15. F3 (day 20) is inside;
        // F2 (day 10) is the newest before: kept, so day 15..20 is restorable.
        let d = plan(
            &backups(),
            Policy {
                full: None,
                days: Some(15),
            },
            30 * DAY,
        );
        assert_eq!(expired(&d), vec!["F1", "F1_I1"]);
        // A window newer than every backup still keeps the newest full.
        let d = plan(
            &backups(),
            Policy {
                full: None,
                days: Some(1),
            },
            300 * DAY,
        );
        assert_eq!(d.keep, vec!["F3"]);
        // Both: the union.
        let d = plan(
            &backups(),
            Policy {
                full: Some(3),
                days: Some(1),
            },
            300 * DAY,
        );
        assert!(d.expire.is_empty());
    }

    #[test]
    fn broken_chains_are_removed() {
        let mut list = backups();
        list.retain(|b| b.label != "F2_I1");
        let d = plan(
            &list,
            Policy {
                full: Some(3),
                days: None,
            },
            30 * DAY,
        );
        assert_eq!(expired(&d), vec!["F2_I2"]);
    }

    #[test]
    fn wal_before_the_oldest_kept_start() {
        let layout = crate::repo::layout::Layout::new("s");
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let mut archive = Archive::default();
        for name in [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000020000000000000003",
            "000000010000000000000003.partial",
            "00000002.history",
        ] {
            let wal = crate::repo::layout::WalName::parse(name).unwrap();
            archive
                .objects
                .push(crate::backup::model::walrange::WalObject {
                    key: layout.wal_key(&wal, sha),
                    name: wal,
                    sha256: sha.into(),
                    size: 1,
                    modified: None,
                });
        }
        let removed: Vec<String> = wal_to_remove(&archive, 3, 16 << 20)
            .into_iter()
            .map(|(k, _)| {
                k.rsplit('/')
                    .next()
                    .unwrap()
                    .split('-')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            removed,
            vec![
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup"
            ]
        );
    }
}
