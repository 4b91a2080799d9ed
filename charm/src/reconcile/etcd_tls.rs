//! The units' etcd over TLS, in a convergence: the leader drives the stages
//! of [`crate::etcd_tls`] (a peer URL moved with `member update`, one etcd
//! restart granted at a time, the members' client URLs rewritten to the
//! stage's scheme so that pgpilot and the charm follow), and each unit runs
//! its etcd at the level the stage asks for once granted, recording it only
//! when its etcd answers again.

use serde_json::Value;

use super::backup::s3_fingerprint;
use super::rolling::config_fingerprint;
use super::tls::current_relation;
use super::{snap_diff, Reconciler};
use crate::context::CERTIFICATES_ENDPOINT;
use crate::etcd::{self, Level, TlsCopy};
use crate::etcd_tls::{self, Stage, UnitView};
use crate::peer::{self, EtcdEntry};
use crate::plan::Step;
use crate::snap;
use crate::status::Status;
use crate::tls;
use crate::tools::LogLevel;

impl Reconciler<'_> {
    /// The certificate etcd should hold: the unit's own as this hook leaves
    /// it (`tls.*`), else etcd's copy (`etcd-tls.*`), which outlives the
    /// certificates relation until etcd is plain again.
    fn tls_copy(&self) -> Option<TlsCopy> {
        let desired = |key: &str| {
            self.tls_desired
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let config = &self.o.snap_config;
        let copy = |key: &str| snap::text(config, key).map(str::to_string);
        let unit = || {
            Some(TlsCopy {
                cert: desired(tls::SNAP_CERT)?,
                key: desired(tls::SNAP_KEY)?,
                ca: desired(tls::SNAP_CA)?,
            })
        };
        let etcds = || {
            Some(TlsCopy {
                cert: copy(TlsCopy::KEYS[0])?,
                key: copy(TlsCopy::KEYS[1])?,
                ca: copy(TlsCopy::KEYS[2])?,
            })
        };
        unit().or_else(etcds)
    }

    fn member_value(&self, unit: &str, key: &str) -> Option<&str> {
        if unit == self.o.unit {
            return self.unit_value(key);
        }
        self.o.peer.as_ref()?.unit(unit, key)
    }

    /// The admitted members as the leader sees them; `fingerprint`: the
    /// configuration every pgpilot should run with.
    fn etcd_tls_views(&self, members: &[EtcdEntry], fingerprint: &str) -> Vec<UnitView> {
        members
            .iter()
            .map(|m| UnitView {
                name: m.name.clone(),
                level: Level::parse(self.member_value(&m.unit, peer::UNIT_ETCD_TLS)),
                peer_https: etcd::is_https(&m.peer_url),
                has_certificate: self.member_value(&m.unit, peer::UNIT_TLS_READY) == Some("true"),
                applied: self.member_value(&m.unit, peer::UNIT_CONFIG_APPLIED) == Some(fingerprint),
            })
            .collect()
    }

    fn etcd_tls_stage(&self) -> Stage {
        Stage::parse(self.app_value(peer::APP_ETCD_TLS))
    }

    /// Whether the next unit may join etcd now, and with an https peer URL
    /// (`Some(true)`); `unit` must then hold its certificate.
    pub(super) fn etcd_tls_admission(&self, members: &[EtcdEntry], unit: &str) -> Option<bool> {
        let views = self.etcd_tls_views(members, "");
        let https = self.etcd_tls_stage().admission(&views)?;
        let ready = self.member_value(unit, peer::UNIT_TLS_READY) == Some("true");
        (!https || ready).then_some(https)
    }

    /// The scheme of the members' client URLs in this stage.
    pub(super) fn etcd_tls_clients_https(&self) -> bool {
        self.etcd_tls_stage().clients_https()
    }

    /// The leader's move (step 5, after the membership): returns the
    /// members with their URLs as this plan leaves them.
    pub(super) fn etcd_tls_leader(&mut self, mut members: Vec<EtcdEntry>) -> Vec<EtcdEntry> {
        let o = self.o;
        if !o.is_leader || members.is_empty() {
            return members;
        }
        let wanted = current_relation(o.relations_on(CERTIFICATES_ENDPOINT), &o.event).is_some();
        let stage = self.etcd_tls_stage();
        let fingerprint = config_fingerprint(&members, &o.config) + &s3_fingerprint(o);
        let views = self.etcd_tls_views(&members, &fingerprint);
        let granted = self.app_value(peer::APP_ETCD_TLS_RESTART);
        let decision = etcd_tls::decide(stage, wanted, &views, granted);
        let mut grant = decision.grant.clone();
        if let Some((name, https)) = &decision.peer_update {
            let entry = members.iter().position(|m| &m.name == name);
            let id = entry.and_then(|i| {
                o.etcd.as_ref()?.iter().find_map(|m| {
                    etcd::lists_address(&m.peer_urls, &members[i].peer_url).then_some(m.id)
                })
            });
            match (entry, id) {
                (Some(i), Some(id)) => {
                    let peer_url = etcd::with_scheme(&members[i].peer_url, *https);
                    self.plan.push(Step::EtcdUpdatePeer {
                        id,
                        name: name.clone(),
                        peer_url: peer_url.clone(),
                        endpoints: peer::voter_client_urls(&members),
                    });
                    members[i].peer_url = peer_url;
                }
                _ => {
                    self.plan.log(
                        LogLevel::Info,
                        format!("etcd over TLS: {name}'s member is not in etcd's list now: its peer URL moves at a later hook"),
                    );
                    grant = None;
                }
            }
        }
        let https = decision.stage.clients_https();
        for m in members.iter_mut() {
            m.client_url = etcd::client_url_as(&m.client_url, https);
        }
        if decision.stage != stage {
            self.plan.log(
                LogLevel::Info,
                format!(
                    "etcd over TLS: stage {:?} -> {:?}",
                    stage.as_str(),
                    decision.stage.as_str()
                ),
            );
        }
        self.set_app(peer::APP_ETCD_TLS, decision.stage.as_str());
        self.set_app(peer::APP_ETCD_TLS_RESTART, grant.unwrap_or_default());
        self.set_app(peer::APP_ETCD_MEMBERS, peer::encode_members(&members));
        self.flush_app();
        members
    }

    /// The level this unit's etcd should run at, and the certificate it
    /// needs then; `Err`: it cannot start yet (no certificate).
    pub(super) fn etcd_tls_start(
        &mut self,
        me: &EtcdEntry,
    ) -> Result<(Level, Option<TlsCopy>), Status> {
        let level = etcd_tls::wanted_level(self.etcd_tls_stage(), etcd::is_https(&me.peer_url));
        let copy = self.tls_copy();
        if level != Level::Plain && copy.is_none() {
            return Err(Status::waiting(
                "waiting for this unit's certificate: the cluster's etcd runs over TLS",
            ));
        }
        self.set_unit(peer::UNIT_ETCD_TLS, level.as_str());
        Ok((level, copy))
    }

    /// A running etcd: to the stage's level once granted (the snap
    /// restarts etcd; the level is recorded once it answers), or its copy
    /// of the certificate kept current (a renewal).
    pub(super) fn etcd_tls_unit(&mut self, me: &EtcdEntry, ip: &str) {
        let o = self.o;
        let wanted = etcd_tls::wanted_level(self.etcd_tls_stage(), etcd::is_https(&me.peer_url));
        let current = Level::parse(self.unit_value(peer::UNIT_ETCD_TLS));
        let copy = self.tls_copy();
        if current == wanted {
            if current != Level::Plain {
                let diff = snap_diff(&o.snap_config, &TlsCopy::snap_keys(copy.as_ref()));
                if copy.is_some() && !diff.is_empty() {
                    self.plan.push(Step::SnapSet(diff));
                }
            }
            return;
        }
        if self.app_value(peer::APP_ETCD_TLS_RESTART) != Some(me.name.as_str()) {
            return;
        }
        if wanted != Level::Plain && copy.is_none() {
            self.plan.log(
                LogLevel::Warning,
                "etcd over TLS: this unit's turn, but it holds no certificate",
            );
            return;
        }
        let on = wanted == Level::On;
        let mut keys = etcd::listener_keys(ip, wanted, copy.as_ref());
        let cluster = snap::text(&o.snap_config, "etcd.initial-cluster").unwrap_or_default();
        let own_peer = etcd::with_scheme(&etcd::peer_url(ip), on);
        keys.push((
            "etcd.initial-cluster".into(),
            Value::from(etcd::with_own_peer_url(cluster, &me.name, &own_peer)),
        ));
        let diff = snap_diff(&o.snap_config, &keys);
        if !diff.is_empty() {
            self.plan.push(Step::SnapSet(diff));
        }
        self.flush_unit();
        self.plan.push(Step::EtcdWaitHealthy {
            endpoint: etcd::client_url_as(&etcd::client_url(ip), on),
        });
        self.plan.log(
            LogLevel::Info,
            format!(
                "etcd over TLS: this unit's etcd from {:?} to {:?}",
                current.as_str(),
                wanted.as_str()
            ),
        );
        self.set_unit(peer::UNIT_ETCD_TLS, wanted.as_str());
        self.flush_unit();
    }

    /// pgpilot's TLS towards the units' etcd: the CA while its endpoints
    /// are https, nothing otherwise.
    pub(super) fn etcd_tls_dcs_keys(&self, members: &[EtcdEntry]) -> Vec<(String, Value)> {
        let https = peer::voter_client_urls(members)
            .iter()
            .any(|u| etcd::is_https(u));
        let ca = self.tls_copy().filter(|_| https).map(|c| Value::from(c.ca));
        vec![
            ("dcs-tls.ca".to_string(), ca.unwrap_or(Value::Null)),
            ("dcs-tls.cert".to_string(), Value::Null),
            ("dcs-tls.key".to_string(), Value::Null),
        ]
    }
}

#[cfg(test)]
#[path = "etcd_tls_tests.rs"]
mod tests;
