//! WAL positions, segment names and timelines, and what the archive holds.
//!
//! A segment is named `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, then the
//! segment number split in "log" (high 32 bits of the position) and segment
//! within the log. Here a segment is identified by its timeline and its
//! number `position / segment_size`.

use std::collections::{BTreeMap, BTreeSet};

use crate::lsn::parse_lsn;
use crate::repo::layout::{Layout, WalKind, WalName};
use crate::repo::{Storage, StorageError};

/// Segments per "log" (4 GiB of WAL).
fn per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The name of segment `number` on `timeline`.
pub fn segment_name(timeline: u32, number: u64, segment_size: u64) -> String {
    let per = per_log(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", number / per, number % per)
}

/// (timeline, segment number) of a segment-like name (segment, `.partial`,
/// `.backup`).
pub fn parse_segment(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    let head = name.get(..24).filter(|h| h.is_ascii())?;
    if segment_size == 0 || segment_size > 0x1_0000_0000 {
        return None;
    }
    let timeline = u32::from_str_radix(&head[..8], 16).ok()?;
    let log = u64::from_str_radix(&head[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&head[16..24], 16).ok()?;
    let number = log.checked_mul(per_log(segment_size))?.checked_add(seg)?;
    (seg < per_log(segment_size)).then_some((timeline, number))
}

/// The segment holding the byte at `lsn`.
pub fn segment_of(lsn: u64, segment_size: u64) -> u64 {
    lsn / segment_size
}

/// The segment holding the last byte before `lsn` (PostgreSQL's
/// `XLByteToPrevSeg`): the last segment a backup that stops at `lsn` needs.
pub fn segment_before(lsn: u64, segment_size: u64) -> u64 {
    lsn.saturating_sub(1) / segment_size
}

/// One line of a timeline history file: `parent` ran until `switch_lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub parent: u32,
    pub switch_lsn: u64,
}

/// Parse a `.history` file: `<parent tli>\t<switch lsn>\t<reason>` lines.
pub fn parse_history(text: &str) -> Vec<Switch> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split_whitespace();
            let parent = fields.next()?.parse().ok()?;
            let switch_lsn = parse_lsn(fields.next()?)?;
            Some(Switch { parent, switch_lsn })
        })
        .collect()
}

/// The timeline each segment is read from, for recovery that ends on
/// `target` whose history is `history` (PostgreSQL reads a segment from the
/// newest timeline that had begun by that segment).
#[derive(Debug, Clone)]
pub struct TimelinePath {
    /// (timeline, first segment on it), oldest first.
    begins: Vec<(u32, u64)>,
}

impl TimelinePath {
    pub fn new(target: u32, history: &[Switch], segment_size: u64) -> TimelinePath {
        let mut begins = Vec::new();
        let mut first = 0;
        for switch in history {
            begins.push((switch.parent, first));
            first = segment_of(switch.switch_lsn, segment_size);
        }
        begins.push((target, first));
        TimelinePath { begins }
    }

    /// A single timeline with no history.
    pub fn single(timeline: u32) -> TimelinePath {
        TimelinePath {
            begins: vec![(timeline, 0)],
        }
    }

    pub fn timeline_of(&self, segment: u64) -> u32 {
        self.begins
            .iter()
            .rev()
            .find(|(_, first)| *first <= segment)
            .map(|(tli, _)| *tli)
            .unwrap_or(self.begins[0].0)
    }

    /// Does this path go through `timeline`?
    pub fn contains(&self, timeline: u32) -> bool {
        self.begins.iter().any(|(t, _)| *t == timeline)
    }
}

/// One WAL object of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub key: String,
    pub name: WalName,
    pub sha256: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// What the archive holds, from one listing.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Every WAL object.
    pub objects: Vec<WalObject>,
    /// Full segments: (timeline, number).
    pub segments: BTreeSet<(u32, u64)>,
    /// `.partial` segments: (timeline, number).
    pub partials: BTreeSet<(u32, u64)>,
    /// History files: timeline → key.
    pub histories: BTreeMap<u32, String>,
    /// Keys under `archive/` that are not WAL objects of this layout.
    pub strays: Vec<String>,
}

