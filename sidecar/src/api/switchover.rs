//! `POST /switchover`, `DELETE /switchover` and `POST /failover`, with
//! Patroni's checks, status codes and messages.
//!
//! The API only validates and writes the request into the store's
//! `failover` key; the leader's HA loop carries it out (a graceful
//! hand-over, see `ha::decide::decide_switchover`), the named candidate
//! takes the key (the others defer to it) and clears the request. For an
//! immediate request the API then watches the store until the leader key
//! names someone else (200), the request vanished with the leader unchanged
//! (503 `... failed`), or time ran out (503 `... status unknown`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::config::{load_fresh, parse_body};
use super::ApiState;
use crate::client::base_url;
use crate::cluster::{ClusterView, FailoverRequest, PgState, Role};
use crate::dcs::Dcs;
use crate::dynamic::DynamicConfig;
use crate::status::NodeStatus;
use crate::timestamp::{format_timestamp, parse_timestamp, TimestampError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Switchover,
    Failover,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Switchover => "switchover",
            Kind::Failover => "failover",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Kind::Switchover => "Switchover",
            Kind::Failover => "Failover",
        }
    }
    /// "switched" / "failed", as in `Successfully switched over to "x"`.
    fn past(self) -> &'static str {
        match self {
            Kind::Switchover => "switched",
            Kind::Failover => "failed",
        }
    }
}

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub leader: Option<String>,
    pub candidate: Option<String>,
    pub scheduled_at: Option<String>,
}

/// A refusal: status and Patroni's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// Read `leader` (or legacy `master`), `candidate` (or `member`) and
/// `scheduled_at`; empty strings count as absent (as in Patroni).
pub fn parse_ask(body: &Value) -> Result<Ask, Refused> {
    let field = |names: &[&str]| -> Result<Option<String>, Refused> {
        for name in names {
            match body.get(*name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.trim().is_empty() => continue,
                Some(Value::String(s)) => return Ok(Some(s.trim().to_string())),
                Some(other) => {
                    return Err(refused(
                        StatusCode::BAD_REQUEST,
                        format!("{name} must be a string, not {other}"),
                    ))
                }
            }
        }
        Ok(None)
    };
    Ok(Ask {
        leader: field(&["leader", "master"])?,
        candidate: field(&["candidate", "member"])?,
        scheduled_at: field(&["scheduled_at"])?,
    })
}

/// A request that passed every check that needs no member to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `failover` with a leader named becomes a switchover (as in Patroni).
    pub kind: Kind,
    pub request: FailoverRequest,
    pub scheduled: Option<u64>,
    /// Members to ask whether they can take over (immediate requests).
    pub probe: Vec<String>,
    /// The leader when the request was accepted.
    pub old_leader: Option<String>,
}

