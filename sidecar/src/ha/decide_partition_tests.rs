//! Table tests of [`decide`] around a partition: a fenced former primary
//! running read-only that rejoins the new leader (rewound only when its
//! history diverged), and cycles on the last view read while etcd does not
//! answer (only actions that need no store).

use super::*;

/// Leader `a` on timeline 2 (once `published`), which branched off
/// timeline 1 at 1000.
pub(super) async fn new_leader_on_timeline_2(published: bool) -> ClusterView {
    let mut view = led_by("a").await;
    if published {
        if let Some(m) = view.members.iter_mut().find(|m| m.name == "a") {
            m.status.timeline = Some(2);
        }
    }
    view.history.push(crate::cluster::HistoryEntry(
        1,
        1000,
        "promoted".into(),
        "t".into(),
        "a".into(),
    ));
    view
}

#[tokio::test(start_paused = true)]
async fn fenced_primary_running_read_only_rejoins_rewound_only_if_diverged() {
    let view = new_leader_on_timeline_2(true).await;
    let read_only_at = |wal: u64| {
        let mut l = local(initialized(), replica(wal));
        l.never_received = true;
        l
    };
    // A replica that streamed reports the timeline of its last restartpoint
    // or receipt, which may be older than the WAL it holds: never judged.
    let mut streamed = local(initialized(), replica(1200));
    streamed.following = Some("old");
    let mut pointed = read_only_at(1200);
    pointed.following = Some("a");
    let mut no_rewind = view.clone();
    if let Some(c) = no_rewind.config.as_mut() {
        c.postgresql.use_pg_rewind = false;
    }
    let mut failed = read_only_at(1200);
    failed.rewind_failed = true;
    let rewind = vec![
        Action::StopStandby,
        Action::Rewind { leader: "a".into() },
        Action::StartReplica {
            leader: Some("a".into()),
        },
    ];
    check(
        "fenced primary, read-only, a new leader",
        vec![
            (
                "its WAL ends before the switch point: follow, no rewind",
                view.clone(),
                read_only_at(990),
                vec![Action::Follow { leader: "a".into() }],
            ),
            (
                "its WAL ends at the switch point: follow",
                view.clone(),
                read_only_at(1000),
                vec![Action::Follow { leader: "a".into() }],
            ),
            (
                "WAL past the switch point: stop cleanly, rewind, start",
                view.clone(),
                read_only_at(1200),
                rewind.clone(),
            ),
            (
                "already pointed at the leader but never streaming: rewind",
                view.clone(),
                pointed,
                rewind,
            ),
            (
                "the leader has not published its timeline yet: follow (checked again later)",
                new_leader_on_timeline_2(false).await,
                read_only_at(1200),
                vec![Action::Follow { leader: "a".into() }],
            ),
            (
                "use_pg_rewind off: wait for a reinit",
                no_rewind,
                read_only_at(1200),
                vec![],
            ),
            (
                "pg_rewind failed before: wait",
                view.clone(),
                failed,
                vec![],
            ),
            (
                "a replica that streamed is not judged by its reported timeline: follow",
                view,
                streamed,
                vec![Action::Follow { leader: "a".into() }],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn etcd_out_of_reach_only_local_actions() {
    let cut_off = |pg: LocalPg, lease_left: Option<u64>| {
        let mut l = local(initialized(), pg);
        l.lease_left = lease_left;
        l.store_reachable = false;
        l
    };
    let mut following_a = cut_off(replica(100), Some(9));
    following_a.following = Some("old");
    check(
        "etcd does not answer",
        vec![
            (
                "writable, lease ending: demote (local)",
                led_by("me").await,
                cut_off(primary(100), Some(2)),
                vec![Action::Demote],
            ),
            (
                "stopped former leader, lease ending: start read-only, no release",
                led_by("me").await,
                cut_off(LocalPg::Stopped, Some(2)),
                vec![Action::StartReplica { leader: None }],
            ),
            (
                "read-only former leader, lease ending: nothing to write",
                led_by("me").await,
                cut_off(replica(100), Some(2)),
                vec![],
            ),
            (
                "leader whose lease still holds: no chores",
                led_by("me").await,
                cut_off(primary(100), Some(9)),
                vec![],
            ),
            (
                "a replica never races without the store",
                leaderless_at(100).await,
                cut_off(replica(100), Some(9)),
                vec![],
            ),
            (
                "a replica keeps following the leader it knows",
                led_by("a").await,
                following_a,
                vec![Action::Follow { leader: "a".into() }],
            ),
            (
                "a stopped replica starts read-only",
                led_by("a").await,
                cut_off(LocalPg::Stopped, Some(9)),
                vec![Action::StartReplica {
                    leader: Some("a".into()),
                }],
            ),
        ],
    );
    let d = run(&led_by("me").await, &cut_off(replica(100), Some(2)));
    assert!(
        d.reason.starts_with("etcd does not answer"),
        "the reason says why nothing happens: {}",
        d.reason
    );
}
