//! pgpilot's view of the cluster as `charmed-postgresql.patronictl list -f
//! json` prints it (patronictl's keys: Member, Host, Role, State, TL, Lag in
//! MB, Pending restart), and the member states the charm acts on.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the leader key: the primary.
    Leader,
    SyncStandby,
    Replica,
    StandbyLeader,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub name: String,
    /// `host:port` of PostgreSQL.
    pub host: String,
    pub role: Role,
    /// `running`, `streaming`, `starting`, `creating replica`, `stopped`, ...
    pub state: String,
    pub pending_restart: bool,
}

/// States in which a member is copying or starting: it must not be
/// restarted (today's charm restarted members mid-copy: issue #775).
pub const STARTING_STATES: &[&str] = &[
    "starting",
    "creating replica",
    "restarting",
    "initializing new cluster",
    "stopping",
];

/// States of a member that stays down without help.
pub const BROKEN_STATES: &[&str] = &["start failed", "crashed"];

impl ClusterMember {
    pub fn is_healthy(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }

    pub fn is_starting(&self) -> bool {
        STARTING_STATES.contains(&self.state.as_str())
    }

    pub fn is_broken(&self) -> bool {
        BROKEN_STATES.contains(&self.state.as_str())
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// PostgreSQL's host without the port.
    pub fn host_only(&self) -> &str {
        self.host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.host)
    }

    /// PostgreSQL's port (5432 when the host does not say).
    pub fn port(&self) -> u16 {
        self.host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(5432)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("patronictl list printed something else than JSON members: {0}")]
pub struct ParseError(String);

pub fn parse_list(out: &str) -> Result<Vec<ClusterMember>, ParseError> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(rename = "Member")]
        member: String,
        #[serde(rename = "Host", default)]
        host: String,
        #[serde(rename = "Role")]
        role: String,
        #[serde(rename = "State")]
        state: String,
        #[serde(rename = "Pending restart", default)]
        pending_restart: Option<String>,
    }
    let rows: Vec<Row> = serde_json::from_str(out.trim()).map_err(|e| ParseError(e.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|r| ClusterMember {
            role: match r.role.to_ascii_lowercase().replace('_', " ").as_str() {
                "leader" | "primary" | "master" => Role::Leader,
                "sync standby" => Role::SyncStandby,
                "replica" => Role::Replica,
                "standby leader" => Role::StandbyLeader,
                _ => Role::Other,
            },
            name: r.member,
            host: r.host,
            state: r.state,
            pending_restart: r.pending_restart.is_some_and(|p| !p.trim().is_empty()),
        })
        .collect())
}

pub fn leader(members: &[ClusterMember]) -> Option<&ClusterMember> {
    members.iter().find(|m| m.is_leader())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_patronictl_list_json() {
        let out = r#"[{"Cluster": "postgresql", "Member": "postgresql-0", "Host": "10.0.0.1:5432", "Role": "Leader", "State": "running", "TL": 1},
            {"Cluster": "postgresql", "Member": "postgresql-1", "Host": "10.0.0.2:5432", "Role": "Sync Standby", "State": "streaming", "TL": 1, "Lag in MB": 0, "Pending restart": "*"},
            {"Cluster": "postgresql", "Member": "postgresql-2", "Host": "10.0.0.3:5432", "Role": "Replica", "State": "creating replica", "Lag in MB": "unknown"}]"#;
        let m = parse_list(out).unwrap();
        assert_eq!(m.len(), 3);
        assert!(m[0].is_leader() && m[0].is_healthy());
        assert_eq!(m[0].host_only(), "10.0.0.1");
        assert_eq!(m[1].role, Role::SyncStandby);
        assert!(m[1].pending_restart);
        assert!(m[2].is_starting() && !m[2].is_healthy());
        assert_eq!(leader(&m).unwrap().name, "postgresql-0");
        assert!(parse_list("[]").unwrap().is_empty());
        assert!(parse_list("error: cannot reach etcd").is_err());
    }
}
