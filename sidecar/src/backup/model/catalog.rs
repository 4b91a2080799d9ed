//! `backup.json`: the list of complete backups, newest last.
//!
//! Order of writes, so that the catalog never lists an incomplete backup:
//! a backup stores its parts, then its manifest, then adds itself here;
//! expire removes a backup from here first, then its manifest, then its
//! parts. The catalog is a summary of the manifests: when it is missing or
//! damaged it is rebuilt from them ([`rebuild`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::manifest::{self, BackupType, LoadError, Manifest};
use crate::backup::{BackupError, Context};
use crate::repo::layout::Layout;
use crate::repo::{PutMode, Storage, StorageError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub backups: Vec<Entry>,
}

/// A complete backup, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub prior: Option<String>,
    pub reference: Vec<String>,
    pub system_identifier: String,
    pub pg_version: String,
    pub from_standby: bool,
    pub timeline: u32,
    pub stop_timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    pub wal_segment_size: u64,
    pub start_time_us: i64,
    pub stop_time_us: i64,
    /// Bytes of data in the backup, and of the files it stored itself.
    pub size: u64,
    pub delta: u64,
    /// Bytes in the repository it needs (its parts and the referenced
    /// parts), and of its own parts.
    pub repo_size: u64,
    pub repo_delta: u64,
    /// Pages failed their checksum in files of this backup (copied by it,
    /// or referred to in an earlier backup): the manifest names them.
    pub error: bool,
}

impl Entry {
    /// `repo_size`: stored bytes of every part the backup's files use.
    pub fn from_manifest(m: &Manifest, repo_size: u64) -> Entry {
        Entry {
            label: m.label.clone(),
            backup_type: m.backup_type,
            prior: m.prior.clone(),
            reference: m.reference.clone(),
            system_identifier: m.system_identifier.clone(),
            pg_version: m.pg_version.clone(),
            from_standby: m.from_standby,
            timeline: m.timeline,
            stop_timeline: m.stop_timeline,
            start_lsn: m.start_lsn.clone(),
            stop_lsn: m.stop_lsn.clone(),
            start_wal: m.start_wal.clone(),
            stop_wal: m.stop_wal.clone(),
            wal_segment_size: m.wal_segment_size,
            start_time_us: m.start_time_us,
            stop_time_us: m.stop_time_us,
            size: m.data_size(),
            delta: m.delta_size(),
            repo_size,
            repo_delta: m.stored_size(),
            error: m.error,
        }
    }

    pub fn start_lsn(&self) -> u64 {
        crate::lsn::parse_lsn(&self.start_lsn).unwrap_or(0)
    }

    pub fn stop_lsn(&self) -> u64 {
        crate::lsn::parse_lsn(&self.stop_lsn).unwrap_or(0)
    }
}

/// Stored bytes of every part `m`'s files use; `others` holds the
/// manifests of the backups it refers to.
pub fn repo_size(m: &Manifest, others: &BTreeMap<String, Manifest>) -> u64 {
    let mut used: BTreeSet<(&str, u32)> = BTreeSet::new();
    for file in &m.files {
        for piece in &file.pieces {
            used.insert((m.data_label(file), piece.part));
        }
    }
    used.iter()
        .filter_map(|(label, part)| {
            let holder = if *label == m.label {
                m
            } else {
                others.get(*label)?
            };
            holder
                .parts
                .iter()
                .find(|p| p.index == *part)
                .map(|p| p.size)
        })
        .sum()
}

impl Catalog {
    pub fn get(&self, label: &str) -> Option<&Entry> {
        self.backups.iter().find(|b| b.label == label)
    }

    pub fn latest(&self) -> Option<&Entry> {
        self.backups.last()
    }

    fn sort(&mut self) {
        self.backups
            .sort_by(|a, b| (a.start_time_us, &a.label).cmp(&(b.start_time_us, &b.label)));
    }

    /// Backups that need `label` (its incrementals, recursively).
    pub fn dependents(&self, label: &str) -> Vec<String> {
        self.backups
            .iter()
            .filter(|b| b.reference.iter().any(|r| r == label) || b.prior.as_deref() == Some(label))
            .map(|b| b.label.clone())
            .collect()
    }
}

/// The catalog for a command, rebuilt from the manifests when damaged.
pub(crate) async fn load_or_rebuild(context: &Context) -> Result<Catalog, BackupError> {
    match load(context.storage(), &context.layout).await {
        Ok(c) => Ok(c),
        Err(LoadError::Corrupt(why)) => {
            tracing::warn!("{why}: using the manifests instead");
            Ok(rebuild(context.storage(), &context.layout)
                .await
                .map_err(|e| manifest::load_error(context, e))?
                .0)
        }
        Err(e) => Err(manifest::load_error(context, e)),
    }
}

/// Read the catalog; an absent one is empty.
pub async fn load(storage: &dyn Storage, layout: &Layout) -> Result<Catalog, LoadError> {
    let key = layout.catalog_key();
    let object = match storage.get(&key).await {
        Ok(object) => object,
        Err(e) if e.is_not_found() => return Ok(Catalog::default()),
        Err(e) => return Err(LoadError::Storage(e)),
    };
    let bytes = object
        .into_bytes(&key, 256 << 20)
        .await
        .map_err(LoadError::Storage)?;
    let mut catalog: Catalog =
        manifest::unseal(&bytes).map_err(|why| LoadError::Corrupt(format!("{key}: {why}")))?;
    catalog.sort();
    Ok(catalog)
}

