//! Table tests of [`decide`], one table per situation. The cluster side of
//! each row is built through the in-memory store, with the same calls the
//! loop makes, so the view is what a member would really read. Rows name the
//! invariant of docs/design.md they defend where there is one.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::cluster::{MemberStatus, PgState};
use crate::dcs::memory::{MemoryDcs, MemoryStore};
use crate::dcs::Dcs;

const TTL: Duration = Duration::from_secs(10);
const SYSID: &str = "7300000000000000001";

/// A store with members whose statuses are written as their loops would.
struct Cluster {
    store: MemoryStore,
    handles: Vec<MemoryDcs>,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            store: MemoryStore::new(),
            handles: Vec::new(),
        }
    }

    fn handle(&mut self, name: &str) -> &MemoryDcs {
        if let Some(i) = self.handles.iter().position(|h| h.member_name() == name) {
            return &self.handles[i];
        }
        self.handles.push(self.store.member(name, TTL));
        self.handles.last().unwrap()
    }

    async fn initialized(mut self) -> Self {
        let h = self.handle("boot");
        h.race_initialize().await.unwrap();
        h.set_initialize(SYSID).await.unwrap();
        h.write_config(&DynamicConfig::default(), None)
            .await
            .unwrap();
        self
    }

    async fn member(mut self, name: &str, role: Role, state: PgState, wal: u64) -> Self {
        let status = MemberStatus {
            conn_url: format!("postgres://127.0.0.1:5432/{name}"),
            api_url: format!("http://127.0.0.1:8008/{name}"),
            state,
            role,
            version: "test".into(),
            xlog_location: (role == Role::Primary).then_some(wal),
            received_location: (role == Role::Replica).then_some(wal),
            replayed_location: (role == Role::Replica).then_some(wal),
            timeline: Some(1),
            replication_state: None,
            tags: Tags::default(),
            pending_restart: false,
            postmaster_start_time: None,
        };
        self.handle(name).touch_member(&status).await.unwrap();
        self
    }

    async fn leader(mut self, name: &str) -> Self {
        assert!(self.handle(name).acquire_leader().await.unwrap());
        self
    }

    async fn optime(mut self, optime: u64) -> Self {
        self.handle("boot")
            .write_status(&crate::cluster::LeaderStatus { optime })
            .await
            .unwrap();
        self
    }

    async fn initialize_pending(mut self) -> Self {
        self.handle("boot").race_initialize().await.unwrap();
        self
    }

    fn view(&self) -> ClusterView {
        self.store.view()
    }
}

/// The local side of a row.
#[derive(Clone)]
struct Local {
    data: DataDir,
    pg: LocalPg,
    /// Seconds of lease left; None = no live lease.
    lease_left: Option<u64>,
    tags: Tags,
    following: Option<&'static str>,
    peers: Vec<PeerReport>,
    /// Lease id of "me" in the store (1 when "me" wrote first in the row).
    my_lease: i64,
    stopped_as: Option<StoppedAs>,
    wall_now: u64,
    /// Seconds PostgreSQL has been down while "me" led.
    down_for: Option<u64>,
    rewind_failed: bool,
    bootstrap_failed: bool,
    /// Seconds until the next bootstrap may start, after a failed one.
    bootstrap_retry_in: Option<u64>,
    /// Made (cloned, restored) and not streamed since.
    not_streamed: bool,
    /// The store answered this cycle (the view is fresh).
    store_reachable: bool,
    /// "me"'s lease length; None = the cluster's ttl.
    lease_ttl: Option<Duration>,
    /// A running standby that has received nothing since it started.
    never_received: bool,
}

/// An initialized cluster whose running primary `name` holds the key.
async fn led_by(name: &str) -> ClusterView {
    Cluster::new()
        .initialized()
        .await
        .member(name, Role::Primary, PgState::Running, 100)
        .await
        .leader(name)
        .await
        .view()
}

