//! Role and health checks for load balancers: `/primary`, `/replica?lag=`,
//! `/read-only`, `/health`, `/liveness`, `/readiness` and their aliases.
//! 200 when this member has that role and is healthy, 503 otherwise; the
//! body (GET only) is the member status.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use tokio::time::Instant;

use super::{json_or_status, ApiState};
use crate::cluster::{PgState, Role};
use crate::dcs::Dcs;
use crate::status::NodeStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Holds the leader lease and runs as a writable primary.
    Primary,
    /// Holds the leader lease (primary or standby leader).
    Leader,
    StandbyLeader,
    Replica,
    ReadOnly,
    Synchronous,
    Asynchronous,
    Health,
    Liveness,
    Readiness,
}

pub const ROUTES: &[(&str, Check)] = &[
    ("/", Check::Primary),
    ("/primary", Check::Primary),
    ("/master", Check::Primary),
    ("/read-write", Check::Primary),
    ("/leader", Check::Leader),
    ("/standby-leader", Check::StandbyLeader),
    ("/standby_leader", Check::StandbyLeader),
    ("/replica", Check::Replica),
    ("/read-only", Check::ReadOnly),
    ("/synchronous", Check::Synchronous),
    ("/sync", Check::Synchronous),
    ("/asynchronous", Check::Asynchronous),
    ("/async", Check::Asynchronous),
    ("/health", Check::Health),
    ("/liveness", Check::Liveness),
    ("/readiness", Check::Readiness),
];

/// Parse `16kB`, `10MB`, `1GB` or plain bytes (PostgreSQL's units, 1024-based).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "k" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Everything a check needs, gathered once per request.
pub struct Facts<'a> {
    pub status: &'a NodeStatus,
    pub holds_lease: bool,
    /// The leader's last known WAL position, for `?lag=`.
    pub leader_position: u64,
    /// Is this member listed as a synchronous standby?
    pub in_sync: bool,
    pub cycle_overdue: bool,
    pub dcs_seen: bool,
    pub paused: bool,
}