impl Archive {
    pub async fn list(
        storage: &dyn Storage,
        layout: &Layout,
        segment_size: u64,
    ) -> Result<Archive, StorageError> {
        let mut archive = Archive::default();
        for meta in storage.list(&layout.archive_prefix()).await? {
            let Some((name, sha256)) = layout.parse_wal_key(&meta.key) else {
                archive.strays.push(meta.key);
                continue;
            };
            match name.kind() {
                WalKind::Segment => {
                    if let Some(seg) = parse_segment(name.as_str(), segment_size) {
                        archive.segments.insert(seg);
                    }
                }
                WalKind::Partial => {
                    if let Some(seg) = parse_segment(name.as_str(), segment_size) {
                        archive.partials.insert(seg);
                    }
                }
                WalKind::History => {
                    archive.histories.insert(name.timeline(), meta.key.clone());
                }
                WalKind::Backup => {}
            }
            archive.objects.push(WalObject {
                key: meta.key,
                name,
                sha256,
                size: meta.size,
                modified: meta.modified,
            });
        }
        Ok(archive)
    }

    pub fn has_segment(&self, timeline: u32, number: u64) -> bool {
        self.segments.contains(&(timeline, number))
    }

    /// Smallest and largest full segment names (pgBackRest's archive min/max).
    pub fn min_max(&self, segment_size: u64) -> Option<(String, String)> {
        let names: Vec<String> = self
            .segments
            .iter()
            .map(|(t, n)| segment_name(*t, *n, segment_size))
            .collect();
        Some((names.iter().min()?.clone(), names.iter().max()?.clone()))
    }

    /// The newest timeline the archive knows (history files and segments).
    pub fn newest_timeline(&self) -> Option<u32> {
        let from_history = self.histories.keys().max().copied();
        let from_segments = self.segments.iter().map(|(t, _)| *t).max();
        from_history.max(from_segments)
    }
}

/// Segments `first..=last` as recovery reads them along `path`, with
/// those missing from `archive`.
pub fn missing_segments(
    archive: &Archive,
    path: &TimelinePath,
    first: u64,
    last: u64,
) -> Vec<(u32, u64)> {
    (first..=last)
        .map(|n| (path.timeline_of(n), n))
        .filter(|(t, n)| !archive.has_segment(*t, *n))
        .collect()
}

/// Ranges of consecutive segment numbers, for messages: `A, B..C`.
pub fn describe_segments(missing: &[(u32, u64)], segment_size: u64) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < missing.len() {
        let mut j = i;
        while j + 1 < missing.len()
            && missing[j + 1].0 == missing[i].0
            && missing[j + 1].1 == missing[j].1 + 1
        {
            j += 1;
        }
        let first = segment_name(missing[i].0, missing[i].1, segment_size);
        if i == j {
            out.push(first);
        } else {
            out.push(format!(
                "{first}..{} ({} segments)",
                segment_name(missing[j].0, missing[j].1, segment_size),
                j - i + 1
            ));
        }
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn segments() {
        assert_eq!(segment_name(1, 3, SEG), "000000010000000000000003");
        assert_eq!(segment_name(2, 256 + 5, SEG), "000000020000000100000005");
        assert_eq!(
            parse_segment("000000020000000100000005.partial", SEG),
            Some((2, 261))
        );
        assert_eq!(parse_segment("0000000200000001000001FF", SEG), None);
        assert_eq!(segment_of(0x300_0028, SEG), 3);
        assert_eq!(segment_before(0x400_0000, SEG), 3);
        assert_eq!(segment_before(0x400_0001, SEG), 4);
    }

    #[test]
    fn timelines() {
        let history = parse_history("1\t0/5000100\tno recovery target\n\n2\t0/9000000\tx\n");
        assert_eq!(
            history,
            vec![
                Switch {
                    parent: 1,
                    switch_lsn: 0x500_0100
                },
                Switch {
                    parent: 2,
                    switch_lsn: 0x900_0000
                }
            ]
        );
        let path = TimelinePath::new(3, &history, SEG);
        assert_eq!(path.timeline_of(4), 1);
        assert_eq!(path.timeline_of(5), 2);
        assert_eq!(path.timeline_of(8), 2);
        assert_eq!(path.timeline_of(9), 3);
        assert!(path.contains(2) && !path.contains(4));
        let mut archive = Archive::default();
        for (t, n) in [(1, 3), (1, 4), (2, 5), (2, 7), (3, 9)] {
            archive.segments.insert((t, n));
        }
        let missing = missing_segments(&archive, &path, 3, 10);
        assert_eq!(missing, vec![(2, 6), (2, 8), (3, 10)]);
        assert_eq!(
            describe_segments(&[(1, 3), (1, 4), (1, 5), (2, 9)], SEG),
            "000000010000000000000003..000000010000000000000005 (3 segments), 000000020000000000000009"
        );
    }
}
