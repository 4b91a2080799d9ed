//! The HA decision: a pure function from one snapshot of the cluster and of
//! the local instance to an ordered list of actions and the reason for them.
//!
//! Nothing here reads the clock, sleeps or talks to etcd or PostgreSQL; the
//! loop in `ha::run` observes, calls [`decide`], and executes. "Why did node X
//! promote?" is answered in this file.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{ClusterView, FailoverRequest, PgState, Role};
use crate::config::Tags;
use crate::dynamic::DynamicConfig;

/// What the local data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty: a new member.
    Empty,
    /// A cluster with this system identifier.
    Initialized { system_id: String },
}

/// The local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalPg {
    Stopped,
    /// Running, answering SQL.
    Running {
        in_recovery: bool,
        /// Furthest WAL position it has (flushed on a primary, received/replayed on a replica).
        wal_position: u64,
        timeline: u32,
    },
    /// The postmaster runs but SQL does not answer (starting up, overloaded).
    Unresponsive,
}

/// Another member's status as its REST API reported it just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub name: String,
    pub role: Role,
    pub wal_position: u64,
    pub tags: Tags,
    /// Made (cloned, restored) and not streamed from a leader since.
    pub not_streamed: bool,
}

/// What pg_controldata says about a stopped data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedAs {
    /// It ran as a primary ("shut down" or "in production"), so it may hold
    /// WAL that the current leader never saw.
    pub was_primary: bool,
    /// It was shut down cleanly ("shut down", "shut down in recovery").
    pub clean: bool,
    pub timeline: u32,
    /// Latest checkpoint location.
    pub checkpoint_lsn: u64,
    /// Not stopped cleanly: where its last WAL record on `timeline` starts
    /// (read from its WAL), if that could be told.
    pub last_record: Option<u64>,
}

/// Everything [`decide`] looks at, gathered by the loop in one go.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub me: &'a str,
    pub tags: &'a Tags,
    pub view: &'a ClusterView,
    /// Effective cluster-wide settings (the store's, or the file's before bootstrap).
    pub dynamic: &'a DynamicConfig,
    pub data: DataDir,
    pub pg: LocalPg,
    /// Control data of a stopped instance (None while it runs or if unreadable).
    pub stopped_as: Option<StoppedAs>,
    /// This member's lease id (0: none).
    pub my_lease: i64,
    /// Until when this member's lease is known to live (send time of the last
    /// successful renewal + ttl); `None` when it has no live lease.
    pub lease_deadline: Option<Instant>,
    pub now: Instant,
    /// Wall-clock time, for scheduled switchovers (seconds since the epoch).
    pub wall_now: u64,
    /// Since when PostgreSQL has been down while this member led.
    pub primary_down_since: Option<Instant>,
    /// Reports from reachable peers; gathered only while nobody leads.
    pub peers: &'a [PeerReport],
    /// This member's data directory was made (cloned, restored) and has not
    /// streamed from a leader since: it may hold only its copy's WAL.
    pub not_streamed: bool,
    /// The leader whose connection the running replica is configured with.
    pub following: Option<&'a str>,
    /// pg_rewind of this data directory failed; do not retry it.
    pub rewind_failed: bool,
    /// This member's bootstrap from a backup (`[bootstrap_from]`) failed and
    /// was undone; it fails the same way again (a missing label, a target
    /// past the archived WAL), so it is not retried until pgpilot restarts.
    pub bootstrap_failed: bool,
    /// The last bootstrap (initdb) failed: why, and how long until the
    /// next try ([`bootstrap_backoff`]); `None` once that time has come.
    pub bootstrap_retry: Option<(Duration, &'a str)>,
    /// The store answered this cycle. When it did not, `view` is the last
    /// one read, and only actions that need no store are taken.
    pub store_reachable: bool,
    /// The length of this member's lease now (the cluster's `ttl` may differ).
    pub lease_ttl: Duration,
    /// The running standby has received no WAL from any upstream since it
    /// started (a former primary the fence brought back read-only): its WAL
    /// is its own, ending where its replay does, on its own timeline.
    pub never_received: bool,
}

