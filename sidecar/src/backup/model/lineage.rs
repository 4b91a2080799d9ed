//! Timelines of the WAL archive, as far as a restore through the HA loop
//! cares: which timelines a backup can be recovered along, which one a new
//! cluster should follow, and which backup a new replica can restore and
//! still catch up with its leader.
//!
//! A timeline's history file lists every ancestor timeline with the LSN
//! where it ended. Recovery from a backup that became consistent at LSN
//! `stop` on timeline `b` can follow timeline `t` when `t == b`, or when
//! `t`'s history says `b` ran on until at least `stop`.

use std::collections::BTreeMap;

use super::catalog::{Catalog, Entry};
use super::walrange::{
    describe_segments, missing_segments, parse_history, segment_of, Archive, Switch, TimelinePath,
};
use crate::backup::{BackupError, Context, Result};

/// The archive's listing and the history of each archived timeline.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    pub archive: Archive,
    /// Timeline → the switches its history file lists (oldest first).
    pub histories: BTreeMap<u32, Vec<Switch>>,
}

impl Lineage {
    /// List the archive and read every history file in it.
    pub async fn load(context: &Context, segment_size: u64) -> Result<Lineage> {
        let storage = context.storage();
        let archive = Archive::list(storage, &context.layout, segment_size)
            .await
            .map_err(|e| context.repo_err(e))?;
        let mut histories = BTreeMap::new();
        for (timeline, key) in &archive.histories {
            let bytes = storage
                .get(key)
                .await
                .map_err(|e| context.repo_err(e))?
                .into_bytes(key, 16 << 20)
                .await
                .map_err(|e| context.repo_err(e))?;
            let text = crate::archive::wal::decompress(&bytes)
                .map_err(|e| BackupError::Corrupt(format!("{key} cannot be decompressed: {e}")))?;
            histories.insert(*timeline, parse_history(&String::from_utf8_lossy(&text)));
        }
        Ok(Lineage { archive, histories })
    }

    /// The newest timeline the archive knows.
    pub fn newest_timeline(&self) -> Option<u32> {
        self.archive.newest_timeline()
    }

    /// Can recovery from a backup consistent at `stop_lsn` on
    /// `backup_timeline` follow `timeline`?
    pub fn reaches(&self, timeline: u32, backup_timeline: u32, stop_lsn: u64) -> bool {
        if timeline == backup_timeline {
            return true;
        }
        self.histories.get(&timeline).is_some_and(|history| {
            history
                .iter()
                .any(|s| s.parent == backup_timeline && s.switch_lsn >= stop_lsn)
        })
    }

    /// The newest archived timeline recovery from `entry` can follow: what
    /// `recovery_target_timeline = 'latest'` gives when no other branch
    /// forked off after the backup, and the backup's own branch when one did
    /// (where `latest` would make PostgreSQL refuse to start).
    pub fn newest_through(&self, entry: &Entry) -> u32 {
        let known = self
            .histories
            .keys()
            .copied()
            .chain(self.archive.segments.iter().map(|(t, _)| *t));
        known
            .filter(|t| self.reaches(*t, entry.stop_timeline, entry.stop_lsn()))
            .max()
            .unwrap_or(entry.stop_timeline)
            .max(entry.stop_timeline)
    }

    /// The order in which recovery along `timeline` reads segments.
    fn path(&self, timeline: u32, segment_size: u64) -> TimelinePath {
        match self.histories.get(&timeline) {
            Some(history) => TimelinePath::new(timeline, history, segment_size),
            None => TimelinePath::single(timeline),
        }
    }
}