/// Patroni's checks, in Patroni's order. `now`: epoch seconds.
pub fn plan(
    kind: Kind,
    ask: &Ask,
    view: &ClusterView,
    dynamic: &DynamicConfig,
    now: u64,
) -> Result<Plan, Refused> {
    let bad = |m: &str| refused(StatusCode::BAD_REQUEST, m);
    match kind {
        Kind::Failover if ask.candidate.is_none() => {
            return Err(bad(
                "Failover could be performed only to a specific candidate",
            ))
        }
        Kind::Switchover if ask.leader.is_none() => {
            return Err(bad(
                "Switchover could be performed only from a specific leader",
            ))
        }
        _ => {}
    }
    let paused = dynamic.pause;
    let mut scheduled = None;
    if let Some(at) = &ask.scheduled_at {
        if kind == Kind::Failover {
            return Err(bad("Failover can't be scheduled"));
        }
        if paused {
            return Err(bad("Can't schedule switchover in the paused state"));
        }
        match parse_timestamp(at) {
            Err(TimestampError::NoTimezone) => {
                return Err(bad(
                    "Timezone information is mandatory for the scheduled switchover",
                ))
            }
            Err(TimestampError::Unparsable) => {
                return Err(refused(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
                ))
            }
            Ok(t) if t < now => {
                return Err(refused(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Cannot schedule switchover in the past",
                ))
            }
            Ok(t) => scheduled = Some(t),
        }
    }
    if paused && ask.candidate.is_none() {
        return Err(bad(
            "Switchover is possible only to a specific candidate in a paused state",
        ));
    }
    let kind = if kind == Kind::Failover && ask.leader.is_some() {
        tracing::warn!("failover request names the leader: performing a switchover instead");
        Kind::Switchover
    } else {
        kind
    };
    if ask.leader.is_some() && ask.leader == ask.candidate {
        return Err(bad("Switchover target and source are the same"));
    }

    // Patroni's is_failover_possible (412); also for scheduled requests,
    // except the live probe of the candidates.
    let not_possible = |m: String| refused(StatusCode::PRECONDITION_FAILED, m);
    let leader_now = view.leader_name();
    if let Some(leader) = &ask.leader {
        if leader_now != Some(leader.as_str()) {
            return Err(not_possible("leader name does not match".into()));
        }
    }
    let sync_standbys: Option<Vec<String>> = dynamic.synchronous_mode.then(|| {
        view.sync
            .as_ref()
            .filter(|s| s.leader.is_some() && s.leader.as_deref() == leader_now)
            .map(|s| s.standbys())
            .unwrap_or_default()
    });
    let probe = match &ask.candidate {
        Some(candidate) => {
            // A failover with no leader may pick an asynchronous replica
            // (risking the commits only the lost leader had); with a live
            // leader that leader would refuse it, so refuse it here.
            if let Some(sync) = &sync_standbys {
                if (kind == Kind::Switchover || leader_now.is_some()) && !sync.contains(candidate) {
                    return Err(not_possible(
                        "candidate name does not match with sync_standby".into(),
                    ));
                }
            }
            if view.member(candidate).is_none() {
                return Err(not_possible("candidate does not exists".into()));
            }
            if leader_now == Some(candidate.as_str()) {
                return Err(not_possible(format!(
                    "{} is not possible: {candidate} is already the leader",
                    kind.name()
                )));
            }
            vec![candidate.clone()]
        }
        None => {
            let mut others: Vec<String> = view
                .members
                .iter()
                .filter(|m| Some(m.name.as_str()) != leader_now)
                .map(|m| m.name.clone())
                .collect();
            if let Some(sync) = &sync_standbys {
                others.retain(|m| sync.contains(m));
                if others.is_empty() {
                    return Err(not_possible(format!(
                        "{} is not possible: can not find sync_standby",
                        kind.name()
                    )));
                }
            } else if others.is_empty() {
                return Err(not_possible(format!(
                    "{} is not possible: cluster does not have members except leader",
                    kind.name()
                )));
            }
            others
        }
    };
    Ok(Plan {
        kind,
        request: FailoverRequest {
            // A failover aimed at a live leader is addressed to it, so the
            // hand-over is unambiguous even if leadership moves meanwhile.
            leader: ask
                .leader
                .clone()
                .or_else(|| leader_now.map(str::to_string)),
            member: ask.candidate.clone(),
            scheduled_at: scheduled.map(format_timestamp),
        },
        scheduled,
        probe,
        old_leader: leader_now.map(str::to_string),
    })
}

/// Can the member that answered with `status` take over? `Err`: why not.
pub fn can_take_over(status: &NodeStatus) -> Result<(), String> {
    if status.state != PgState::Running {
        return Err(format!("PostgreSQL is {}", status.state.as_str()));
    }
    if status.role != Role::Replica {
        return Err(format!("it runs as {}", status.role.as_str()));
    }
    if status.tags.nofailover || status.tags.failover_priority == 0 {
        return Err("it is not allowed to promote (nofailover)".into());
    }
    Ok(())
}

/// Where an accepted immediate request stands, from one read of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// 200 with this message.
    Done(String),
    /// 503 `<Kind> failed`: the request is gone, leadership did not move.
    Failed,
    Pending,
}