/// No leader; the store's last leader position and "me", a running
/// replica, are both at `wal`.
async fn leaderless_at(wal: u64) -> ClusterView {
    Cluster::new()
        .initialized()
        .await
        .optime(wal)
        .await
        .member("me", Role::Replica, PgState::Running, wal)
        .await
        .view()
}

fn initialized() -> DataDir {
    DataDir::Initialized {
        system_id: SYSID.into(),
    }
}

fn local(data: DataDir, pg: LocalPg) -> Local {
    Local {
        data,
        pg,
        lease_left: Some(9),
        tags: Tags::default(),
        following: None,
        peers: Vec::new(),
        my_lease: 0,
        stopped_as: None,
        wall_now: 1_800_000_000,
        down_for: Some(0),
        rewind_failed: false,
        bootstrap_failed: false,
        bootstrap_retry_in: None,
        not_streamed: false,
        store_reachable: true,
        lease_ttl: None,
        never_received: false,
    }
}

fn primary(wal: u64) -> LocalPg {
    LocalPg::Running {
        in_recovery: false,
        wal_position: wal,
        timeline: 1,
    }
}

fn replica(wal: u64) -> LocalPg {
    LocalPg::Running {
        in_recovery: true,
        wal_position: wal,
        timeline: 1,
    }
}

fn peer(name: &str, role: Role, wal: u64) -> PeerReport {
    PeerReport {
        name: name.into(),
        role,
        wal_position: wal,
        tags: Tags::default(),
        not_streamed: false,
    }
}

fn run(view: &ClusterView, l: &Local) -> Decision {
    // "me" is on its own live lease unless the row says otherwise.
    let mut l = l.clone();
    if l.my_lease == 0 {
        l.my_lease = view
            .leader
            .as_ref()
            .filter(|k| k.name == "me")
            .map(|k| k.lease)
            .unwrap_or(99);
    }
    let l = &l;
    let dynamic = view.config.clone().unwrap_or_default();
    let now = Instant::now();
    decide(&Inputs {
        me: "me",
        tags: &l.tags,
        view,
        dynamic: &dynamic,
        data: l.data.clone(),
        pg: l.pg.clone(),
        stopped_as: l.stopped_as.clone(),
        my_lease: l.my_lease,
        lease_deadline: l.lease_left.map(|s| now + Duration::from_secs(s)),
        wall_now: l.wall_now,
        primary_down_since: l.down_for.map(|d| now - Duration::from_secs(d)),
        rewind_failed: l.rewind_failed,
        bootstrap_failed: l.bootstrap_failed,
        bootstrap_retry: l
            .bootstrap_retry_in
            .map(|s| (Duration::from_secs(s), "initdb failed")),
        now,
        peers: &l.peers,
        not_streamed: l.not_streamed,
        following: l.following,
        store_reachable: l.store_reachable,
        lease_ttl: l.lease_ttl.unwrap_or_else(|| dynamic.ttl()),
        never_received: l.never_received,
    })
}

/// Check one table: (row name, view, local, expected actions).
fn check(table: &str, rows: Vec<(&str, ClusterView, Local, Vec<Action>)>) {
    for (name, view, l, expected) in rows {
        let d = run(&view, &l);
        assert_eq!(
            d.actions, expected,
            "{table} / {name}: reason was {:?}",
            d.reason
        );
        assert!(
            !d.reason.is_empty(),
            "{table} / {name}: every decision explains itself"
        );
        assert_order(&d.actions);
    }
}

