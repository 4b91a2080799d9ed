//! The page checks of a restore: while the part workers write the pieces
//! of relation files, their pages are judged as the backup judged them
//! ([`super::pagecheck`]: new pages pass, pages at or past the backup's
//! start LSN are left to WAL replay), on the bytes in hand — no second
//! read. Only when the backup says the cluster has data checksums.
//!
//! A page that fails does not stop the restore (every byte is still the
//! one the backup stored, checked against its SHA-256): the restore
//! completes, names each failed page (file, block, the checksum its
//! content gives and the one stored in it) and the caller decides what it
//! means — `pgpilot restore` exits 8.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::pagecheck::{self, Failure, Tally, PAGE_SIZE};
use crate::backup::model::manifest::{self, Manifest};

/// PostgreSQL's default `RELSEG_SIZE` (1 GiB of 8 KiB blocks), for
/// manifests that do not record it.
pub const DEFAULT_SEGMENT_BLOCKS: u32 = 131_072;

/// The checks of one restore; shared by the part workers.
pub struct PageChecks {
    lsn_limit: u64,
    /// By manifest file index: the first block number of a relation file.
    first_block: Vec<Option<u64>>,
    found: Mutex<Found>,
}

#[derive(Default)]
struct Found {
    tally: Tally,
    /// By file index: the lowest failures and how many there are.
    files: BTreeMap<usize, (Vec<Failure>, u64)>,
}

/// A file with pages that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub path: String,
    /// The lowest blocks, at most [`manifest::MAX_LISTED`].
    pub failures: Vec<Failure>,
    pub count: u64,
    /// Blocks of `failures` the backup also found when it was taken.
    pub recorded: Vec<u32>,
}

/// What the page checks of a restore found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageReport {
    /// Whether pages were checked at all.
    pub checked: bool,
    pub tally: Tally,
    pub files: Vec<DamagedFile>,
}

impl PageChecks {
    /// `None` when the backup's cluster has no data checksums.
    pub fn new(manifest: &Manifest) -> Option<PageChecks> {
        if !manifest.page_checksums {
            return None;
        }
        let per_segment = u64::from(manifest.segment_blocks.unwrap_or(DEFAULT_SEGMENT_BLOCKS));
        let first_block = manifest
            .files
            .iter()
            .map(|f| super::walk::relation_segment(&f.path).map(|s| u64::from(s) * per_segment))
            .collect();
        Some(PageChecks {
            lsn_limit: manifest.start_lsn(),
            first_block,
            found: Mutex::new(Found::default()),
        })
    }

    /// Judge the whole pages of `data`, written at `offset` into file `file`.
    pub fn check(&self, file: usize, offset: u64, data: &[u8]) {
        let Some(Some(first)) = self.first_block.get(file) else {
            return;
        };
        if !offset.is_multiple_of(PAGE_SIZE as u64) {
            return; // pieces of relation files start on pages
        }
        // PostgreSQL's block numbers are 32-bit.
        let block = (first + offset / PAGE_SIZE as u64) as u32;
        let mut tally = Tally::default();
        let failed = pagecheck::failures(data, block, self.lsn_limit, &mut tally);
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.tally.add(tally);
        if !failed.is_empty() {
            let (list, count) = found.files.entry(file).or_default();
            *count += failed.len() as u64;
            list.extend(failed);
            list.sort_by_key(|f| f.block);
            list.truncate(manifest::MAX_LISTED);
        }
    }

    /// What was found (taken: a second call finds nothing).
    pub fn report(&self, manifest: &Manifest) -> PageReport {
        let found = std::mem::take(&mut *self.found.lock().unwrap_or_else(|e| e.into_inner()));
        let files = found
            .files
            .into_iter()
            .map(|(idx, (failures, count))| {
                let file = &manifest.files[idx];
                DamagedFile {
                    path: file.path.clone(),
                    recorded: failures
                        .iter()
                        .map(|f| f.block)
                        .filter(|b| file.checksum_errors.contains(b))
                        .collect(),
                    failures,
                    count,
                }
            })
            .collect();
        PageReport {
            checked: true,
            tally: found.tally,
            files,
        }
    }
}

