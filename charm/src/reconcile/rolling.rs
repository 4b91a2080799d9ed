//! Rolling restarts. Once pgpilot runs, a change that restarts it (its snap
//! keys, or a parameter pgpilot flags as pending restart) waits for the
//! leader's grant in the app bag: replicas first, one at a time, the primary
//! last and only once every other unit runs the configuration of this
//! generation (its published fingerprint); never a member that is starting.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Reconciler;
use crate::cluster::{self, ClusterMember};
use crate::context::{member_name, unit_of_member};
use crate::peer::{self, EtcdEntry};
use crate::plan::Step;
use crate::status::{msg, Status, StatusKind};

impl Reconciler<'_> {
    /// The leader decides who may restart now (see [`next_restart`]).
    pub(super) fn grant_restart(&mut self, need_restart: bool, fingerprint: &str) {
        let o = self.o;
        let peer = o.peer.as_ref().expect("checked by converge");
        let me = o.member();
        let mut requests: BTreeSet<String> = peer
            .units()
            .into_iter()
            .filter(|u| *u != o.unit)
            .filter(|u| peer.unit(u, peer::UNIT_RESTART_REQUEST) == Some("true"))
            .map(member_name)
            .collect();
        if need_restart {
            requests.insert(me.clone());
        }
        // pgpilot flags every member that needs a restart at once (a
        // cluster-wide parameter): the leader sees them all, replicas first.
        for m in o.cluster.iter().flatten().filter(|m| m.pending_restart) {
            requests.insert(m.name.clone());
        }
        // The primary goes last: only once every other unit runs the
        // configuration of this generation.
        let primary_unit = o
            .cluster
            .as_deref()
            .and_then(cluster::leader)
            .map(|l| unit_of_member(&l.name));
        let primary_waits = peer.units().into_iter().any(|u| {
            if primary_unit.as_deref() == Some(u) {
                return false;
            }
            let applied = if u == o.unit {
                self.unit_value(peer::UNIT_CONFIG_APPLIED)
            } else {
                peer.unit(u, peer::UNIT_CONFIG_APPLIED)
            };
            applied != Some(fingerprint)
        });
        let grant = next_restart(
            self.app_value(peer::APP_RESTART_GRANTED),
            &requests,
            o.cluster.as_deref(),
            primary_waits,
        );
        self.set_app(peer::APP_RESTART_GRANTED, grant.unwrap_or_default());
    }

    /// pgpilot runs: changes that restart it wait for the leader's grant.
    pub(super) fn rolling_change(
        &mut self,
        diff: Vec<(String, Value)>,
        need_restart: bool,
        fingerprint: &str,
    ) -> Status {
        let o = self.o;
        let me = o.member();
        let starting = o
            .my_cluster_member()
            .is_some_and(ClusterMember::is_starting);
        if diff.is_empty() {
            self.set_unit(peer::UNIT_CONFIG_APPLIED, fingerprint);
        }
        if !need_restart {
            self.set_unit(peer::UNIT_RESTART_REQUEST, "");
            return self.member_status();
        }
        if starting {
            // Never restarted while it starts or copies (issue #775).
            self.set_unit(peer::UNIT_RESTART_REQUEST, "true");
            return Status::waiting(msg::AWAITING_MEMBER);
        }
        if self.app_value(peer::APP_RESTART_GRANTED) == Some(me.as_str()) {
            if diff.is_empty() {
                self.plan.push(Step::RestartMember(me.clone()));
            } else {
                // The snap's configure hook restarts pgpilot.
                self.plan.push(Step::SnapSet(diff));
                self.set_unit(peer::UNIT_CONFIG_APPLIED, fingerprint);
            }
            self.set_unit(peer::UNIT_RESTART_REQUEST, "");
            if o.is_leader {
                self.set_app(peer::APP_RESTART_GRANTED, "");
            }
            return Status::waiting(msg::AWAITING_MEMBER);
        }
        self.set_unit(peer::UNIT_RESTART_REQUEST, "true");
        // It still serves: say what it is, and that a restart is queued.
        let now = self.member_status();
        if now.kind != StatusKind::Active {
            return now;
        }
        let message = if now.message.is_empty() {
            msg::AWAITING_RESTART_TURN.to_string()
        } else {
            format!("{}, {}", now.message, msg::AWAITING_RESTART_TURN)
        };
        Status::active(message)
    }
}

/// Who may restart now: the member already granted while it still asks;
/// else a requesting replica (by name), the primary last and only when
/// `primary_waits` is false; never a member that is starting, and only
/// while every other member is healthy.
pub fn next_restart(
    granted: Option<&str>,
    requests: &BTreeSet<String>,
    cluster: Option<&[ClusterMember]>,
    primary_waits: bool,
) -> Option<String> {
    if let Some(g) = granted {
        if requests.contains(g) {
            return Some(g.to_string());
        }
    }
    let cluster = cluster?;
    let is_primary = |name: &str| cluster.iter().any(|m| m.name == name && m.is_leader());
    let mut ordered: Vec<&String> = requests.iter().filter(|r| !is_primary(r)).collect();
    if !primary_waits {
        ordered.extend(requests.iter().filter(|r| is_primary(r)));
    }
    ordered.into_iter().find_map(|candidate| {
        let member = cluster.iter().find(|m| &m.name == candidate);
        if member.is_some_and(ClusterMember::is_starting) {
            return None;
        }
        cluster
            .iter()
            .filter(|m| &m.name != candidate)
            .all(ClusterMember::is_healthy)
            .then(|| candidate.clone())
    })
}

/// What every unit's pgpilot keys have in common, hashed: the etcd voters
/// and the options that size PostgreSQL. A unit publishes the fingerprint it
/// runs with; the primary restarts only when the others run this one.
/// (Passwords are left out: a hash of them does not belong in relation data.)
pub fn config_fingerprint(
    members: &[EtcdEntry],
    config: &serde_json::Map<String, Value>,
) -> String {
    let inputs = serde_json::json!({
        "endpoints": peer::voter_client_urls(members),
        "profile": config.get("profile"),
        "profile_limit_memory": config.get("profile_limit_memory"),
        "memory_shared_buffers": config.get("memory_shared_buffers"),
    });
    // FNV-1a, 64 bits: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in inputs.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
