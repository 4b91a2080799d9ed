//! `/cluster`: every member with its role, state and lag, as Patroni shows
//! it. The same report feeds `pgpilot ctl list`.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::cluster::{ClusterView, PgState, Role};
use crate::config::Tags;
use crate::dcs::Dcs;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    /// leader, standby_leader, sync_standby or replica.
    pub role: String,
    /// running/stopped/... ; for streaming replicas their replication state.
    pub state: String,
    pub api_url: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Bytes behind the leader, or "unknown"; absent for the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<serde_json::Value>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub members: Vec<MemberReport>,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// A pending scheduled switchover (Patroni's `scheduled_switchover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_switchover: Option<ScheduledSwitchover>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSwitchover {
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Build the report from one snapshot of the store.
pub fn report(view: &ClusterView, scope: &str) -> ClusterReport {
    let leader = view.leader_name();
    let leader_position = view.leader_position();
    let members = view
        .members
        .iter()
        .map(|m| {
            let s = &m.status;
            let is_leader = leader == Some(m.name.as_str());
            let in_sync = view
                .sync
                .as_ref()
                .is_some_and(|sync| leader.is_some() && sync.leader.as_deref() == leader)
                && view
                    .sync
                    .as_ref()
                    .is_some_and(|sync| sync.standbys().contains(&m.name));
            let role = if is_leader {
                "leader"
            } else if s.role == Role::StandbyLeader {
                "standby_leader"
            } else if in_sync {
                "sync_standby"
            } else {
                "replica"
            };
            let state = match (&s.replication_state, s.state) {
                (Some(rs), PgState::Running) if !is_leader => rs.clone(),
                _ => s.state.as_str().to_string(),
            };
            let lag = if is_leader {
                None
            } else {
                Some(match s.received_location.or(s.replayed_location) {
                    Some(_) if s.state == PgState::Running && leader_position > 0 => {
                        let mine = s.replayed_location.or(s.received_location).unwrap_or(0);
                        serde_json::json!(leader_position.saturating_sub(mine))
                    }
                    _ => serde_json::json!("unknown"),
                })
            };
            let (host, port) = s.host_port();
            MemberReport {
                name: m.name.clone(),
                role: role.to_string(),
                state,
                api_url: s.api_url.clone(),
                host,
                port,
                timeline: s.timeline,
                lag,
                tags: s.tags.clone(),
                pending_restart: s.pending_restart,
            }
        })
        .collect();
    ClusterReport {
        members,
        scope: scope.to_string(),
        system_id: view.system_id().map(str::to_string),
        pause: view.config.as_ref().is_some_and(|c| c.pause),
        scheduled_switchover: view.failover.as_ref().and_then(|f| {
            Some(ScheduledSwitchover {
                at: f.scheduled_at.clone()?,
                from: f.leader.clone(),
                to: f.member.clone(),
            })
        }),
    }
}

/// The store read now (2 s at most), or the loop's last snapshot if it is slow.
pub async fn fresh_view<D: Dcs>(state: &ApiState<D>) -> ClusterView {
    match tokio::time::timeout(Duration::from_secs(2), state.dcs.load()).await {
        Ok(Ok(view)) => view,
        _ => state.shared.snapshot().view,
    }
}

pub async fn cluster<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    let view = fresh_view(&state).await;
    axum::Json(report(&view, &state.shared.config().cluster.scope)).into_response()
}
