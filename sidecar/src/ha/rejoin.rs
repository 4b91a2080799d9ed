//! Does a stopped former primary hold WAL the new leader's timeline does not
//! have? Pure: from its control data, where its WAL ends, and the cluster's
//! timeline history. Only then is pg_rewind needed.
//!
//! The new leader's timeline branched off the old one at its switch point:
//! the end of the last WAL record the promoted standby had. Up to there the
//! two timelines hold the same bytes (a standby only has what the primary
//! sent). So the former primary diverged exactly when it has a record that
//! *starts* at or after the switch point:
//!
//! - stopped cleanly, its last record is the shutdown checkpoint, whose
//!   location pg_control holds (a switchover: the successor had received
//!   that checkpoint before it promoted, so it never diverged);
//! - stopped without a checkpoint (the fence's immediate stop, a crash),
//!   its last record is found by reading its WAL from the last checkpoint
//!   on ([`crate::postgres::Postgres::last_wal_record`]); when that cannot be
//!   told it counts as diverged;
//! - running read-only since the fence demoted it (nothing received since
//!   its start), its WAL ends where its replay does ([`diverged_at`]).

use crate::cluster::HistoryEntry;

use super::decide::StoppedAs;

/// Where the last WAL record of the stopped instance starts, if known.
pub fn last_record(stopped: &StoppedAs) -> Option<u64> {
    if stopped.clean {
        Some(stopped.checkpoint_lsn)
    } else {
        stopped.last_record
    }
}

/// Must this former primary be rewound before it follows the leader?
pub fn diverged(stopped: &StoppedAs, history: &[HistoryEntry]) -> bool {
    let switch_point = history
        .iter()
        .find(|h| h.0 == stopped.timeline)
        .map(|h| h.1);
    match (switch_point, last_record(stopped)) {
        (Some(switch), Some(last)) => last >= switch,
        _ => true,
    }
}

/// Must a running standby on `timeline`, whose WAL ends at `wal_end` (the
/// end of what it received or replayed), be rewound before it can follow a
/// leader on a later timeline? Exactly when its WAL goes past the switch
/// point: the leader has nothing there, so streaming never resumes.
pub fn diverged_at(timeline: u32, wal_end: u64, history: &[HistoryEntry]) -> bool {
    match history.iter().find(|h| h.0 == timeline) {
        Some(h) => wal_end > h.1,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_only_when_the_history_diverged() {
        // Timeline 1 ended at 0x1000 (the new leader is on timeline 2).
        let history = vec![
            HistoryEntry(1, 0x1000, "promoted".into(), "t".into(), "b".into()),
            HistoryEntry(2, 0x9000, "promoted".into(), "t".into(), "c".into()),
        ];
        let stopped = |timeline, clean, checkpoint_lsn, last_record| StoppedAs {
            was_primary: true,
            clean,
            timeline,
            checkpoint_lsn,
            last_record,
        };
        let rows = [
            (
                "clean stop, checkpoint before the switch point (switchover)",
                stopped(1, true, 0xfd8, None),
                false,
            ),
            (
                "clean stop, checkpoint at the switch point",
                stopped(1, true, 0x1000, None),
                true,
            ),
            (
                "clean stop past the switch point",
                stopped(1, true, 0x1200, None),
                true,
            ),
            (
                "immediate stop, last record before the switch point (replica had it all)",
                stopped(1, false, 0x800, Some(0xfd8)),
                false,
            ),
            (
                "immediate stop, a record starts at the switch point",
                stopped(1, false, 0x800, Some(0x1000)),
                true,
            ),
            (
                "immediate stop, records the leader never got",
                stopped(1, false, 0x800, Some(0x5000)),
                true,
            ),
            (
                "immediate stop, end of WAL unknown",
                stopped(1, false, 0x800, None),
                true,
            ),
            (
                "later timeline: its own switch point counts",
                stopped(2, false, 0x5000, Some(0x8ff0)),
                false,
            ),
            (
                "timeline not in the history: cannot tell, rewind",
                stopped(3, true, 0x10, None),
                true,
            ),
        ];
        for (why, s, want) in rows {
            assert_eq!(diverged(&s, &history), want, "{why}");
        }
        assert!(diverged(&stopped(1, true, 0x10, None), &[]), "no history");
    }

    #[test]
    fn a_running_standby_diverged_when_its_wal_ends_past_the_switch_point() {
        let history = vec![HistoryEntry(
            1,
            0x1000,
            "promoted".into(),
            "t".into(),
            "b".into(),
        )];
        assert!(!diverged_at(1, 0xf00, &history), "behind the switch point");
        assert!(!diverged_at(1, 0x1000, &history), "ends exactly there");
        assert!(diverged_at(1, 0x1001, &history), "past it");
        assert!(
            diverged_at(2, 0x10, &history),
            "timeline not in the history"
        );
    }
}