/// The backup a new replica restores before it streams from a leader that
/// runs on `timeline`, in the cluster `system_id`: the newest backup of
/// that cluster whose recovery can follow `timeline`, and whose WAL up to
/// the newest archived segment on that path has no gap. The error says why
/// none fits (the replica is then created another way).
pub fn choose_for_replica<'a>(
    catalog: &'a Catalog,
    lineage: &Lineage,
    system_id: &str,
    timeline: u32,
) -> std::result::Result<&'a Entry, String> {
    let ours: Vec<&Entry> = catalog
        .backups
        .iter()
        .filter(|e| e.system_identifier == system_id && !e.error)
        .collect();
    if ours.is_empty() {
        return Err(if catalog.backups.is_empty() {
            "the repository holds no complete backup".to_string()
        } else {
            format!(
                "the repository holds no backup of this cluster (system identifier {system_id})"
            )
        });
    }
    // A standby follows the newest timeline in the archive: it must be the
    // leader's, or the replica would replay another branch's WAL.
    match lineage.newest_timeline() {
        Some(newest) if newest > timeline => {
            return Err(format!(
                "the archive holds timeline {newest}, newer than the leader's timeline \
                 {timeline} (another branch of this cluster archives into the same stanza): a \
                 replica restored from it would follow that timeline"
            ))
        }
        _ if timeline > 1 && !lineage.histories.contains_key(&timeline) => {
            return Err(format!(
                "the history file of the leader's timeline {timeline} ({timeline:08X}.history) \
                 is not archived yet"
            ))
        }
        _ => {}
    }
    let Some(entry) = ours
        .iter()
        .rev()
        .find(|e| lineage.reaches(timeline, e.stop_timeline, e.stop_lsn()))
    else {
        return Err(format!(
            "no backup of this cluster lies on the history of the leader's timeline {timeline}"
        ));
    };
    let segment_size = entry.wal_segment_size;
    let path = lineage.path(timeline, segment_size);
    let first = segment_of(entry.start_lsn(), segment_size);
    let last = lineage
        .archive
        .segments
        .iter()
        .filter(|(t, n)| path.timeline_of(*n) == *t)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(first)
        .max(first);
    let missing = missing_segments(&lineage.archive, &path, first, last);
    if !missing.is_empty() {
        return Err(format!(
            "the WAL archive misses {} after backup {}: a replica restored from it could not \
             catch up",
            describe_segments(&missing, segment_size),
            entry.label
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::model::manifest::BackupType;
    use crate::lsn::format_lsn;

    const SEG: u64 = 16 << 20;

    fn entry(label: &str, system_id: &str, timeline: u32, start: u64, stop: u64) -> Entry {
        Entry {
            label: label.into(),
            backup_type: BackupType::Full,
            prior: None,
            reference: vec![],
            system_identifier: system_id.into(),
            pg_version: "15".into(),
            from_standby: false,
            timeline,
            stop_timeline: timeline,
            start_lsn: format_lsn(start),
            stop_lsn: format_lsn(stop),
            start_wal: String::new(),
            stop_wal: String::new(),
            wal_segment_size: SEG,
            start_time_us: 0,
            stop_time_us: 0,
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            error: false,
        }
    }

    /// An archive with `segments` (timeline, number) and histories.
    fn lineage(segments: &[(u32, u64)], histories: &[(u32, &[(u32, u64)])]) -> Lineage {
        let mut l = Lineage::default();
        l.archive.segments = segments.iter().copied().collect();
        for (tl, switches) in histories {
            l.archive.histories.insert(*tl, format!("{tl:08X}.history"));
            l.histories.insert(
                *tl,
                switches
                    .iter()
                    .map(|(parent, lsn)| Switch {
                        parent: *parent,
                        switch_lsn: *lsn,
                    })
                    .collect(),
            );
        }
        l
    }

    fn catalog(entries: Vec<Entry>) -> Catalog {
        Catalog { backups: entries }
    }

    #[test]
    fn a_replica_restores_the_newest_backup_of_its_own_cluster() {
        let c = catalog(vec![
            entry("old", "7", 1, 2 * SEG, 2 * SEG + 100),
            entry("new", "7", 1, 5 * SEG, 5 * SEG + 100),
            entry("foreign", "8", 1, 6 * SEG, 6 * SEG + 100),
        ]);
        let l = lineage(&(1..=7).map(|n| (1, n)).collect::<Vec<_>>(), &[]);
        assert_eq!(choose_for_replica(&c, &l, "7", 1).unwrap().label, "new");
        let err = choose_for_replica(&c, &l, "9", 1).unwrap_err();
        assert!(err.contains("no backup of this cluster"), "{err}");
        let err = choose_for_replica(&catalog(vec![]), &l, "7", 1).unwrap_err();
        assert!(err.contains("no complete backup"), "{err}");
    }

    #[test]
    fn a_backup_before_a_failover_serves_the_new_timeline() {
        // Timeline 2 forked off timeline 1 inside segment 6.
        let switch = 6 * SEG + 500;
        let l = lineage(
            &[
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
                (2, 6),
                (2, 7),
            ],
            &[(2, &[(1, switch)])],
        );
        let c = catalog(vec![
            entry("before", "7", 1, 2 * SEG, 2 * SEG + 100),
            // Taken on the old primary after the fork: not on timeline 2's history.
            entry("after", "7", 1, 7 * SEG, 7 * SEG + 100),
        ]);
        assert_eq!(choose_for_replica(&c, &l, "7", 2).unwrap().label, "before");
        // The old branch's segment 7 does not count: timeline 2's is read.
        assert!(l.reaches(2, 1, switch));
        assert!(!l.reaches(2, 1, switch + 1));
    }

    #[test]
    fn another_branch_or_an_unarchived_history_means_no_backup() {
        let l = lineage(&[(1, 2), (1, 3)], &[(3, &[(1, 3 * SEG)])]);
        let c = catalog(vec![entry("b", "7", 1, 2 * SEG, 2 * SEG + 100)]);
        let err = choose_for_replica(&c, &l, "7", 2).unwrap_err();
        assert!(
            err.contains("timeline 3, newer than the leader's timeline 2"),
            "{err}"
        );
        let l = lineage(&[(1, 2), (1, 3)], &[]);
        let err = choose_for_replica(&c, &l, "7", 2).unwrap_err();
        assert!(err.contains("00000002.history"), "{err}");
    }

    #[test]
    fn a_gap_in_the_archive_after_the_backup_is_refused() {
        let c = catalog(vec![entry("b", "7", 1, 2 * SEG, 2 * SEG + 100)]);
        let l = lineage(&[(1, 2), (1, 3), (1, 5)], &[]);
        let err = choose_for_replica(&c, &l, "7", 1).unwrap_err();
        assert!(err.contains("000000010000000000000004"), "{err}");
    }

    #[test]
    fn the_newest_timeline_through_a_backup() {
        let switch = 6 * SEG;
        // Timeline 2 forked at segment 6, timeline 3 forked off 1 at segment 9.
        let l = lineage(
            &[(1, 5), (1, 9), (2, 6), (3, 9)],
            &[(2, &[(1, switch)]), (3, &[(1, 9 * SEG)])],
        );
        assert_eq!(
            l.newest_through(&entry("a", "7", 1, 2 * SEG, 2 * SEG + 1)),
            3
        );
        // Past timeline 2's fork, before timeline 3's.
        assert_eq!(
            l.newest_through(&entry("b", "7", 1, 7 * SEG, 7 * SEG + 1)),
            3
        );
        // Past both forks: only its own timeline.
        assert_eq!(
            l.newest_through(&entry("c", "7", 1, 10 * SEG, 10 * SEG + 1)),
            1
        );
        // On timeline 2 itself.
        assert_eq!(
            l.newest_through(&entry("d", "7", 2, 7 * SEG, 7 * SEG + 1)),
            2
        );
    }
}