async fn store(
    storage: &dyn Storage,
    layout: &Layout,
    catalog: &Catalog,
) -> Result<(), StorageError> {
    storage
        .put(
            &layout.catalog_key(),
            manifest::seal(catalog).into(),
            PutMode::Overwrite,
        )
        .await
        .map(|_| ())
}

/// Read, change, write, and read back until the change is there (another
/// command may have written the catalog in between). A damaged catalog is
/// rebuilt from the manifests first.
pub async fn update(
    storage: &dyn Storage,
    layout: &Layout,
    change: impl Fn(&mut Catalog),
    done: impl Fn(&Catalog) -> bool,
) -> Result<Catalog, LoadError> {
    for _ in 0..5 {
        let mut catalog = match load(storage, layout).await {
            Ok(catalog) => catalog,
            Err(LoadError::Corrupt(why)) => {
                tracing::warn!("{why}: rebuilding the catalog from the manifests");
                rebuild(storage, layout).await?.0
            }
            Err(e) => return Err(e),
        };
        change(&mut catalog);
        catalog.sort();
        store(storage, layout, &catalog)
            .await
            .map_err(LoadError::Storage)?;
        let back = load(storage, layout).await?;
        if done(&back) {
            return Ok(back);
        }
        tracing::warn!("the catalog changed while it was updated: trying again");
    }
    Err(LoadError::Corrupt(format!(
        "{}: another command keeps changing it; try again",
        layout.catalog_key()
    )))
}

/// Labels that have a directory under `backup/`, with whether it holds a
/// manifest, and the newest modification time of its objects.
pub async fn backup_dirs(
    storage: &dyn Storage,
    layout: &Layout,
) -> Result<BTreeMap<String, BackupDir>, StorageError> {
    let prefix = layout.backup_prefix();
    let mut dirs: BTreeMap<String, BackupDir> = BTreeMap::new();
    for meta in storage.list(&prefix).await? {
        let Some(rest) = meta.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((label, inner)) = rest.split_once('/') else {
            continue;
        };
        let dir = dirs.entry(label.to_string()).or_default();
        dir.keys.push(meta.key.clone());
        dir.bytes += meta.size;
        if inner == "manifest.json" {
            dir.has_manifest = true;
        }
        if let Some(modified) = meta.modified {
            dir.newest = Some(
                dir.newest
                    .map_or(modified, |n: std::time::SystemTime| n.max(modified)),
            );
        }
    }
    Ok(dirs)
}

#[derive(Debug, Clone, Default)]
pub struct BackupDir {
    pub keys: Vec<String>,
    pub bytes: u64,
    pub has_manifest: bool,
    pub newest: Option<std::time::SystemTime>,
}

/// The catalog the manifests describe, and the labels whose manifest is
/// damaged (those are left out).
pub async fn rebuild(
    storage: &dyn Storage,
    layout: &Layout,
) -> Result<(Catalog, Vec<(String, String)>), LoadError> {
    let dirs = backup_dirs(storage, layout)
        .await
        .map_err(LoadError::Storage)?;
    let mut manifests = BTreeMap::new();
    let mut damaged = Vec::new();
    for (label, dir) in &dirs {
        if !dir.has_manifest {
            continue;
        }
        match Manifest::load(storage, layout, label).await {
            Ok(m) => {
                manifests.insert(label.clone(), m);
            }
            Err(LoadError::Corrupt(why)) => damaged.push((label.clone(), why)),
            Err(e) => return Err(e),
        }
    }
    let mut catalog = Catalog::default();
    for m in manifests.values() {
        // A backup whose references are gone cannot be restored: leave it out.
        if let Some(missing) = m.reference.iter().find(|r| !manifests.contains_key(*r)) {
            damaged.push((
                m.label.clone(),
                format!("it refers to {missing}, which has no usable manifest"),
            ));
            continue;
        }
        catalog
            .backups
            .push(Entry::from_manifest(m, repo_size(m, &manifests)));
    }
    catalog.sort();
    Ok((catalog, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::model::manifest::tests::sample;
    use crate::repo::posix::PosixStorage;

    #[tokio::test]
    async fn update_and_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let storage = PosixStorage::open(dir.path()).unwrap();
        let layout = Layout::new("demo");
        assert_eq!(load(&storage, &layout).await.unwrap(), Catalog::default());
        let m = sample();
        m.store(&storage, &layout).await.unwrap();
        // A label is never reused.
        assert!(m.store(&storage, &layout).await.is_err());
        let entry = Entry::from_manifest(&m, 10);
        let catalog = update(
            &storage,
            &layout,
            |c| c.backups.push(entry.clone()),
            |c| c.get(&m.label).is_some(),
        )
        .await
        .unwrap();
        assert_eq!(catalog.backups.len(), 1);
        assert_eq!(catalog.latest().unwrap().size, 13);
        // Damage the catalog: an update rebuilds it from the manifests.
        storage
            .put(
                &layout.catalog_key(),
                b"{}".to_vec().into(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        assert!(matches!(
            load(&storage, &layout).await,
            Err(LoadError::Corrupt(_))
        ));
        let catalog = update(&storage, &layout, |_| {}, |_| true).await.unwrap();
        assert_eq!(catalog.backups, vec![entry]);
    }
}
