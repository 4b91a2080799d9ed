//! Which physical replication slots the leader keeps (pure: no I/O, no clock).
//!
//! Every member but the leader has a slot named after it on the leader, so
//! the WAL it has not received yet waits for it. A member whose key
//! disappears (its lease expired: a restart, a crash, a network cut) keeps
//! its slot for `member_slots_ttl` seconds from the moment this leader first
//! saw the slot without a member, so a member that comes back streams at
//! once from where it stopped. A slot PostgreSQL invalidated because it held
//! more than `max_slot_wal_keep_size` of WAL (`wal_status = 'lost'`) is of no
//! use to anyone and goes at once, so a dead member can never fill the disk.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// A physical slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSeen {
    pub name: String,
    /// A WAL sender streams from it right now.
    pub active: bool,
    /// PostgreSQL invalidated it (`wal_status = 'lost'`).
    pub lost: bool,
}

/// Why a slot is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its member has been gone for longer than `member_slots_ttl`.
    GracePassed,
    /// PostgreSQL invalidated it: it held more than `max_slot_wal_keep_size`.
    Invalidated,
}

/// What the leader does to its slots this cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotPlan {
    pub create: Vec<String>,
    pub drop: Vec<(String, DropReason)>,
    /// Slots kept without a member, with the time this leader first saw them
    /// so: the input of the next cycle's plan.
    pub departed: BTreeMap<String, Instant>,
}

/// `wanted`: the slot names of the members in the store (the leader's own
/// excluded); `departed`: the previous plan's `departed`.
pub fn plan(
    existing: &[SlotSeen],
    wanted: &[String],
    departed: &BTreeMap<String, Instant>,
    now: Instant,
    grace: Duration,
) -> SlotPlan {
    let mut out = SlotPlan::default();
    for name in wanted {
        if !existing.iter().any(|s| &s.name == name) && !out.create.contains(name) {
            out.create.push(name.clone());
        }
    }
    for slot in existing.iter().filter(|s| !wanted.contains(&s.name)) {
        if slot.active {
            // Someone streams from it (a member whose key is late): keep it,
            // and count its absence afresh once it stops.
            continue;
        }
        if slot.lost {
            out.drop.push((slot.name.clone(), DropReason::Invalidated));
            continue;
        }
        let since = departed.get(&slot.name).copied().unwrap_or(now);
        if now.saturating_duration_since(since) >= grace {
            out.drop.push((slot.name.clone(), DropReason::GracePassed));
        } else {
            out.departed.insert(slot.name.clone(), since);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, active: bool, lost: bool) -> SlotSeen {
        SlotSeen {
            name: name.into(),
            active,
            lost,
        }
    }

    #[test]
    fn which_slots_are_kept_created_and_dropped() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1800);
        let secs = Duration::from_secs;
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let since = |v: &[(&str, Instant)]| {
            v.iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect::<BTreeMap<_, _>>()
        };
        struct Row {
            why: &'static str,
            existing: Vec<SlotSeen>,
            wanted: Vec<String>,
            departed: BTreeMap<String, Instant>,
            now: Instant,
            create: Vec<String>,
            drop: Vec<(String, DropReason)>,
            kept: BTreeMap<String, Instant>,
        }
        let rows = vec![
            Row {
                why: "a member without a slot gets one",
                existing: vec![seen("b", true, false)],
                wanted: names(&["b", "c"]),
                departed: since(&[]),
                now: t0,
                create: names(&["c"]),
                drop: vec![],
                kept: since(&[]),
            },
            Row {
                why: "a member's key expired just now: its slot stays, the clock starts",
                existing: vec![seen("b", false, false)],
                wanted: names(&[]),
                departed: since(&[]),
                now: t0,
                create: vec![],
                drop: vec![],
                kept: since(&[("b", t0)]),
            },
            Row {
                why: "gone for less than member_slots_ttl: kept, first departure remembered",
                existing: vec![seen("b", false, false)],
                wanted: names(&[]),
                departed: since(&[("b", t0)]),
                now: t0 + secs(1799),
                create: vec![],
                drop: vec![],
                kept: since(&[("b", t0)]),
            },
            Row {
                why: "gone for member_slots_ttl: dropped",
                existing: vec![seen("b", false, false)],
                wanted: names(&[]),
                departed: since(&[("b", t0)]),
                now: t0 + grace,
                create: vec![],
                drop: vec![("b".into(), DropReason::GracePassed)],
                kept: since(&[]),
            },
            Row {
                why: "back before the grace ended: kept, the departure forgotten",
                existing: vec![seen("b", true, false)],
                wanted: names(&["b"]),
                departed: since(&[("b", t0)]),
                now: t0 + secs(60),
                create: vec![],
                drop: vec![],
                kept: since(&[]),
            },
            Row {
                why: "invalidated by max_slot_wal_keep_size: dropped at once",
                existing: vec![seen("b", false, true)],
                wanted: names(&[]),
                departed: since(&[]),
                now: t0,
                create: vec![],
                drop: vec![("b".into(), DropReason::Invalidated)],
                kept: since(&[]),
            },
            Row {
                why: "a member's lost slot is its own business (it may be reading the archive)",
                existing: vec![seen("b", false, true)],
                wanted: names(&["b"]),
                departed: since(&[]),
                now: t0,
                create: vec![],
                drop: vec![],
                kept: since(&[]),
            },
            Row {
                why: "streamed from without a member key (the key is late): never dropped",
                existing: vec![seen("b", true, false)],
                wanted: names(&[]),
                departed: since(&[("b", t0)]),
                now: t0 + grace * 2,
                create: vec![],
                drop: vec![],
                kept: since(&[]),
            },
            Row {
                why: "a new leader starts every member-less slot's clock from now",
                existing: vec![seen("b", false, false), seen("c", false, false)],
                wanted: names(&["a"]),
                departed: since(&[]),
                now: t0 + grace * 5,
                create: names(&["a"]),
                drop: vec![],
                kept: since(&[("b", t0 + grace * 5), ("c", t0 + grace * 5)]),
            },
            Row {
                why: "departures of slots that no longer exist are forgotten",
                existing: vec![],
                wanted: names(&[]),
                departed: since(&[("gone", t0)]),
                now: t0 + secs(1),
                create: vec![],
                drop: vec![],
                kept: since(&[]),
            },
        ];
        for row in rows {
            let got = plan(&row.existing, &row.wanted, &row.departed, row.now, grace);
            assert_eq!(got.create, row.create, "{}: create", row.why);
            assert_eq!(got.drop, row.drop, "{}: drop", row.why);
            assert_eq!(got.departed, row.kept, "{}: kept", row.why);
        }
    }
}
