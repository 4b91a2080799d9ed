//! The model's state in one serde value, [`ModelState`], and the buffered
//! writes of a hook, [`Op`], which [`apply`] carries out on a state: on the
//! hook's working copy at once (so the hook reads its own writes), on the
//! model's state when the hook exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A databag: string keys, string values.
pub type Bag = BTreeMap<String, String>;

/// Everything the simulated controller knows about the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    pub model_name: String,
    pub model_uuid: String,
    /// The one application of the model (the charm under test).
    pub application: String,
    /// Options the user set (`juju config`).
    pub config: Map<String, Value>,
    /// Every option the charm declares, with its default (null: none).
    pub config_defaults: Map<String, Value>,
    pub units: BTreeMap<String, Unit>,
    /// By numeric relation id.
    pub relations: BTreeMap<u32, Relation>,
    /// By secret id (`cn8fk1ffhcmc79f7r5l0`, without `secret:`).
    pub secrets: BTreeMap<String, Secret>,
    pub app_status: Status,
    pub app_status_history: Vec<Status>,
    /// Resource name → the file attached (`juju attach-resource`).
    pub resources: BTreeMap<String, PathBuf>,
    /// By action id (`JUJU_ACTION_UUID`).
    pub actions: BTreeMap<String, ActionState>,
    pub next_relation_id: u32,
    pub next_secret: u64,
    pub next_action: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
    pub leader: bool,
    pub address: String,
    pub status: Status,
    pub status_history: Vec<Status>,
    /// `5432/tcp`, `8000-8100/udp`, `icmp`.
    pub opened_ports: BTreeSet<String>,
    pub workload_version: String,
    /// Storage id (`pgdata/0`) → instance.
    pub storage: BTreeMap<String, Storage>,
    /// `hook failed: "NAME"` while a failed hook waits for its retry (what
    /// `juju status` shows as the unit's `error` status).
    #[serde(default)]
    pub hook_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub kind: String,
    pub location: PathBuf,
}

/// A workload status (`status-set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub status: String,
    pub message: String,
}