impl PageReport {
    /// Pages that failed their checksum.
    pub fn failed(&self) -> u64 {
        self.tally.damaged
    }

    /// The counts, for the log.
    pub fn summary(&self) -> String {
        let t = &self.tally;
        if !self.checked {
            return "page checksums: not verified (the backup's cluster has no data checksums)"
                .into();
        }
        format!(
            "page checksums: {} pages verified, {} new (all zero), {} changed after the backup \
             started (WAL replay rewrites them), {} failed",
            t.valid, t.new, t.recent, t.damaged
        )
    }

    /// What failed and what to do; `None` when nothing did.
    pub fn problem(&self, label: &str) -> Option<String> {
        let failed = self.failed();
        if failed == 0 {
            return None;
        }
        let what = if failed == 1 {
            "page failed its"
        } else {
            "pages failed their"
        };
        let mut lines = vec![format!(
            "{failed} {what} checksum in the restored copy of backup {label}:"
        )];
        for file in &self.files {
            for failure in &file.failures {
                let seen = if file.recorded.contains(&failure.block) {
                    " (the backup found it too)"
                } else {
                    ""
                };
                lines.push(format!("  {} {failure}{seen}", file.path));
            }
            let more = file.count.saturating_sub(file.failures.len() as u64);
            if more > 0 {
                lines.push(format!("  {}: and {more} more", file.path));
            }
        }
        lines.push(
            "Every file was restored as the backup stored it. PostgreSQL refuses to read these \
             pages (\"invalid page in block\") until they are rewritten. Pages the backup \
             found too were damaged on the source cluster: restore an older backup taken \
             before the damage (`pgpilot info` flags the backups that hold it), or start this \
             copy and rebuild the tables concerned from another copy of their rows. See \
             docs/backup.md, \"Page checksums\"."
                .into(),
        );
        Some(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::data::pagecheck::tests::valid_page;
    use crate::backup::model::manifest::tests::sample;

    #[test]
    fn pages_of_relation_files_are_judged_and_failures_named() {
        let mut manifest = sample();
        manifest.start_lsn = "0/5000".into();
        manifest.segment_blocks = Some(4);
        manifest.files[0].path = "base/5/16384.1".into(); // blocks 4..
        manifest.files[1].path = "PG_VERSION".into();
        manifest.files[0].checksum_errors = vec![5];
        let checks = PageChecks::new(&manifest).expect("checksums on");
        let mut data: Vec<u8> = (4..7).flat_map(|b| valid_page(b, 0x100, b as u8)).collect();
        data[PAGE_SIZE + 10] ^= 1; // block 5
        data[2 * PAGE_SIZE..].copy_from_slice(&valid_page(6, 0x6000, 1)); // recent
        data[2 * PAGE_SIZE + 10] ^= 1;
        checks.check(0, 0, &data);
        // Not a relation file, or not on a page: not judged.
        checks.check(1, 0, &data);
        checks.check(0, 100, &data);
        let report = checks.report(&manifest);
        assert_eq!((report.tally.valid, report.tally.recent), (1, 1));
        assert_eq!(report.failed(), 1);
        assert_eq!(report.files.len(), 1);
        assert_eq!(report.files[0].recorded, vec![5]);
        let text = report.problem("L").unwrap();
        assert!(
            text.starts_with("1 page failed its checksum in the restored copy of backup L:\n"),
            "{text}"
        );
        assert!(
            text.contains("  base/5/16384.1 block 5: checksum expected 0x"),
            "{text}"
        );
        assert!(text.contains("(the backup found it too)"), "{text}");
        assert!(report.summary().ends_with(" 1 failed"));

        manifest.page_checksums = false;
        assert!(PageChecks::new(&manifest).is_none());
        assert!(PageReport::default().problem("L").is_none());
    }
}
