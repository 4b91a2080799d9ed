//! etcd membership, the leader's part: departed units out (of etcd, then of
//! the list), a started learner promoted, members etcd has but the list
//! lacks recorded or removed, the next unit added as a learner — one at a
//! time, so that quorum never counts a ghost. Members are matched by
//! their peer URL's address whatever its scheme: a member whose URLs move
//! between `http://` and `https://` (etcd over TLS) is the same member.

use std::collections::BTreeSet;

use super::Reconciler;
use crate::context::member_name;
use crate::etcd;
use crate::peer::{self, EtcdEntry};
use crate::plan::Step;
use crate::tools::LogLevel;

impl Reconciler<'_> {
    /// The leader's etcd membership work; returns the admitted members as
    /// they are after this plan (every unit's view for non-leaders).
    pub(super) fn manage_etcd(&mut self, ip: &str) -> Vec<EtcdEntry> {
        let o = self.o;
        let peer = o.peer.as_ref().expect("checked by converge");
        let mut members = peer.etcd_members();
        if !o.is_leader {
            return members;
        }
        let me = o.member();
        if members.is_empty() {
            if o.etcd.as_ref().is_some_and(|m| !m.is_empty()) {
                self.plan.log(
                    LogLevel::Error,
                    "etcd has members but the peer relation lists none: not bootstrapping a second cluster",
                );
                return members;
            }
            members.push(EtcdEntry {
                name: me.clone(),
                unit: o.unit.clone(),
                peer_url: etcd::peer_url(ip),
                client_url: etcd::client_url(ip),
                learner: false,
                initial_state: "new".into(),
            });
            self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
            self.flush_app();
            return members;
        }
        let Some(observed) = &o.etcd else {
            self.plan.log(
                LogLevel::Info,
                "etcd's member list is not available: membership unchanged",
            );
            return members;
        };
        let endpoints = peer::voter_client_urls(&members);
        let clients_https = self.etcd_tls_clients_https();
        let units: BTreeSet<&str> = peer.units().into_iter().collect();
        let departing = o.event.departing_unit();
        let find = |url: &str| {
            observed
                .iter()
                .find(|m| etcd::lists_address(&m.peer_urls, url))
        };

        // Units that left: out of etcd first, then out of the list.
        let gone: Vec<EtcdEntry> = members
            .iter()
            .filter(|m| m.unit != o.unit)
            .filter(|m| !units.contains(m.unit.as_str()) || Some(m.unit.as_str()) == departing)
            .cloned()
            .collect();
        let mut removed: BTreeSet<u64> = BTreeSet::new();
        for entry in gone {
            if let Some(m) = find(&entry.peer_url) {
                removed.insert(m.id);
                let others: Vec<String> = endpoints
                    .iter()
                    .filter(|e| **e != entry.client_url)
                    .cloned()
                    .collect();
                self.plan.push(Step::EtcdRemove {
                    id: m.id,
                    name: entry.name.clone(),
                    endpoints: others,
                });
            }
            members.retain(|m| m.name != entry.name);
            self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
            self.flush_app();
        }

        // Learners: promoted once their unit says etcd started.
        for i in 0..members.len() {
            if !members[i].learner {
                continue;
            }
            let entry = members[i].clone();
            match find(&entry.peer_url) {
                None => self.plan.log(
                    LogLevel::Warning,
                    format!(
                        "{} is listed as a learner but etcd does not know it",
                        entry.name
                    ),
                ),
                Some(m) if !m.is_learner => {
                    members[i].learner = false;
                    self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
                }
                Some(m) => {
                    let started = peer.unit(&entry.unit, peer::UNIT_ETCD_STARTED) == Some("true");
                    if started && !m.name.is_empty() {
                        self.plan.push(Step::EtcdPromote {
                            id: m.id,
                            name: entry.name.clone(),
                            endpoints: endpoints.clone(),
                        });
                        members[i].learner = false;
                        self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
                        self.flush_app();
                    }
                }
            }
        }
        self.flush_app();

        // Members etcd has that the list lacks: added by a hook that failed
        // later (recorded, not added twice), or left behind by a unit that
        // is gone (removed, so that quorum never counts a ghost).
        for m in observed {
            let listed = members
                .iter()
                .any(|e| etcd::lists_address(&m.peer_urls, &e.peer_url));
            if listed || removed.contains(&m.id) {
                continue;
            }
            let owner = units.iter().copied().find(|u| {
                *u != o.unit
                    && Some(*u) != departing
                    && peer
                        .unit(u, peer::UNIT_IP)
                        .is_some_and(|ip| etcd::lists_address(&m.peer_urls, &etcd::peer_url(ip)))
            });
            match owner {
                Some(unit) => {
                    let unit_ip = peer.unit(unit, peer::UNIT_IP).unwrap_or_default();
                    let peer_https = m.peer_urls.iter().any(|u| etcd::is_https(u));
                    members.push(EtcdEntry {
                        name: member_name(unit),
                        unit: unit.to_string(),
                        peer_url: etcd::with_scheme(&etcd::peer_url(unit_ip), peer_https),
                        client_url: etcd::client_url_as(&etcd::client_url(unit_ip), clients_https),
                        learner: m.is_learner,
                        initial_state: "existing".into(),
                    });
                }
                None => self.plan.push(Step::EtcdRemove {
                    id: m.id,
                    name: if m.name.is_empty() {
                        m.hex_id()
                    } else {
                        m.name.clone()
                    },
                    endpoints: endpoints.clone(),
                }),
            }
        }
        self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
        self.flush_app();

        // Admit the next unit, one learner at a time (and with etcd over
        // TLS only at rest: plain in `off`, https in `on`).
        if !members.iter().any(|m| m.learner) {
            let admitted: BTreeSet<&str> = members.iter().map(|m| m.unit.as_str()).collect();
            let next = units.iter().copied().find(|u| {
                *u != o.unit
                    && Some(*u) != departing
                    && !admitted.contains(u)
                    && peer.unit(u, peer::UNIT_IP).is_some()
            });
            let admission = next.map(|u| (u, self.etcd_tls_admission(&members, u)));
            if let Some((unit, None)) = admission {
                self.plan.log(
                    LogLevel::Info,
                    format!("{unit} joins etcd once etcd over TLS is at rest (and the unit has its certificate)"),
                );
            }
            if let Some((unit, Some(peer_https))) = admission {
                let unit_ip = peer.unit(unit, peer::UNIT_IP).unwrap_or_default();
                let entry = EtcdEntry {
                    name: member_name(unit),
                    unit: unit.to_string(),
                    peer_url: etcd::with_scheme(&etcd::peer_url(unit_ip), peer_https),
                    client_url: etcd::client_url_as(&etcd::client_url(unit_ip), clients_https),
                    learner: true,
                    initial_state: "existing".into(),
                };
                self.plan.push(Step::EtcdAddLearner {
                    name: entry.name.clone(),
                    peer_url: entry.peer_url.clone(),
                    endpoints: endpoints.clone(),
                });
                members.push(entry);
                self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
                self.flush_app();
            }
        }
        members
    }
}
