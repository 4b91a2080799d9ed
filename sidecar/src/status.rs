//! The member status document served at `GET /` and `/patroni` (Patroni's
//! field names), built from the shared snapshot and read back by peers
//! during a leader race and by `pgpilot ctl`.

use serde::{Deserialize, Serialize};

use crate::cluster::{PgState, Role};
use crate::config::Tags;
use crate::postgres::{Observation, ReplicationInfo};
use crate::state::Snapshot;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Xlog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_location: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_location: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatroniInfo {
    pub version: String,
    pub scope: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: PgState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster_start_time: Option<String>,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog: Option<Xlog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<ReplicationInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_unlocked: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcs_last_seen: Option<u64>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_system_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
    /// pgpilot's own: a replica made (cloned, restored) that has not
    /// streamed from a leader since; it does not win a leader race against
    /// one that has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_streamed_since_clone: bool,
    pub patroni: PatroniInfo,
}

impl NodeStatus {
    /// The furthest WAL position reported.
    pub fn wal_position(&self) -> u64 {
        self.xlog
            .as_ref()
            .map(|x| {
                x.location
                    .unwrap_or(0)
                    .max(x.received_location.unwrap_or(0))
                    .max(x.replayed_location.unwrap_or(0))
            })
            .unwrap_or(0)
    }
}

/// Role of a running instance from what SQL says.
pub fn role_of(observation: Option<&Observation>, fallback: Role) -> Role {
    match observation {
        Some(o) if !o.in_recovery => Role::Primary,
        Some(_) => Role::Replica,
        None => fallback,
    }
}

pub fn build(
    snap: &Snapshot,
    observation: Option<&Observation>,
    scope: &str,
    name: &str,
    tags: &Tags,
    postmaster_start: Option<i64>,
) -> NodeStatus {
    let role = role_of(observation, snap.role);
    let state = if observation.is_some() {
        PgState::Running
    } else {
        snap.pg_state
    };
    let xlog = observation.map(|o| {
        if o.in_recovery {
            Xlog {
                location: None,
                received_location: o.received_lsn.or(o.replayed_lsn),
                replayed_location: o.replayed_lsn,
                paused: Some(o.replay_paused),
            }
        } else {
            Xlog {
                location: o.flush_lsn,
                received_location: None,
                replayed_location: None,
                paused: None,
            }
        }
    });
    NodeStatus {
        state,
        postmaster_start_time: postmaster_start.map(format_epoch),
        role,
        server_version: observation.map(|o| o.server_version),
        xlog,
        timeline: observation.and_then(|o| o.timeline),
        replication: observation
            .map(|o| o.replication.clone())
            .unwrap_or_default(),
        replication_state: observation.filter(|o| o.in_recovery).map(|o| {
            if o.streaming {
                "streaming".to_string()
            } else {
                "in archive recovery".to_string()
            }
        }),
        cluster_unlocked: snap.view.leader.is_none(),
        pause: snap.dynamic.pause,
        dcs_last_seen: snap.dcs_last_seen.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        }),
        tags: tags.clone(),
        database_system_identifier: observation.map(|o| o.system_id.clone()),
        pending_restart: observation.is_some_and(|o| o.pending_restart),
        not_streamed_since_clone: snap.not_streamed,
        patroni: PatroniInfo {
            version: crate::VERSION.to_string(),
            scope: scope.to_string(),
            name: name.to_string(),
        },
    }
}

/// Epoch seconds as an RFC 3339 UTC timestamp.
pub fn format_epoch(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
}