/// How long to wait before bootstrap attempt `failures + 1`: loop_wait,
/// doubling with each failure, at most five minutes.
pub fn bootstrap_backoff(loop_wait: Duration, failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    2u32.checked_pow(failures.saturating_sub(1))
        .and_then(|factor| loop_wait.checked_mul(factor))
        .map_or(MAX, |d| d.min(MAX))
}

/// One step for the executor, in the order given. The executor stops at the
/// first step that fails or reports "not done" (a lost race).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Race for `initialize`; the winner takes the leader key, runs initdb,
    /// starts as primary and records the system identifier.
    Bootstrap,
    /// Copy the data directory from this member with pg_basebackup.
    CloneFrom { member: String },
    /// Record our system identifier in an `initialize` key that vanished.
    WriteInitialize { system_id: String },
    /// Take the leader key in a transaction (stops the sequence if lost).
    AcquireLeader,
    /// The key holds our name but another (older) lease of ours: move it to
    /// our live lease before acting as leader (stops the sequence if that fails).
    ReclaimLeader { revision: i64 },
    /// Start PostgreSQL as the primary (we hold the key).
    StartPrimary,
    /// Start PostgreSQL as a standby of `leader` (or with no upstream).
    StartReplica { leader: Option<String> },
    /// Rewind the stopped former primary onto `leader`'s timeline (pg_rewind).
    Rewind { leader: String },
    /// Promote the local standby (we hold the key).
    Promote,
    /// Stop accepting writes now (immediate stop); it restarts as a standby
    /// in a later cycle, after a rewind if it diverged.
    Demote,
    /// Stop the running standby cleanly (fast shutdown), for pg_rewind.
    StopStandby,
    /// Move this member's keys to a lease of the cluster's new `ttl`,
    /// without giving up the leader key; the next cycle decides on what the
    /// store holds then.
    ApplyTtl { ttl: Duration },
    /// Planned hand-over: fast stop, wait until `candidate` (or any replica)
    /// has the shutdown checkpoint, then give up the key.
    Handover { candidate: Option<String> },
    /// Point the running standby at `leader`.
    Follow { leader: String },
    /// Leader chores: slots for members, last WAL position in `status`,
    /// synchronous standbys.
    LeaderChores,
    /// Remove the switchover/failover request (done, or impossible).
    ClearFailover,
    /// Give up the leader key.
    ReleaseLeader,
    /// The data directory belongs to another cluster: stop for good.
    Halt,
}