/// Order lives in the sequence: the key is taken before promotion, and
/// writes stop (demote) before the key is given up.
fn assert_order(actions: &[Action]) {
    let pos = |a: &Action| actions.iter().position(|x| x == a);
    if let Some(p) = pos(&Action::Promote) {
        let i_lead_already = pos(&Action::AcquireLeader).is_none();
        assert!(
            i_lead_already || pos(&Action::AcquireLeader).unwrap() < p,
            "AcquireLeader must precede Promote: {actions:?}"
        );
    }
    if let (Some(r), Some(d)) = (
        pos(&Action::ReleaseLeader),
        actions.iter().position(|a| matches!(a, Action::Demote)),
    ) {
        assert!(d < r, "Demote must precede ReleaseLeader: {actions:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn new_member_with_empty_data_directory() {
    let empty = || local(DataDir::Empty, LocalPg::Stopped);
    let mut nofailover = empty();
    nofailover.tags.nofailover = true;
    let mut gave_up = empty();
    gave_up.bootstrap_failed = true;
    let mut backing_off = empty();
    backing_off.bootstrap_retry_in = Some(4);
    check(
        "empty data directory",
        vec![
            (
                "uninitialized cluster: race",
                Cluster::new().view(),
                empty(),
                vec![Action::Bootstrap],
            ),
            (
                "nofailover members do not bootstrap",
                Cluster::new().view(),
                nofailover,
                vec![],
            ),
            (
                "a failed bootstrap from a backup is not retried",
                Cluster::new().view(),
                gave_up,
                vec![],
            ),
            (
                "a failed initdb: wait for the backoff",
                Cluster::new().view(),
                backing_off,
                vec![],
            ),
            (
                "someone is bootstrapping: wait",
                Cluster::new().initialize_pending().await.view(),
                empty(),
                vec![],
            ),
            (
                "running leader: clone it",
                led_by("a").await,
                empty(),
                vec![Action::CloneFrom { member: "a".into() }],
            ),
            (
                "leader not running yet: wait",
                Cluster::new()
                    .initialized()
                    .await
                    .member("a", Role::Primary, PgState::Starting, 100)
                    .await
                    .leader("a")
                    .await
                    .view(),
                empty(),
                vec![],
            ),
            (
                "initialized, no leader: wait",
                Cluster::new().initialized().await.view(),
                empty(),
                vec![],
            ),
            (
                "I hold the key with no data: release it",
                Cluster::new().initialized().await.leader("me").await.view(),
                empty(),
                vec![Action::ReleaseLeader],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn stopped_instance() {
    let stopped = || local(initialized(), LocalPg::Stopped);
    let mut expiring = stopped();
    expiring.lease_left = Some(2);
    let mut foreign = stopped();
    foreign.data = DataDir::Initialized {
        system_id: "42".into(),
    };
    check(
        "stopped instance",
        vec![
            (
                "I hold the key: restart as primary",
                led_by("me").await,
                stopped(),
                vec![Action::StartPrimary],
            ),
            (
                "I hold the key but the lease is ending (invariant 1): read-only, release it",
                led_by("me").await,
                expiring,
                vec![Action::StartReplica { leader: None }, Action::ReleaseLeader],
            ),
            (
                "another leader: start as its replica",
                led_by("a").await,
                stopped(),
                vec![Action::StartReplica {
                    leader: Some("a".into()),
                }],
            ),
            (
                "no leader: start as replica, race later",
                Cluster::new().initialized().await.view(),
                stopped(),
                vec![Action::StartReplica { leader: None }],
            ),
            (
                "data directory of another cluster: halt",
                led_by("a").await,
                foreign,
                vec![Action::Halt],
            ),
            (
                "initialize key lost: record our system id first",
                Cluster::new().view(),
                stopped(),
                vec![
                    Action::WriteInitialize {
                        system_id: SYSID.into(),
                    },
                    Action::StartReplica { leader: None },
                ],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn running_primary_keeps_writes_only_with_its_lease() {
    let p = || local(initialized(), primary(100));
    let mut margin = p();
    margin.lease_left = Some(3); // fence margin at ttl 10 is 3.33 s
    let mut no_lease = p();
    no_lease.lease_left = None;
    let behind = p();
    let mut newer_timeline = Cluster::new().initialized().await.view();
    newer_timeline.history.push(crate::cluster::HistoryEntry(
        1,
        50,
        "x".into(),
        "t".into(),
        "a".into(),
    ));
    check(
        "running primary (invariant 1)",
        vec![
            (
                "lease valid: keep leading",
                led_by("me").await,
                p(),
                vec![Action::LeaderChores],
            ),
            (
                "lease inside the fence margin: demote",
                led_by("me").await,
                margin,
                vec![Action::Demote],
            ),
            (
                "no live lease: demote",
                led_by("me").await,
                no_lease,
                vec![Action::Demote],
            ),
            (
                "someone else holds the key: demote and follow",
                led_by("a").await,
                p(),
                vec![Action::Demote],
            ),
            (
                "no leader: take the key as the running primary",
                Cluster::new().initialized().await.view(),
                p(),
                vec![Action::AcquireLeader, Action::LeaderChores],
            ),
            (
                "no leader but my timeline is stale: demote",
                newer_timeline,
                behind,
                vec![Action::Demote],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn replica_races_only_when_it_is_the_best_candidate() {
    let leaderless = || leaderless_at(1000);
    let take_over = vec![Action::AcquireLeader, Action::Promote, Action::LeaderChores];
    let with_peers = |peers: Vec<PeerReport>| {
        let mut l = local(initialized(), replica(1000));
        l.peers = peers;
        l
    };
    let caught_up = local(initialized(), replica(1000));
    let far_behind = local(initialized(), replica(1));
    let mut nofailover = local(initialized(), replica(1000));
    nofailover.tags.nofailover = true;
    let mut priority_zero = local(initialized(), replica(1000));
    priority_zero.tags.failover_priority = 0;
    let mut higher_priority_peer = peer("b", Role::Replica, 1000);
    higher_priority_peer.tags.failover_priority = 5;
    let mut nofailover_peer = peer("b", Role::Replica, 5000);
    nofailover_peer.tags.nofailover = true;
    // It received 2 MiB more from the old leader than the store recorded.
    let mut fresher_nofailover_peer = peer("b", Role::Replica, 1000 + (2 << 20));
    fresher_nofailover_peer.tags.nofailover = true;
    check(
        "leader race (invariant 3)",
        vec![
            (
                "alone and caught up: take over",
                leaderless().await,
                caught_up,
                take_over.clone(),
            ),
            (
                "equal peers: race, the transaction decides",
                leaderless().await,
                with_peers(vec![peer("b", Role::Replica, 1000)]),
                take_over.clone(),
            ),
            (
                "a peer is ahead: do not race",
                leaderless().await,
                with_peers(vec![peer("b", Role::Replica, 1001)]),
                vec![],
            ),
            (
                "the primary still answers: do not race",
                leaderless().await,
                with_peers(vec![peer("b", Role::Primary, 10)]),
                vec![],
            ),
            (
                "equal position, peer has higher failover_priority: do not race",
                leaderless().await,
                with_peers(vec![higher_priority_peer]),
                vec![],
            ),
            (
                "a nofailover peer ahead does not block",
                leaderless().await,
                with_peers(vec![nofailover_peer]),
                take_over.clone(),
            ),
            (
                "a member received past maximum_lag_on_failover beyond me (the store's \
                 position is stale): do not race, the lag gate uses the freshest position",
                leaderless().await,
                with_peers(vec![fresher_nofailover_peer]),
                vec![],
            ),
            (
                "beyond maximum_lag_on_failover: do not race",
                Cluster::new()
                    .initialized()
                    .await
                    .optime(10 << 20)
                    .await
                    .view(),
                far_behind,
                vec![],
            ),
            (
                "nofailover: never race",
                leaderless().await,
                nofailover,
                vec![],
            ),
            (
                "failover_priority 0: never race",
                leaderless().await,
                priority_zero,
                vec![],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_has_not_streamed_since_it_was_made_does_not_win() {
    let leaderless = leaderless_at(1000).await;
    let take_over = vec![Action::AcquireLeader, Action::Promote, Action::LeaderChores];
    let me = |wal: u64, not_streamed: bool, peers: Vec<PeerReport>| {
        let mut l = local(initialized(), replica(wal));
        l.not_streamed = not_streamed;
        l.peers = peers;
        l
    };
    let unstreamed = |name: &str, role: Role, wal: u64| PeerReport {
        not_streamed: true,
        ..peer(name, role, wal)
    };
    let mut streamed_nofailover = peer("b", Role::Replica, 1000);
    streamed_nofailover.tags.nofailover = true;
    let mut unstreamed_higher_priority = unstreamed("b", Role::Replica, 1000);
    unstreamed_higher_priority.tags.failover_priority = 5;
    check(
        "leader race after a clone (issue 14, item 4)",
        vec![
            (
                "not streamed, a streamed replica as far: do not race",
                leaderless.clone(),
                me(1000, true, vec![peer("b", Role::Replica, 1000)]),
                vec![],
            ),
            (
                "not streamed and ahead (its copy's WAL), a streamed replica behind \
                 within the lag limit: do not race",
                leaderless.clone(),
                me(1000, true, vec![peer("b", Role::Replica, 900)]),
                vec![],
            ),
            (
                "streamed and behind, the peer ahead has not streamed: race (the \
                 other side of the row above)",
                leaderless.clone(),
                me(900, false, vec![unstreamed("b", Role::Replica, 1000)]),
                take_over.clone(),
            ),
            (
                "streamed, an unstreamed peer as far with a higher failover_priority: race",
                leaderless.clone(),
                me(1000, false, vec![unstreamed_higher_priority]),
                take_over.clone(),
            ),
            (
                "neither has streamed: today's comparison, the one ahead races",
                leaderless.clone(),
                me(1000, true, vec![unstreamed("b", Role::Replica, 900)]),
                take_over.clone(),
            ),
            (
                "neither has streamed: today's comparison, the one behind waits",
                leaderless.clone(),
                me(900, true, vec![unstreamed("b", Role::Replica, 1000)]),
                vec![],
            ),
            (
                "not streamed, alone: race",
                leaderless.clone(),
                me(1000, true, vec![]),
                take_over.clone(),
            ),
            (
                "not streamed, the streamed peer may not fail over: race",
                leaderless.clone(),
                me(1000, true, vec![streamed_nofailover]),
                take_over.clone(),
            ),
            (
                "not streamed, the streamed peer's PostgreSQL is down: race",
                leaderless.clone(),
                me(1000, true, vec![peer("b", Role::Demoted, 0)]),
                take_over.clone(),
            ),
        ],
    );
    let refused = run(
        &leaderless,
        &me(1000, true, vec![peer("b", Role::Replica, 900)]),
    );
    assert!(
        refused.reason.contains("not streamed") && refused.reason.contains("b has"),
        "the refusal names why and who: {:?}",
        refused.reason
    );
    let alone = run(&leaderless, &me(1000, true, vec![]));
    assert!(
        alone
            .reason
            .contains("no other reachable candidate has either"),
        "racing unstreamed says why: {:?}",
        alone.reason
    );
}

#[tokio::test(start_paused = true)]
async fn replica_with_a_leader() {
    let mut following_a = local(initialized(), replica(100));
    following_a.following = Some("a");
    let mut following_old = local(initialized(), replica(100));
    following_old.following = Some("old");
    let mut won_but_expiring = local(initialized(), replica(100));
    won_but_expiring.lease_left = Some(1);
    check(
        "replica with a leader",
        vec![
            (
                "already streaming from it: nothing",
                led_by("a").await,
                following_a,
                vec![],
            ),
            (
                "new leader: follow it",
                led_by("a").await,
                following_old,
                vec![Action::Follow { leader: "a".into() }],
            ),
            (
                "I hold the key: promote",
                led_by("me").await,
                local(initialized(), replica(100)),
                vec![Action::Promote, Action::LeaderChores],
            ),
            (
                "I hold the key but the lease is ending: release instead of promoting",
                led_by("me").await,
                won_but_expiring,
                vec![Action::ReleaseLeader],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_in_the_store_frees_the_key() {
    // The same store the tables use, driven through time: a leader that
    // stops renewing loses the key after ttl and a replica may then race.
    let c = Cluster::new()
        .initialized()
        .await
        .member("a", Role::Primary, PgState::Running, 100)
        .await
        .leader("a")
        .await
        .optime(100)
        .await;
    let replica_me = local(initialized(), replica(100));
    assert_eq!(
        run(&c.view(), &replica_me).actions,
        vec![Action::Follow { leader: "a".into() }]
    );
    tokio::time::advance(TTL + Duration::from_millis(1)).await;
    assert_eq!(
        run(&c.view(), &replica_me).actions,
        vec![Action::AcquireLeader, Action::Promote, Action::LeaderChores]
    );
}

#[tokio::test(start_paused = true)]
async fn leader_key_left_on_an_old_lease_is_reclaimed_first() {
    // A restarted sidecar finds its name in the key, but on the lease of its
    // previous run: it must move the key to its own lease before leading.
    let view = led_by("me").await;
    let revision = view.leader.as_ref().unwrap().revision;
    let mut restarted = local(initialized(), LocalPg::Stopped);
    restarted.my_lease = 4242;
    check(
        "reclaim",
        vec![
            (
                "stopped: reclaim, then restart as primary",
                view.clone(),
                restarted.clone(),
                vec![Action::ReclaimLeader { revision }, Action::StartPrimary],
            ),
            (
                "running primary: reclaim, then lead",
                view,
                Local {
                    pg: primary(100),
                    ..restarted
                },
                vec![Action::ReclaimLeader { revision }, Action::LeaderChores],
            ),
        ],
    );
}

fn paused_view(view: ClusterView) -> ClusterView {
    let mut v = view;
    let mut cfg = v.config.clone().unwrap_or_default();
    cfg.pause = true;
    v.config = Some(cfg);
    v
}

#[tokio::test(start_paused = true)]
async fn maintenance_mode_starts_stops_promotes_and_demotes_nothing() {
    let leaderless = leaderless_at(100).await;
    let led_by_other = led_by("a").await;
    let mine = led_by("me").await;
    let mut expiring = local(initialized(), primary(100));
    expiring.lease_left = Some(1);
    check(
        "maintenance mode",
        vec![
            (
                "stopped replica stays stopped",
                paused_view(led_by_other.clone()),
                local(initialized(), LocalPg::Stopped),
                vec![],
            ),
            (
                "no leader: nobody is promoted",
                paused_view(leaderless.clone()),
                local(initialized(), replica(100)),
                vec![],
            ),
            (
                "primary with another leader is not demoted",
                paused_view(led_by_other),
                local(initialized(), primary(100)),
                vec![],
            ),
            (
                "leader with an expiring lease keeps running",
                paused_view(mine.clone()),
                expiring,
                vec![Action::LeaderChores],
            ),
            (
                "leader whose PostgreSQL stopped gives up the key",
                paused_view(mine),
                local(initialized(), LocalPg::Stopped),
                vec![Action::ReleaseLeader],
            ),
            (
                "new member is not cloned",
                paused_view(leaderless),
                local(DataDir::Empty, LocalPg::Stopped),
                vec![],
            ),
        ],
    );
}

async fn with_request(
    request: crate::cluster::FailoverRequest,
    leader: Option<&str>,
) -> ClusterView {
    let mut c = Cluster::new()
        .initialized()
        .await
        .member("me", Role::Primary, PgState::Running, 100)
        .await
        .member("b", Role::Replica, PgState::Running, 100)
        .await
        .member("c", Role::Replica, PgState::Stopped, 100)
        .await;
    if let Some(l) = leader {
        c = c.leader(l).await;
    }
    c.handle("me").write_failover(Some(&request)).await.unwrap();
    c.view()
}

fn request(
    leader: Option<&str>,
    member: Option<&str>,
    at: Option<&str>,
) -> crate::cluster::FailoverRequest {
    crate::cluster::FailoverRequest {
        leader: leader.map(str::to_string),
        member: member.map(str::to_string),
        scheduled_at: at.map(str::to_string),
    }
}

#[tokio::test(start_paused = true)]
async fn switchover_on_the_leader() {
    let p = || local(initialized(), primary(100));
    let chores_and_clear = vec![Action::LeaderChores, Action::ClearFailover];
    check(
        "switchover (leader side)",
        vec![
            (
                "named running candidate: hand over",
                with_request(request(Some("me"), Some("b"), None), Some("me")).await,
                p(),
                vec![Action::Handover {
                    candidate: Some("b".into()),
                }],
            ),
            (
                "any candidate: hand over to the best",
                with_request(request(Some("me"), None, None), Some("me")).await,
                p(),
                vec![Action::Handover { candidate: None }],
            ),
            (
                "candidate not running: drop the request",
                with_request(request(Some("me"), Some("c"), None), Some("me")).await,
                p(),
                chores_and_clear.clone(),
            ),
            (
                "scheduled in the future: wait",
                with_request(
                    request(Some("me"), Some("b"), Some("2099-01-01T00:00:00+00:00")),
                    Some("me"),
                )
                .await,
                p(),
                vec![Action::LeaderChores],
            ),
            (
                "scheduled time reached: hand over",
                with_request(
                    request(Some("me"), Some("b"), Some("2020-01-01T00:00:00Z")),
                    Some("me"),
                )
                .await,
                p(),
                vec![Action::Handover {
                    candidate: Some("b".into()),
                }],
            ),
            (
                "request addressed to a former leader: I am the result, clear it",
                with_request(request(Some("old"), Some("me"), None), Some("me")).await,
                p(),
                chores_and_clear,
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn switchover_candidates_and_bystanders() {
    let r = || {
        let mut l = local(initialized(), replica(100));
        l.peers = vec![peer("b", Role::Replica, 500)];
        l
    };
    check(
        "switchover (replica side)",
        vec![
            (
                "I am the named candidate: take over even if a peer is ahead",
                with_request(request(Some("old"), Some("me"), None), None).await,
                r(),
                vec![
                    Action::AcquireLeader,
                    Action::Promote,
                    Action::ClearFailover,
                    Action::LeaderChores,
                ],
            ),
            (
                "another running member is the candidate: defer",
                with_request(request(Some("old"), Some("b"), None), None).await,
                local(initialized(), replica(100)),
                vec![],
            ),
            (
                "the candidate is not running: race as usual",
                with_request(request(Some("old"), Some("c"), None), None).await,
                local(initialized(), replica(100)),
                vec![Action::AcquireLeader, Action::Promote, Action::LeaderChores],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn former_primary_rejoins_through_rewind_only_when_it_diverged() {
    let view = partition::new_leader_on_timeline_2(true).await;
    let ends = |was_primary: bool, clean: bool, checkpoint_lsn: u64, last_record| {
        let mut l = local(initialized(), LocalPg::Stopped);
        l.stopped_as = Some(StoppedAs {
            was_primary,
            clean,
            timeline: 1,
            checkpoint_lsn,
            last_record,
        });
        l
    };
    let stopped =
        |was_primary, clean, checkpoint_lsn| ends(was_primary, clean, checkpoint_lsn, None);
    let rewind_then_start = vec![
        Action::Rewind { leader: "a".into() },
        Action::StartReplica {
            leader: Some("a".into()),
        },
    ];
    let start = vec![Action::StartReplica {
        leader: Some("a".into()),
    }];
    let mut failed = stopped(true, false, 900);
    failed.rewind_failed = true;
    check(
        "rejoin",
        vec![
            (
                "clean stop before the switch point: just follow",
                view.clone(),
                stopped(true, true, 900),
                start.clone(),
            ),
            (
                "clean stop past the switch point: rewind",
                view.clone(),
                stopped(true, true, 1200),
                rewind_then_start.clone(),
            ),
            (
                "crashed primary, end of its WAL unknown: rewind",
                view.clone(),
                stopped(true, false, 900),
                rewind_then_start.clone(),
            ),
            (
                "crashed primary whose last record starts past the switch point: rewind",
                view.clone(),
                ends(true, false, 900, Some(1000)),
                rewind_then_start,
            ),
            (
                "crashed (fenced) primary whose WAL ends before the switch point: just follow",
                view.clone(),
                ends(true, false, 900, Some(990)),
                start.clone(),
            ),
            (
                "former replica: just follow",
                view.clone(),
                stopped(false, false, 5000),
                start,
            ),
            (
                "rewind failed before: wait for reinit, never start alone",
                view,
                failed,
                vec![],
            ),
        ],
    );
}

#[path = "decide_partition_tests.rs"]
mod partition;

#[path = "decide_ttl_tests.rs"]
mod ttl;

#[tokio::test(start_paused = true)]
async fn synchronous_mode_lets_only_sync_members_take_over() {
    let mut view = Cluster::new()
        .initialized()
        .await
        .optime(100)
        .await
        .member("me", Role::Replica, PgState::Running, 100)
        .await
        .view();
    let mut cfg = view.config.clone().unwrap();
    cfg.synchronous_mode = true;
    view.config = Some(cfg);
    let mut not_listed = view.clone();
    not_listed.sync = Some(crate::cluster::SyncState::new("old", &["b".to_string()]));
    let mut listed = view.clone();
    listed.sync = Some(crate::cluster::SyncState::new("old", &["me".to_string()]));
    let mut async_peer_ahead = local(initialized(), replica(100));
    async_peer_ahead.peers = vec![peer("c", Role::Replica, 900)];
    check(
        "synchronous mode (invariant 2)",
        vec![
            (
                "not in sync: never race",
                not_listed,
                local(initialized(), replica(100)),
                vec![],
            ),
            (
                "in sync: race, an async member ahead does not block",
                listed,
                async_peer_ahead,
                vec![Action::AcquireLeader, Action::Promote, Action::LeaderChores],
            ),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn crashed_primary_restarts_in_place_then_fails_over() {
    let view = Cluster::new()
        .initialized()
        .await
        .member("me", Role::Primary, PgState::Stopped, 100)
        .await
        .member("b", Role::Replica, PgState::Running, 100)
        .await
        .leader("me")
        .await
        .view();
    let down = |secs: u64| {
        let mut l = local(initialized(), LocalPg::Stopped);
        l.down_for = Some(secs);
        l
    };
    let mut zero = view.clone();
    let mut cfg = zero.config.clone().unwrap();
    cfg.primary_start_timeout = 0;
    zero.config = Some(cfg);
    check(
        "primary crash",
        vec![
            (
                "just crashed: restart in place",
                view.clone(),
                down(5),
                vec![Action::StartPrimary],
            ),
            (
                "down past primary_start_timeout: hand the key over",
                view,
                down(301),
                vec![Action::ReleaseLeader],
            ),
            (
                "primary_start_timeout 0: fail over at once",
                zero,
                down(0),
                vec![Action::ReleaseLeader],
            ),
        ],
    );
}

#[test]
fn bootstrap_backoff_doubles_up_to_five_minutes() {
    use super::bootstrap_backoff;
    let s = Duration::from_secs;
    for (loop_wait, failures, want) in [
        (2, 1, 2),
        (2, 2, 4),
        (2, 3, 8),
        (2, 8, 256),
        (2, 9, 300),
        (10, 40, 300),
        (2, u32::MAX, 300),
        (9_000_000_000, 1, 300),
    ] {
        assert_eq!(
            bootstrap_backoff(s(loop_wait), failures),
            s(want),
            "loop_wait {loop_wait}, failures {failures}"
        );
    }
}
