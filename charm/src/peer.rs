//! The peer relation's databags (`database-peers`): the keys this charm
//! writes, their meaning, and their encoding. All values are strings.
//!
//! Application bag (the leader writes):
//!
//! | key | value |
//! |---|---|
//! | `internal-secret` | URI of the application secret with the system users' passwords |
//! | `etcd-members` | JSON list of [`EtcdEntry`]: the units admitted to etcd, in admission order |
//! | `restart-granted` | member name allowed to restart now (rolling restarts, replicas first) |
//! | `extensions` | JSON list of the plugin options' extensions every database was last seen to agree with |
//! | `etcd-tls` | the stage of the units' etcd over TLS ([`crate::etcd_tls::Stage`]; empty: off) |
//! | `etcd-tls-restart` | member name allowed to restart its etcd now (one at a time) |
//!
//! Unit bag (each unit writes its own):
//!
//! | key | value |
//! |---|---|
//! | `ip` | the unit's address on the peer relation |
//! | `member` | its member name in etcd and pgpilot (`postgresql-0`) |
//! | `etcd-started` | `true` once its etcd member has started |
//! | `restart-request` | `true` while it waits for its turn to restart |
//! | `workload-version` | the snap version last reported with application-version-set |
//! | `broken-since` | epoch seconds since when its member has been broken |
//! | `config-applied` | fingerprint of the configuration its pgpilot runs with (rolling restarts) |
//! | `departing` | `true` once it knows it leaves: its hooks only tear down from then on |
//! | `tls-secret` | URI of its unit-owned secret holding its TLS private key |
//! | `tls-requested` | what its certificate request on `certificates` asks for ([`crate::tls::Wanted::fingerprint`]) |
//! | `tls-ready` | `true` while its certificate is in force (the snap holds `tls.*`) |
//! | `etcd-tls` | the level its etcd runs at ([`crate::etcd::Level`]; empty: plain), written once its etcd is healthy at it |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const APP_SECRET_ID: &str = "internal-secret";
pub const APP_ETCD_MEMBERS: &str = "etcd-members";
pub const APP_RESTART_GRANTED: &str = "restart-granted";
pub const APP_EXTENSIONS: &str = "extensions";
pub const APP_ETCD_TLS: &str = "etcd-tls";
pub const APP_ETCD_TLS_RESTART: &str = "etcd-tls-restart";

pub const UNIT_IP: &str = "ip";
pub const UNIT_MEMBER: &str = "member";
pub const UNIT_ETCD_STARTED: &str = "etcd-started";
pub const UNIT_RESTART_REQUEST: &str = "restart-request";
pub const UNIT_WORKLOAD_VERSION: &str = "workload-version";
pub const UNIT_BROKEN_SINCE: &str = "broken-since";
pub const UNIT_CONFIG_APPLIED: &str = "config-applied";
pub const UNIT_DEPARTING: &str = "departing";
pub const UNIT_TLS_SECRET: &str = "tls-secret";
pub const UNIT_TLS_REQUESTED: &str = "tls-requested";
pub const UNIT_TLS_READY: &str = "tls-ready";
pub const UNIT_ETCD_TLS: &str = "etcd-tls";
/// The member's role and state as its pgpilot reports them (`leader
/// running`, `replica streaming`, `replica starting`): a change reaches the
/// leader as relation-changed, so a restart rolls on as soon as a member
/// is healthy again, not at the next update-status.
pub const UNIT_MEMBER_STATE: &str = "member-state";

/// The label of the application secret (today's charm's label pattern).
pub fn app_secret_label(app: &str) -> String {
    format!("database-peers.{app}.app")
}

/// A unit admitted to the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EtcdEntry {
    /// Member name: `postgresql-0`.
    pub name: String,
    pub unit: String,
    pub peer_url: String,
    pub client_url: String,
    /// Added as a learner, not yet promoted to a voting member.
    #[serde(default)]
    pub learner: bool,
    /// `new` for the member that bootstrapped the cluster, else `existing`.
    pub initial_state: String,
}

/// The peer relation as this unit sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerView {
    /// `database-peers:3`.
    pub relation_id: String,
    pub app_data: BTreeMap<String, String>,
    /// Every unit's bag, this unit's included.
    pub unit_data: BTreeMap<String, BTreeMap<String, String>>,
}

impl PeerView {
    pub fn app(&self, key: &str) -> Option<&str> {
        self.app_data
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn unit(&self, unit: &str, key: &str) -> Option<&str> {
        self.unit_data
            .get(unit)?
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Units on the relation, this one included, sorted.
    pub fn units(&self) -> Vec<&str> {
        self.unit_data.keys().map(String::as_str).collect()
    }

    /// The admitted etcd members; an unreadable value counts as none (the
    /// leader rewrites it).
    pub fn etcd_members(&self) -> Vec<EtcdEntry> {
        self.app(APP_ETCD_MEMBERS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    }
}

pub fn encode_members(members: &[EtcdEntry]) -> String {
    serde_json::to_string(members).expect("members serialize")
}

/// Client URLs of the voting members, sorted: pgpilot's etcd endpoints.
pub fn voter_client_urls(members: &[EtcdEntry]) -> Vec<String> {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| !m.learner)
        .map(|m| m.client_url.clone())
        .collect();
    urls.sort();
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_bad_json_is_empty() {
        let members = vec![EtcdEntry {
            name: "postgresql-0".into(),
            unit: "postgresql/0".into(),
            peer_url: "http://10.0.0.1:2380".into(),
            client_url: "http://10.0.0.1:2379".into(),
            learner: false,
            initial_state: "new".into(),
        }];
        let text = encode_members(&members);
        assert_eq!(
            text,
            r#"[{"name":"postgresql-0","unit":"postgresql/0","peer-url":"http://10.0.0.1:2380","client-url":"http://10.0.0.1:2379","learner":false,"initial-state":"new"}]"#
        );
        let mut view = PeerView::default();
        view.app_data.insert(APP_ETCD_MEMBERS.into(), text);
        assert_eq!(view.etcd_members(), members);
        view.app_data
            .insert(APP_ETCD_MEMBERS.into(), "not json".into());
        assert!(view.etcd_members().is_empty());
    }

    #[test]
    fn empty_values_are_unset() {
        let mut view = PeerView::default();
        view.app_data
            .insert(APP_RESTART_GRANTED.into(), String::new());
        assert_eq!(view.app(APP_RESTART_GRANTED), None);
    }
}