impl Default for Status {
    /// What Juju shows before the charm says anything.
    fn default() -> Self {
        Status {
            status: "unknown".to_string(),
            message: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    pub id: u32,
    pub endpoint: String,
    /// The application at the other end (this one for a peer relation).
    pub remote_app: String,
    pub peer: bool,
    /// Units in the relation (both sides).
    pub units: BTreeSet<String>,
    /// Application name → its bag.
    pub app_data: BTreeMap<String, Bag>,
    /// Unit name → its bag.
    pub unit_data: BTreeMap<String, Bag>,
}

impl Relation {
    /// `database-peers:3`
    pub fn key(&self) -> String {
        format!("{}:{}", self.endpoint, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretOwner {
    /// Owned by the application (the leader manages it).
    Application(String),
    Unit(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub relation_id: u32,
    /// `None`: the relation's remote application as a whole.
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub owner: SecretOwner,
    pub label: Option<String>,
    pub description: Option<String>,
    /// Revision number → content.
    pub revisions: BTreeMap<u32, Bag>,
    pub grants: Vec<Grant>,
    /// A consumer unit → the revision it tracks (pinned at its first
    /// `secret-get`, moved by `--refresh`).
    pub tracked: BTreeMap<String, u32>,
}

impl Secret {
    pub fn latest(&self) -> u32 {
        self.revisions.keys().next_back().copied().unwrap_or(0)
    }

    pub fn owned_by_app_of(&self, unit: &str) -> bool {
        matches!(&self.owner, SecretOwner::Application(app) if app_of(unit) == app)
    }

    /// Is `unit` an owner (the owning unit, or any unit of the owning app)?
    pub fn readable_as_owner(&self, unit: &str) -> bool {
        match &self.owner {
            SecretOwner::Application(app) => app_of(unit) == app,
            SecretOwner::Unit(owner) => owner == unit,
        }
    }

    /// May `unit` manage it (set, grant, remove, info)? The owning unit; for
    /// an application's secret, its leader.
    pub fn manageable_by(&self, unit: &str, leader: bool) -> bool {
        match &self.owner {
            SecretOwner::Application(app) => app_of(unit) == app && leader,
            SecretOwner::Unit(owner) => owner == unit,
        }
    }
}

/// An action run's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionState {
    pub name: String,
    pub unit: String,
    pub params: Map<String, Value>,
    /// `running`, `completed`, `failed`.
    pub status: String,
    /// `action-fail`'s message, or the error of a failed process.
    pub message: String,
    /// `action-set`, nested at the dots.
    pub results: Map<String, Value>,
    pub logs: Vec<String>,
}

/// `postgresql/1` → `postgresql`.
pub fn app_of(unit: &str) -> &str {
    unit.split_once('/').map_or(unit, |(app, _)| app)
}

/// A hook's buffered write, committed only if the hook exits 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Update a bag of relation `relation_id` (an empty value deletes).
    RelationSet {
        relation_id: u32,
        /// A unit or application name.
        owner: String,
        app: bool,
        data: Bag,
    },
    SecretAdd(Secret),
    SecretSet {
        id: String,
        content: Option<Bag>,
        label: Option<String>,
        description: Option<String>,
    },
    SecretGrant {
        id: String,
        grant: Grant,
    },
    SecretRemove {
        id: String,
        revision: Option<u32>,
    },
    SecretTrack {
        id: String,
        unit: String,
        revision: u32,
    },
    OpenPort {
        unit: String,
        port: String,
    },
    ClosePort {
        unit: String,
        port: String,
    },
}

/// Carry out one buffered write. Permissions were checked when the tool
/// ran; a write whose target vanished meanwhile is dropped.
pub fn apply(state: &mut ModelState, op: &Op) {
    match op {
        Op::RelationSet {
            relation_id,
            owner,
            app,
            data,
        } => {
            let Some(rel) = state.relations.get_mut(relation_id) else {
                return;
            };
            let bags = if *app {
                &mut rel.app_data
            } else {
                &mut rel.unit_data
            };
            let bag = bags.entry(owner.clone()).or_default();
            for (k, v) in data {
                if v.is_empty() {
                    bag.remove(k);
                } else {
                    bag.insert(k.clone(), v.clone());
                }
            }
        }
        Op::SecretAdd(secret) => {
            state.secrets.insert(secret.id.clone(), secret.clone());
        }
        Op::SecretSet {
            id,
            content,
            label,
            description,
        } => {
            let Some(secret) = state.secrets.get_mut(id) else {
                return;
            };
            if let Some(content) = content {
                let next = secret.latest() + 1;
                secret.revisions.insert(next, content.clone());
            }
            if label.is_some() {
                secret.label = label.clone();
            }
            if description.is_some() {
                secret.description = description.clone();
            }
        }
        Op::SecretGrant { id, grant } => {
            if let Some(secret) = state.secrets.get_mut(id) {
                if !secret.grants.contains(grant) {
                    secret.grants.push(grant.clone());
                }
            }
        }
        Op::SecretRemove { id, revision } => match revision {
            None => {
                state.secrets.remove(id);
            }
            Some(r) => {
                if let Some(secret) = state.secrets.get_mut(id) {
                    secret.revisions.remove(r);
                    if secret.revisions.is_empty() {
                        state.secrets.remove(id);
                    }
                }
            }
        },
        Op::SecretTrack { id, unit, revision } => {
            if let Some(secret) = state.secrets.get_mut(id) {
                secret.tracked.insert(unit.clone(), *revision);
            }
        }
        Op::OpenPort { unit, port } => {
            if let Some(u) = state.units.get_mut(unit) {
                u.opened_ports.insert(port.clone());
            }
        }
        Op::ClosePort { unit, port } => {
            if let Some(u) = state.units.get_mut(unit) {
                u.opened_ports.remove(port);
            }
        }
    }
}

/// A secret id shaped like Juju's (an xid: 20 characters of base32hex,
/// lowercase), unique in the model: a per-process prefix and a counter.
pub fn secret_id(counter: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let seed = (std::process::id() as u64) << 32 ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from("d4");
    let mut n = seed;
    for _ in 0..12 {
        out.push(DIGITS[(n & 31) as usize] as char);
        n >>= 5;
    }
    let mut c = counter;
    for _ in 0..6 {
        out.push(DIGITS[(c & 31) as usize] as char);
        c >>= 5;
    }
    out
}

/// The id in `secret:ID`, `secret://MODEL/ID` or `ID`.
pub fn parse_secret_uri(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("secret://")
        .or_else(|| uri.strip_prefix("secret:"))
        .unwrap_or(uri);
    rest.rsplit('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(pairs: &[(&str, &str)]) -> Bag {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn relation_set_merges_and_empty_deletes() {
        let mut state = ModelState::default();
        state.relations.insert(
            0,
            Relation {
                id: 0,
                endpoint: "database-peers".into(),
                ..Relation::default()
            },
        );
        let set = |data| Op::RelationSet {
            relation_id: 0,
            owner: "pg/0".into(),
            app: false,
            data,
        };
        apply(&mut state, &set(bag(&[("a", "1"), ("b", "2")])));
        apply(&mut state, &set(bag(&[("a", ""), ("c", "3")])));
        assert_eq!(
            state.relations[&0].unit_data["pg/0"],
            bag(&[("b", "2"), ("c", "3")])
        );
        assert_eq!(state.relations[&0].key(), "database-peers:0");
    }

    #[test]
    fn secret_revisions_and_removal() {
        let mut state = ModelState::default();
        let id = secret_id(1);
        apply(
            &mut state,
            &Op::SecretAdd(Secret {
                id: id.clone(),
                owner: SecretOwner::Application("pg".into()),
                label: None,
                description: None,
                revisions: BTreeMap::from([(1, bag(&[("k", "v1")]))]),
                grants: vec![],
                tracked: BTreeMap::new(),
            }),
        );
        apply(
            &mut state,
            &Op::SecretSet {
                id: id.clone(),
                content: Some(bag(&[("k", "v2")])),
                label: Some("l".into()),
                description: None,
            },
        );
        let s = &state.secrets[&id];
        assert_eq!(s.latest(), 2);
        assert_eq!(s.label.as_deref(), Some("l"));
        assert!(s.manageable_by("pg/0", true));
        assert!(!s.manageable_by("pg/1", false));
        assert!(s.readable_as_owner("pg/1"));
        apply(
            &mut state,
            &Op::SecretRemove {
                id: id.clone(),
                revision: Some(1),
            },
        );
        assert_eq!(state.secrets[&id].revisions.len(), 1);
        apply(&mut state, &Op::SecretRemove { id, revision: None });
        assert!(state.secrets.is_empty());
    }

    #[test]
    fn secret_ids_and_uris() {
        let a = secret_id(1);
        assert_eq!(a.len(), 20);
        assert_ne!(a, secret_id(2));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)));
        assert_eq!(parse_secret_uri(&format!("secret:{a}")), a);
        assert_eq!(parse_secret_uri(&format!("secret://uuid/{a}")), a);
        assert_eq!(parse_secret_uri(&a), a);
        assert_eq!(app_of("pg/3"), "pg");
    }
}