pub fn progress(
    kind: Kind,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    view: &ClusterView,
) -> Progress {
    if let Some(new) = view.leader_name() {
        if Some(new) != old_leader {
            return Progress::Done(match candidate {
                Some(c) if c != new => format!(
                    "{}{} over to \"{new}\" instead of \"{c}\"",
                    kind.past()[..1].to_uppercase(),
                    &kind.past()[1..]
                ),
                _ => format!("Successfully {} over to \"{new}\"", kind.past()),
            });
        }
    }
    if view.failover.is_none() && view.leader_name() == old_leader {
        return Progress::Failed;
    }
    Progress::Pending
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn post_switchover<D: Dcs>(State(state): State<ApiState<D>>, body: Bytes) -> Response {
    handle(state, Kind::Switchover, body).await
}

pub async fn post_failover<D: Dcs>(State(state): State<ApiState<D>>, body: Bytes) -> Response {
    handle(state, Kind::Failover, body).await
}

async fn handle<D: Dcs>(state: ApiState<D>, kind: Kind, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let ask = match parse_ask(&body) {
        Ok(a) => a,
        Err(r) => return text(r.status, r.message),
    };
    tracing::info!(
        leader = ?ask.leader, candidate = ?ask.candidate, scheduled_at = ?ask.scheduled_at,
        "received {} request", kind.name()
    );
    let view = match load_fresh(&state).await {
        Ok(v) => v,
        Err(m) => return text(StatusCode::SERVICE_UNAVAILABLE, m),
    };
    let dynamic = view
        .config
        .clone()
        .unwrap_or_else(|| state.shared.dynamic());
    let plan = match plan(kind, &ask, &view, &dynamic, epoch_now()) {
        Ok(p) => p,
        Err(r) => {
            tracing::info!("{} refused: {}", kind.name(), r.message);
            return text(r.status, r.message);
        }
    };
    let kind = plan.kind;
    if plan.scheduled.is_none() {
        if let Err(why) = probe(&state, &view, &plan.probe).await {
            let message = format!(
                "{} is not possible: no good candidates have been found ({why})",
                kind.name()
            );
            tracing::info!("{} refused: {message}", kind.name());
            return text(StatusCode::PRECONDITION_FAILED, message);
        }
    }
    if let Err(e) = state.dcs.write_failover(Some(&plan.request)).await {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed to write failover key into DCS: {e}"),
        );
    }
    state.shared.wake.notify_one();
    if let Some(at) = &plan.request.scheduled_at {
        tracing::info!(at = %at, "{} scheduled", kind.name());
        return text(StatusCode::ACCEPTED, format!("{} scheduled", kind.title()));
    }
    let limit = Duration::from_secs(2 * dynamic.loop_wait.max(10));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Ok(view)) = tokio::time::timeout(Duration::from_secs(2), state.dcs.load()).await {
            match progress(
                kind,
                plan.old_leader.as_deref(),
                plan.request.member.as_deref(),
                &view,
            ) {
                Progress::Done(message) => return text(StatusCode::OK, message),
                Progress::Failed => {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{} failed", kind.title()),
                    )
                }
                Progress::Pending => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} status unknown", kind.title()),
            );
        }
    }
}