/// The pure verdict for one check; `Err` carries why a query is malformed.
pub fn verdict(check: Check, f: &Facts, query: &BTreeMap<String, String>) -> Result<bool, String> {
    let running = f.status.state == PgState::Running;
    let primary = running && f.status.role == Role::Primary;
    let replica_ok = || -> Result<bool, String> {
        if !(running && f.status.role == Role::Replica) || f.status.tags.noloadbalance {
            return Ok(false);
        }
        if let Some(lag) = query.get("lag") {
            let max = parse_size(lag).ok_or_else(|| {
                format!("lag={lag:?} is not a size: use bytes or a unit such as 16kB, 10MB, 1GB")
            })?;
            let replayed = f
                .status
                .xlog
                .as_ref()
                .and_then(|x| x.replayed_location.or(x.received_location))
                .unwrap_or(0);
            if f.leader_position.saturating_sub(replayed) > max {
                return Ok(false);
            }
        }
        for (key, wanted) in query {
            if let Some(tag) = key.strip_prefix("tag_") {
                let tags = serde_json::to_value(&f.status.tags).unwrap_or_default();
                let actual = tags.get(tag).map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                if actual.as_deref() != Some(wanted.as_str()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    Ok(match check {
        Check::Primary => primary && f.holds_lease,
        Check::Leader => running && f.holds_lease,
        // Standby clusters are not supported yet: nobody is a standby leader.
        Check::StandbyLeader => false,
        Check::Replica => replica_ok()?,
        Check::ReadOnly => (primary && f.holds_lease) || replica_ok()?,
        Check::Synchronous => f.in_sync && replica_ok()?,
        Check::Asynchronous => !f.in_sync && replica_ok()?,
        Check::Health => running,
        Check::Liveness => f.paused || !f.cycle_overdue,
        Check::Readiness => f.holds_lease || (running && f.dcs_seen),
    })
}

pub async fn respond<D: Dcs>(
    state: ApiState<D>,
    method: Method,
    query: BTreeMap<String, String>,
    check: Check,
) -> Response {
    let status = state.node_status().await;
    let snap = state.shared.snapshot();
    let now = Instant::now();
    let ttl = snap.dynamic.ttl();
    // The loop is overdue when it has not finished a cycle in ttl (primary)
    // or twice that (others): it is stuck, whatever PostgreSQL does.
    let allowance = if status.role == Role::Primary {
        ttl
    } else {
        ttl * 2
    };
    let facts = Facts {
        status: &status,
        holds_lease: state.shared.holds_leader_lease(now),
        leader_position: snap.view.leader_position(),
        in_sync: snap.view.sync.as_ref().is_some_and(|sync| {
            sync.leader.is_some()
                && sync.leader.as_deref() == snap.view.leader_name()
                && sync
                    .standbys()
                    .contains(&state.shared.config().cluster.name)
        }),
        cycle_overdue: now.duration_since(snap.last_cycle) > allowance + snap.dynamic.loop_wait(),
        dcs_seen: snap.dcs_last_seen.is_some(),
        paused: snap.dynamic.pause,
    };
    match verdict(check, &facts, &query) {
        Ok(true) => json_or_status(&method, StatusCode::OK, &status),
        Ok(false) => json_or_status(&method, StatusCode::SERVICE_UNAVAILABLE, &status),
        Err(message) => {
            use axum::response::IntoResponse;
            (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tags;
    use crate::status::{PatroniInfo, Xlog};

    fn status(role: Role, state: PgState, replayed: Option<u64>) -> NodeStatus {
        NodeStatus {
            state,
            postmaster_start_time: None,
            role,
            server_version: Some(150000),
            xlog: Some(Xlog {
                location: None,
                received_location: replayed,
                replayed_location: replayed,
                paused: None,
            }),
            timeline: Some(1),
            replication: vec![],
            replication_state: None,
            cluster_unlocked: false,
            pause: false,
            dcs_last_seen: None,
            tags: Tags::default(),
            database_system_identifier: None,
            pending_restart: false,
            not_streamed_since_clone: false,
            patroni: PatroniInfo {
                version: "x".into(),
                scope: "s".into(),
                name: "n".into(),
            },
        }
    }

    fn facts(status: &NodeStatus, holds_lease: bool) -> Facts<'_> {
        Facts {
            status,
            holds_lease,
            leader_position: 100_000,
            in_sync: false,
            cycle_overdue: false,
            dcs_seen: true,
            paused: false,
        }
    }

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn primary_needs_the_lease() {
        let s = status(Role::Primary, PgState::Running, None);
        assert!(verdict(Check::Primary, &facts(&s, true), &q(&[])).unwrap());
        assert!(!verdict(Check::Primary, &facts(&s, false), &q(&[])).unwrap());
        assert!(!verdict(Check::Replica, &facts(&s, true), &q(&[])).unwrap());
        assert!(verdict(Check::ReadOnly, &facts(&s, true), &q(&[])).unwrap());
    }

    #[test]
    fn replica_lag_filter() {
        let s = status(Role::Replica, PgState::Running, Some(100_000 - 20_000));
        let f = facts(&s, false);
        assert!(verdict(Check::Replica, &f, &q(&[])).unwrap());
        assert!(!verdict(Check::Replica, &f, &q(&[("lag", "16kB")])).unwrap());
        assert!(verdict(Check::Replica, &f, &q(&[("lag", "1MB")])).unwrap());
        assert!(verdict(Check::Replica, &f, &q(&[("lag", "junk")])).is_err());
        assert!(!verdict(Check::Primary, &f, &q(&[])).unwrap());
        assert!(verdict(Check::Asynchronous, &f, &q(&[])).unwrap());
        assert!(!verdict(Check::Synchronous, &f, &q(&[])).unwrap());
    }

    #[test]
    fn replica_tag_filter() {
        let s = status(Role::Replica, PgState::Running, Some(100_000));
        let f = facts(&s, false);
        assert!(verdict(Check::Replica, &f, &q(&[("tag_nofailover", "false")])).unwrap());
        assert!(!verdict(Check::Replica, &f, &q(&[("tag_nofailover", "true")])).unwrap());
    }

    #[test]
    fn stopped_member_is_unhealthy_but_may_be_live() {
        let s = status(Role::Replica, PgState::Stopped, None);
        let f = facts(&s, false);
        assert!(!verdict(Check::Health, &f, &q(&[])).unwrap());
        assert!(verdict(Check::Liveness, &f, &q(&[])).unwrap());
        assert!(!verdict(Check::Readiness, &f, &q(&[])).unwrap());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16kB"), Some(16384));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("1XB"), None);
    }
}