impl Action {
    /// Can it be carried out on the last view read, while the store does
    /// not answer? Only what acts on the local instance without claiming,
    /// keeping or reading anything the store decides: stop accepting writes,
    /// start or stay read-only, halt.
    pub fn needs_store(&self) -> bool {
        !matches!(
            self,
            Action::Demote | Action::StartReplica { .. } | Action::Follow { .. } | Action::Halt
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub reason: String,
}

impl Decision {
    fn new(actions: Vec<Action>, reason: impl Into<String>) -> Self {
        Decision {
            actions,
            reason: reason.into(),
        }
    }
    fn wait(reason: impl Into<String>) -> Self {
        Decision::new(Vec::new(), reason)
    }
    fn then(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }
}

/// May this member still act as primary at `now`? The lease must outlive the
/// fence margin, so demotion completes before anyone else can take the key.
pub fn lease_allows_writes(
    deadline: Option<Instant>,
    now: Instant,
    dynamic: &DynamicConfig,
) -> bool {
    deadline.is_some_and(|d| now + dynamic.fence_margin() < d)
}

pub fn decide(i: &Inputs) -> Decision {
    let leader = i.view.leader_name();
    let i_lead = leader == Some(i.me);
    let other_leader = leader.filter(|l| *l != i.me).map(str::to_string);
    let paused = i.dynamic.pause;

    let system_id = match &i.data {
        DataDir::Empty if paused && !i_lead => {
            return Decision::wait("maintenance mode: not creating this member")
        }
        DataDir::Empty => return decide_empty(i, i_lead, other_leader),
        DataDir::Initialized { system_id } => system_id,
    };

    // A data directory from another cluster must never join this one.
    if let Some(cluster_id) = i.view.system_id() {
        if cluster_id != system_id {
            return Decision::new(
                vec![Action::Halt],
                format!(
                    "system ID mismatch: data directory has {system_id}, cluster has {cluster_id}"
                ),
            );
        }
    }
    let mut prelude = Vec::new();
    if let Some(key) = i.view.leader.as_ref().filter(|k| k.name == i.me) {
        if key.lease != i.my_lease || i.my_lease == 0 {
            prelude.push(Action::ReclaimLeader {
                revision: key.revision,
            });
        }
    }
    if i.view.initialize.is_none() && leader.is_none() {
        prelude.push(Action::WriteInitialize {
            system_id: system_id.clone(),
        });
    }
    let writes_allowed = i_lead && lease_allows_writes(i.lease_deadline, i.now, i.dynamic);

    let mut decision = match i.pg {
        LocalPg::Stopped if paused => {
            if i_lead {
                Decision::new(
                    vec![Action::ReleaseLeader],
                    "maintenance mode: PostgreSQL is stopped, so I give up the leader key",
                )
            } else {
                Decision::wait("maintenance mode: PostgreSQL is stopped and left alone")
            }
        }
        LocalPg::Stopped => decide_stopped(i, i_lead, writes_allowed, other_leader),
        LocalPg::Unresponsive => {
            if i_lead && !writes_allowed && !paused {
                Decision::new(
                    vec![Action::Demote, Action::ReleaseLeader],
                    "PostgreSQL does not answer and my lease is about to expire: stopping it",
                )
            } else {
                Decision::wait("PostgreSQL is running but not answering yet")
            }
        }
        LocalPg::Running {
            in_recovery: false, ..
        } => decide_running_primary(i, i_lead, writes_allowed, other_leader),
        LocalPg::Running {
            in_recovery: true,
            wal_position,
            ..
        } => decide_running_replica(i, i_lead, writes_allowed, other_leader, wal_position),
    };
    if !prelude.is_empty() && !matches!(decision.actions.first(), Some(Action::Halt)) {
        prelude.append(&mut decision.actions);
        decision.actions = prelude;
    }
    let decision = with_ttl_change(i, decision);
    if i.store_reachable {
        decision
    } else {
        without_store(decision)
    }
}

/// The cluster's `ttl` changed: the keys move to a lease of the new length
/// first — unless writes must stop now or the member halts, which come first.
fn with_ttl_change(i: &Inputs, decision: Decision) -> Decision {
    let Some(ttl) = i
        .view
        .config
        .as_ref()
        .map(DynamicConfig::ttl)
        .filter(|ttl| *ttl != i.lease_ttl)
    else {
        return decision;
    };
    if decision
        .actions
        .iter()
        .any(|a| matches!(a, Action::Demote | Action::Halt))
    {
        return decision;
    }
    Decision::new(
        vec![Action::ApplyTtl { ttl }],
        format!(
            "ttl is {}s in the cluster configuration, my lease {}s: moving my keys to a lease \
             of the new length",
            ttl.as_secs(),
            i.lease_ttl.as_secs()
        ),
    )
}

/// A restart asked for by an operator: does PostgreSQL come back as the
/// primary? Only if it ran as one, this member leads, and its lease allows
/// writes (invariant 1); otherwise as a standby.
pub fn restart_as_primary(ran_as_primary: bool, leading: bool, lease_allows_writes: bool) -> bool {
    ran_as_primary && leading && lease_allows_writes
}

/// The store did not answer: keep the actions up to the first that needs
/// it (nothing after it may run without it), and say so.
fn without_store(decision: Decision) -> Decision {
    let Some(cut) = decision.actions.iter().position(Action::needs_store) else {
        return decision;
    };
    let kept = decision.actions[..cut].to_vec();
    let reason = if kept.is_empty() {
        format!(
            "etcd does not answer: waiting, read-only at most (would otherwise: {})",
            decision.reason
        )
    } else {
        format!(
            "etcd does not answer: only what needs no etcd (would otherwise: {})",
            decision.reason
        )
    };
    Decision::new(kept, reason)
}

fn decide_empty(i: &Inputs, i_lead: bool, other_leader: Option<String>) -> Decision {
    if i_lead {
        return Decision::new(
            vec![Action::ReleaseLeader],
            "my data directory is empty but I hold the leader key: releasing it",
        );
    }
    match (&i.view.initialize, other_leader) {
        (None, _) if i.tags.nofailover => {
            Decision::wait("cluster not initialized; nofailover members do not bootstrap")
        }
        (None, _) if i.bootstrap_failed => Decision::wait(
            "cluster not initialized; my bootstrap from a backup failed (the error is \
             logged above): fix [bootstrap_from] and restart pgpilot to try again",
        ),
        (None, _) if i.bootstrap_retry.is_some() => {
            let (left, why) = i.bootstrap_retry.expect("checked");
            Decision::wait(format!(
                "cluster not initialized; my last bootstrap failed ({why}): trying again in {}s",
                left.as_secs().max(1)
            ))
        }
        (None, _) => Decision::new(
            vec![Action::Bootstrap],
            "cluster not initialized: racing to bootstrap it",
        ),
        (Some(s), _) if s.is_empty() => Decision::wait("waiting for the leader to bootstrap"),
        (Some(_), Some(leader)) => {
            let running = i
                .view
                .member(&leader)
                .is_some_and(|m| m.status.state == PgState::Running);
            if running {
                Decision::new(
                    vec![Action::CloneFrom {
                        member: leader.clone(),
                    }],
                    format!("creating a replica from leader {leader}"),
                )
            } else {
                Decision::wait(format!(
                    "waiting for leader {leader} to run before cloning it"
                ))
            }
        }
        (Some(_), None) => Decision::wait("cluster initialized but no leader to clone from"),
    }
}

/// Another member runs PostgreSQL and could take over from us.
fn failover_possible(i: &Inputs) -> bool {
    i.view.members.iter().any(|m| {
        m.name != i.me
            && m.status.state == PgState::Running
            && !m.status.tags.nofailover
            && m.status.tags.failover_priority > 0
    })
}

fn decide_stopped(
    i: &Inputs,
    i_lead: bool,
    writes_allowed: bool,
    other_leader: Option<String>,
) -> Decision {
    if i_lead {
        if !writes_allowed {
            // Read-only is always safe (invariant 1): reads keep working
            // while the lease is settled.
            return Decision::new(
                vec![Action::StartReplica { leader: None }, Action::ReleaseLeader],
                "PostgreSQL is down and my lease is about to expire: starting it read-only \
                 and giving up the leader key",
            );
        }
        let down_for = i
            .primary_down_since
            .map(|since| i.now.saturating_duration_since(since))
            .unwrap_or_default();
        let limit = std::time::Duration::from_secs(i.dynamic.primary_start_timeout);
        if down_for >= limit && failover_possible(i) {
            return Decision::new(
                vec![Action::ReleaseLeader],
                format!(
                    "PostgreSQL did not come back within primary_start_timeout ({}s): \
                     giving up the leader key so a replica takes over",
                    i.dynamic.primary_start_timeout
                ),
            );
        }
        return Decision::new(
            vec![Action::StartPrimary],
            "PostgreSQL is down and I hold the leader key: restarting it as primary",
        );
    }
    let Some(leader) = other_leader else {
        // Never as primary on its own: as a standby it may still win a race
        // (it may well hold the most WAL), through the key like anyone else.
        return Decision::new(
            vec![Action::StartReplica { leader: None }],
            "starting PostgreSQL as a replica; no leader yet",
        );
    };
    if let Some(stopped) = &i.stopped_as {
        let leader_timeline = leader_timeline(i, &leader);
        if stopped.was_primary && leader_timeline <= stopped.timeline {
            // A new leader is always on a later timeline than a former
            // primary; until it has published it, the divergence check
            // would compare against stale data.
            return Decision::wait(format!(
                "former primary: waiting for leader {leader} to publish its new timeline before rejoining"
            ));
        }
        if stopped.was_primary && super::rejoin::diverged(stopped, &i.view.history) {
            return rewind_onto(i, &leader, None);
        }
    }
    Decision::new(
        vec![Action::StartReplica {
            leader: Some(leader.clone()),
        }],
        format!("starting PostgreSQL as a replica of {leader}"),
    )
}

/// The timeline `leader` runs on: its own report, else the cluster's.
fn leader_timeline(i: &Inputs, leader: &str) -> u32 {
    i.view
        .member(leader)
        .and_then(|m| m.status.timeline)
        .unwrap_or_else(|| i.view.timeline())
}

/// This member holds WAL past `leader`'s switch point: rewind it onto the
/// leader's timeline (after `first`, which stops it) and start it as its
/// replica, or say why it waits.
fn rewind_onto(i: &Inputs, leader: &str, first: Option<Action>) -> Decision {
    if !i.dynamic.postgresql.use_pg_rewind {
        return Decision::wait(format!(
            "this member diverged from leader {leader} and use_pg_rewind is off: \
             reinitialize this member"
        ));
    }
    if i.rewind_failed {
        return Decision::wait(format!(
            "this member diverged from leader {leader} and pg_rewind failed: \
             reinitialize this member (pgpilot ctl reinit)"
        ));
    }
    let mut actions: Vec<Action> = first.into_iter().collect();
    actions.push(Action::Rewind {
        leader: leader.to_string(),
    });
    actions.push(Action::StartReplica {
        leader: Some(leader.to_string()),
    });
    Decision::new(
        actions,
        format!("rejoining leader {leader}: rewinding this member first, its history diverged"),
    )
}

fn decide_running_primary(
    i: &Inputs,
    i_lead: bool,
    writes_allowed: bool,
    other_leader: Option<String>,
) -> Decision {
    let paused = i.dynamic.pause;
    if i_lead {
        if !writes_allowed && !paused {
            return Decision::new(
                vec![Action::Demote],
                "demoting: my leader lease could not be renewed in time (invariant 1)",
            );
        }
        if let Some(request) = &i.view.failover {
            return decide_switchover(i, request);
        }
        let reason = if paused {
            "maintenance mode: I am the leader with the lock"
        } else {
            "no action: I am the leader with the lock"
        };
        return Decision::new(vec![Action::LeaderChores], reason);
    }
    if let Some(leader) = other_leader {
        if paused {
            return Decision::wait(format!(
                "maintenance mode: {leader} holds the leader key but I am left running as primary"
            ));
        }
        return Decision::new(
            vec![Action::Demote],
            format!("demoting: {leader} holds the leader key"),
        );
    }
    // A running primary with no leader key: it is the natural candidate,
    // unless a newer timeline exists (it would be a stale former primary).
    if let LocalPg::Running { timeline, .. } = i.pg {
        if timeline < i.view.timeline() && !paused {
            return Decision::new(
                vec![Action::Demote],
                format!(
                    "demoting: my timeline {timeline} is behind the cluster's {}",
                    i.view.timeline()
                ),
            );
        }
    }
    Decision::new(
        vec![Action::AcquireLeader, Action::LeaderChores],
        "no leader: taking the key as the running primary",
    )
}

/// The leader and a pending switchover request.
fn decide_switchover(i: &Inputs, request: &FailoverRequest) -> Decision {
    let chores = |reason: String| Decision::new(vec![Action::LeaderChores], reason);
    if request.leader.as_deref().is_some_and(|l| l != i.me) {
        // Addressed to a former leader: it was carried out (we are the result) or is stale.
        return Decision::new(
            vec![Action::LeaderChores, Action::ClearFailover],
            "switchover to me is complete: clearing the request",
        );
    }
    if let Some(at) = request.scheduled_at.as_deref() {
        match crate::timestamp::parse_timestamp(at).ok() {
            Some(when) if when > i.wall_now => {
                return chores(format!("switchover scheduled at {at}"));
            }
            Some(_) => {}
            None => {
                return Decision::new(
                    vec![Action::LeaderChores, Action::ClearFailover],
                    format!("dropping switchover request with unreadable scheduled_at {at:?}"),
                )
            }
        }
    }
    if i.dynamic.pause && request.member.is_none() {
        return Decision::new(
            vec![Action::LeaderChores, Action::ClearFailover],
            "maintenance mode: a switchover needs a named candidate; dropping the request",
        );
    }
    let candidate_ok = |name: &str| {
        i.view.member(name).is_some_and(|m| {
            m.status.state == PgState::Running
                && m.status.role == Role::Replica
                && sync_allows(i, name)
        })
    };
    match &request.member {
        Some(candidate) if !candidate_ok(candidate) => Decision::new(
            vec![Action::LeaderChores, Action::ClearFailover],
            format!("switchover candidate {candidate} is not a running eligible replica: dropping the request"),
        ),
        Some(candidate) => Decision::new(
            vec![Action::Handover {
                candidate: Some(candidate.clone()),
            }],
            format!("switchover: handing the leader key over to {candidate}"),
        ),
        None => {
            let any = i.view.members.iter().any(|m| {
                m.name != i.me
                    && candidate_ok(&m.name)
                    && !m.status.tags.nofailover
                    && m.status.tags.failover_priority > 0
            });
            if any {
                Decision::new(
                    vec![Action::Handover { candidate: None }],
                    "switchover: handing the leader key over to the best replica",
                )
            } else {
                Decision::new(
                    vec![Action::LeaderChores, Action::ClearFailover],
                    "switchover impossible: no running eligible replica; dropping the request",
                )
            }
        }
    }
}

/// In synchronous mode only the members named in `sync` may take over after
/// a failure (invariant 2); without a `sync` key nobody is restricted yet.
fn sync_allows(i: &Inputs, member: &str) -> bool {
    if !i.dynamic.synchronous_mode {
        return true;
    }
    match &i.view.sync {
        Some(sync) if sync.leader.is_some() => sync.allows(member),
        _ => true,
    }
}

fn decide_running_replica(
    i: &Inputs,
    i_lead: bool,
    writes_allowed: bool,
    other_leader: Option<String>,
    wal_position: u64,
) -> Decision {
    let paused = i.dynamic.pause;
    if i_lead {
        if writes_allowed {
            return Decision::new(
                vec![Action::Promote, Action::LeaderChores],
                "I hold the leader key: promoting",
            );
        }
        return Decision::new(
            vec![Action::ReleaseLeader],
            "lease about to expire before promotion: releasing",
        );
    }
    if let Some(leader) = other_leader {
        // A former primary brought back read-only by the fence: WAL past the
        // switch point never streams, so it is rewound first.
        // Only for a standby with nothing received: a replica that streamed
        // may report an older timeline than the WAL it holds.
        if let (LocalPg::Running { timeline, .. }, true) = (&i.pg, i.never_received) {
            let timeline = *timeline;
            if leader_timeline(i, &leader) > timeline
                && super::rejoin::diverged_at(timeline, wal_position, &i.view.history)
                && !paused
            {
                return rewind_onto(i, &leader, Some(Action::StopStandby));
            }
        }
        if i.following == Some(leader.as_str()) {
            return Decision::wait(format!("no action: streaming from leader {leader}"));
        }
        return Decision::new(
            vec![Action::Follow {
                leader: leader.clone(),
            }],
            format!("following new leader {leader}"),
        );
    }
    let take_over = |reason: &str| {
        Decision::new(
            vec![Action::AcquireLeader, Action::Promote],
            format!("no leader and I am the healthiest member: taking over{reason}"),
        )
    };
    // A switchover or manual failover names who takes over.
    if let Some(candidate) = i.view.failover.as_ref().and_then(|f| f.member.as_deref()) {
        if candidate == i.me {
            return Decision::new(
                vec![
                    Action::AcquireLeader,
                    Action::Promote,
                    Action::ClearFailover,
                    Action::LeaderChores,
                ],
                "I am the switchover/failover candidate: taking over",
            );
        }
        let candidate_running = i
            .view
            .member(candidate)
            .is_some_and(|m| m.status.state == PgState::Running);
        if candidate_running {
            return Decision::wait(format!(
                "no leader: deferring to switchover candidate {candidate}"
            ));
        }
    }
    if paused {
        return Decision::wait("maintenance mode: no leader, but nobody is promoted automatically");
    }
    if !sync_allows(i, i.me) {
        return Decision::wait(
            "no leader, not racing: I am not a synchronous standby (invariant 2)",
        );
    }
    match healthiest(i, wal_position) {
        Ok(()) if i.not_streamed => take_over(
            " (I have not streamed from a leader since I was made, \
             but no other reachable candidate has either)",
        )
        .then(Action::LeaderChores),
        Ok(()) => take_over("").then(Action::LeaderChores),
        Err(why) => Decision::wait(format!("no leader, not racing: {why}")),
    }
}

/// Invariant 3: race only if no reachable member is a better candidate.
fn healthiest(i: &Inputs, mine: u64) -> Result<(), String> {
    if i.tags.nofailover || i.tags.failover_priority == 0 {
        return Err("I am not allowed to promote (nofailover)".into());
    }
    // The freshest leader position anyone saw: the one the leader last wrote
    // to the store, or what a member received from it since (any member,
    // a nofailover one too: its WAL came from the leader).
    let known = i
        .peers
        .iter()
        .filter(|p| p.name != i.me)
        .map(|p| p.wal_position)
        .fold(i.view.status.optime, u64::max);
    if known > mine && known - mine > i.dynamic.maximum_lag_on_failover {
        return Err(format!(
            "my WAL position is {} bytes behind the last known leader position (maximum_lag_on_failover {}; \
             the freshest the store or a member has)",
            known - mine,
            i.dynamic.maximum_lag_on_failover
        ));
    }
    if let Some(peer) = i
        .peers
        .iter()
        .find(|p| i.not_streamed && streamed_candidate(i, p))
    {
        return Err(format!(
            "I have not streamed from a leader since I was made (cloned or restored) and {} has",
            peer.name
        ));
    }
    for peer in i.peers.iter().filter(|p| p.name != i.me) {
        if peer.role == Role::Primary {
            return Err(format!("primary {} is still alive", peer.name));
        }
        if !candidate(i, peer) {
            continue;
        }
        if peer.not_streamed && !i.not_streamed {
            // It holds back itself while a candidate that streamed (me) is
            // there: however far its copy's WAL reaches, it does not win.
            continue;
        }
        if peer.wal_position > mine {
            return Err(format!(
                "{} is ahead ({} > {mine})",
                peer.name, peer.wal_position
            ));
        }
        if peer.wal_position == mine && peer.tags.failover_priority > i.tags.failover_priority {
            return Err(format!(
                "{} is as far and has a higher failover_priority",
                peer.name
            ));
        }
    }
    Ok(())
}

/// A peer that may win a leader race.
fn candidate(i: &Inputs, peer: &PeerReport) -> bool {
    !peer.tags.nofailover && peer.tags.failover_priority > 0 && sync_allows(i, &peer.name)
}

/// A running replica, allowed to win a race, that has streamed from a
/// leader since it was made.
fn streamed_candidate(i: &Inputs, peer: &PeerReport) -> bool {
    peer.name != i.me && peer.role == Role::Replica && !peer.not_streamed && candidate(i, peer)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