/// Ask the candidates' APIs, in parallel, whether one can take over now.
async fn probe<D: Dcs>(
    state: &ApiState<D>,
    view: &ClusterView,
    names: &[String],
) -> Result<(), String> {
    // The TLS settings in force (a reload may have turned TLS on).
    let current = crate::client::ApiClient::for_member(&state.shared.config())
        .unwrap_or_else(|_| state.client.clone());
    let asks = names.iter().map(|name| {
        let client = current.clone();
        let url = view
            .member(name)
            .map(|m| format!("{}/patroni", base_url(&m.status.api_url)));
        async move {
            let verdict = match url {
                None => Err("not a member".to_string()),
                Some(url) => match client.get_json::<NodeStatus>(&url).await {
                    Ok(status) => can_take_over(&status),
                    Err(e) => Err(format!("not reachable: {e}")),
                },
            };
            (name.clone(), verdict)
        }
    });
    let verdicts = futures_util::future::join_all(asks).await;
    if verdicts.iter().any(|(_, v)| v.is_ok()) {
        return Ok(());
    }
    Err(verdicts
        .into_iter()
        .map(|(name, v)| format!("{name}: {}", v.err().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; "))
}

pub async fn delete_switchover<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    let view = match load_fresh(&state).await {
        Ok(v) => v,
        Err(m) => return text(StatusCode::SERVICE_UNAVAILABLE, m),
    };
    match &view.failover {
        Some(request) if request.scheduled_at.is_some() => {
            match state.dcs.write_failover(None).await {
                Ok(()) => {
                    tracing::info!(?request, "scheduled switchover deleted");
                    text(StatusCode::OK, "scheduled switchover deleted")
                }
                Err(e) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot delete the failover key: {e}"),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "no switchover is scheduled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{LeaderKey, Member, MemberStatus, SyncState};
    use crate::config::Tags;
    use serde_json::json;

    fn member(name: &str, role: Role) -> Member {
        Member {
            name: name.into(),
            status: MemberStatus {
                conn_url: "postgres://127.0.0.1:5432/postgres".into(),
                api_url: format!("http://127.0.0.1:80{}/patroni", &name[1..]),
                state: PgState::Running,
                role,
                version: "x".into(),
                xlog_location: None,
                received_location: None,
                replayed_location: None,
                timeline: Some(1),
                replication_state: None,
                tags: Tags::default(),
                pending_restart: false,
                postmaster_start_time: None,
            },
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            leader: Some(LeaderKey {
                name: "m1".into(),
                revision: 5,
                lease: 7,
            }),
            members: vec![
                member("m1", Role::Primary),
                member("m2", Role::Replica),
                member("m3", Role::Replica),
            ],
            ..Default::default()
        }
    }

    const NOW: u64 = 1_700_000_000;

    fn ask(leader: Option<&str>, candidate: Option<&str>, at: Option<&str>) -> Ask {
        Ask {
            leader: leader.map(str::to_string),
            candidate: candidate.map(str::to_string),
            scheduled_at: at.map(str::to_string),
        }
    }

    fn refusal(kind: Kind, a: Ask, v: &ClusterView, d: &DynamicConfig) -> (u16, String) {
        let r = plan(kind, &a, v, d, NOW).unwrap_err();
        (r.status.as_u16(), r.message)
    }

    #[test]
    fn switchover_to_a_named_candidate() {
        let p = plan(
            Kind::Switchover,
            &ask(Some("m1"), Some("m2"), None),
            &view(),
            &DynamicConfig::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(p.probe, vec!["m2"]);
        assert_eq!(p.request.leader.as_deref(), Some("m1"));
        assert_eq!(p.request.member.as_deref(), Some("m2"));
        assert_eq!(p.old_leader.as_deref(), Some("m1"));
    }

    #[test]
    fn switchover_to_anyone_probes_every_other_member() {
        let p = plan(
            Kind::Switchover,
            &ask(Some("m1"), None, None),
            &view(),
            &DynamicConfig::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(p.probe, vec!["m2", "m3"]);
    }

    #[test]
    fn bad_requests_400() {
        let d = DynamicConfig::default();
        let v = view();
        assert_eq!(
            refusal(Kind::Switchover, ask(None, Some("m2"), None), &v, &d),
            (
                400,
                "Switchover could be performed only from a specific leader".into()
            )
        );
        assert_eq!(
            refusal(Kind::Failover, ask(Some("m1"), None, None), &v, &d),
            (
                400,
                "Failover could be performed only to a specific candidate".into()
            )
        );
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), Some("m1"), None), &v, &d),
            (400, "Switchover target and source are the same".into())
        );
        assert_eq!(
            refusal(
                Kind::Failover,
                ask(None, Some("m2"), Some("2030-01-01T00:00:00Z")),
                &v,
                &d
            ),
            (400, "Failover can't be scheduled".into())
        );
        assert_eq!(
            refusal(
                Kind::Switchover,
                ask(Some("m1"), None, Some("2030-01-01T00:00:00")),
                &v,
                &d
            ),
            (
                400,
                "Timezone information is mandatory for the scheduled switchover".into()
            )
        );
    }

    #[test]
    fn bad_schedules_422() {
        let d = DynamicConfig::default();
        let v = view();
        let (status, m) = refusal(
            Kind::Switchover,
            ask(Some("m1"), None, Some("next tuesday")),
            &v,
            &d,
        );
        assert_eq!(status, 422);
        assert!(m.starts_with("Unable to parse scheduled timestamp"), "{m}");
        assert_eq!(
            refusal(
                Kind::Switchover,
                ask(Some("m1"), None, Some("2001-01-01T00:00:00+00:00")),
                &v,
                &d
            ),
            (422, "Cannot schedule switchover in the past".into())
        );
    }

    #[test]
    fn not_possible_412() {
        let d = DynamicConfig::default();
        let v = view();
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m2"), None, None), &v, &d),
            (412, "leader name does not match".into())
        );
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), Some("m9"), None), &v, &d),
            (412, "candidate does not exists".into())
        );
        assert_eq!(
            refusal(Kind::Failover, ask(None, Some("m1"), None), &v, &d),
            (
                412,
                "failover is not possible: m1 is already the leader".into()
            )
        );
        let alone = ClusterView {
            members: vec![member("m1", Role::Primary)],
            ..view()
        };
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), None, None), &alone, &d),
            (
                412,
                "switchover is not possible: cluster does not have members except leader".into()
            )
        );
    }

    #[test]
    fn synchronous_mode_restricts_candidates() {
        let d = DynamicConfig {
            synchronous_mode: true,
            ..Default::default()
        };
        let mut v = view();
        v.sync = Some(SyncState::new("m1", &["m3".to_string()]));
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), Some("m2"), None), &v, &d),
            (
                412,
                "candidate name does not match with sync_standby".into()
            )
        );
        let p = plan(Kind::Switchover, &ask(Some("m1"), None, None), &v, &d, NOW).unwrap();
        assert_eq!(p.probe, vec!["m3"]);
        v.sync = Some(SyncState::new("m1", &[]));
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), None, None), &v, &d),
            (
                412,
                "switchover is not possible: can not find sync_standby".into()
            )
        );
        // With no leader, a manual failover may pick an asynchronous replica.
        let mut leaderless = view();
        leaderless.leader = None;
        leaderless.sync = Some(SyncState::new("m1", &["m3".to_string()]));
        let p = plan(
            Kind::Failover,
            &ask(None, Some("m2"), None),
            &leaderless,
            &d,
            NOW,
        )
        .unwrap();
        assert_eq!(p.request.leader, None);
        assert_eq!(p.request.member.as_deref(), Some("m2"));
    }

    #[test]
    fn maintenance_mode() {
        let d = DynamicConfig {
            pause: true,
            ..Default::default()
        };
        let v = view();
        assert_eq!(
            refusal(Kind::Switchover, ask(Some("m1"), None, None), &v, &d),
            (
                400,
                "Switchover is possible only to a specific candidate in a paused state".into()
            )
        );
        assert_eq!(
            refusal(
                Kind::Switchover,
                ask(Some("m1"), Some("m2"), Some("2030-01-01T00:00:00Z")),
                &v,
                &d
            ),
            (400, "Can't schedule switchover in the paused state".into())
        );
        assert!(plan(
            Kind::Switchover,
            &ask(Some("m1"), Some("m2"), None),
            &v,
            &d,
            NOW
        )
        .is_ok());
    }

    #[test]
    fn failover_naming_the_leader_is_a_switchover() {
        let p = plan(
            Kind::Failover,
            &ask(Some("m1"), Some("m2"), None),
            &view(),
            &DynamicConfig::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(p.kind, Kind::Switchover);
    }

    #[test]
    fn scheduled_request_is_stored_in_utc() {
        let p = plan(
            Kind::Switchover,
            &ask(Some("m1"), Some("m2"), Some("2030-01-01T12:00:00+02:00")),
            &view(),
            &DynamicConfig::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            p.request.scheduled_at.as_deref(),
            Some("2030-01-01T10:00:00Z")
        );
        // The HA loop reads it back to the same instant.
        assert_eq!(parse_timestamp("2030-01-01T10:00:00Z").ok(), p.scheduled);
    }

    #[test]
    fn body_fields() {
        let a = parse_ask(&json!({"master": "m1", "member": "m2"})).unwrap();
        assert_eq!(a, ask(Some("m1"), Some("m2"), None));
        let a = parse_ask(&json!({"leader": "", "candidate": "m2"})).unwrap();
        assert_eq!(a.leader, None);
        assert_eq!(
            parse_ask(&json!({"leader": 3})).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn progress_of_a_switchover() {
        let mut v = view();
        v.failover = Some(FailoverRequest {
            leader: Some("m1".into()),
            member: Some("m2".into()),
            scheduled_at: None,
        });
        let p = |v: &ClusterView| progress(Kind::Switchover, Some("m1"), Some("m2"), v);
        assert_eq!(p(&v), Progress::Pending);
        v.leader = None;
        assert_eq!(p(&v), Progress::Pending);
        v.leader = Some(LeaderKey {
            name: "m2".into(),
            revision: 9,
            lease: 8,
        });
        assert_eq!(
            p(&v),
            Progress::Done("Successfully switched over to \"m2\"".into())
        );
        v.leader.as_mut().unwrap().name = "m3".into();
        assert_eq!(
            p(&v),
            Progress::Done("Switched over to \"m3\" instead of \"m2\"".into())
        );
        let mut v = view();
        v.failover = None;
        assert_eq!(p(&v), Progress::Failed);
    }

    #[test]
    fn candidates_must_be_running_replicas() {
        let mut s: NodeStatus = serde_json::from_value(json!({
            "state": "running", "role": "replica",
            "patroni": {"version": "x", "scope": "s", "name": "m2"}
        }))
        .unwrap();
        assert!(can_take_over(&s).is_ok());
        s.tags.nofailover = true;
        assert!(can_take_over(&s).unwrap_err().contains("nofailover"));
        s.tags.nofailover = false;
        s.state = PgState::Stopped;
        assert_eq!(can_take_over(&s).unwrap_err(), "PostgreSQL is stopped");
    }
}
