//! Steps 5 and 6 of a convergence: the etcd the cluster lives in. Either
//! the units' own (the leader keeps the membership, each unit starts its
//! member), or an external one over the `etcd` relation (charmed-etcd):
//! chosen once, when the cluster is created, and recorded in the peer
//! application bag ([`etcd_client`]).

use serde_json::Value;

use super::{app_status, snap_diff, Reconciler};
use crate::context::{Event, RelationKind, ETCD_ENDPOINT};
use crate::etcd;
use crate::etcd_client::{
    self, ClientIdentity, ExternalEtcd, APP_DCS, DCS_EXTERNAL, FIELD_SECRET_MTLS,
};
use crate::peer::{self, EtcdEntry};
use crate::plan::Step;
use crate::relation::RelationView;
use crate::snap::SERVICE_ETCD;
use crate::status::{msg, Status};

/// The etcd of this convergence.
pub(super) struct ClusterEtcd {
    /// The units' etcd members (empty with an external etcd).
    pub members: Vec<EtcdEntry>,
    /// The external etcd and the identity to reach it with.
    pub external: Option<(ExternalEtcd, ClientIdentity)>,
    /// A relation that cannot be honoured: the unit's status, while the
    /// cluster goes on as it is.
    pub refusal: Option<Status>,
}

impl ClusterEtcd {
    /// pgpilot's keys with the external etcd's endpoints and TLS files in
    /// place of the units' etcd.
    pub fn override_keys(&self, keys: &mut Vec<(String, Value)>) {
        let Some((ext, id)) = &self.external else {
            return;
        };
        keys.retain(|(k, _)| k != "pgpilot.dcs.endpoints");
        keys.extend([
            (
                "pgpilot.dcs.endpoints".to_string(),
                Value::from(ext.uris.clone()),
            ),
            ("dcs-tls.ca".to_string(), Value::from(ext.ca.clone())),
            ("dcs-tls.cert".to_string(), Value::from(id.cert.clone())),
            ("dcs-tls.key".to_string(), Value::from(id.key.clone())),
        ]);
    }
}

/// This hook is the relation's `-relation-broken`.
fn is_broken(event: &Event, id: &str) -> bool {
    matches!(event, Event::Relation { relation_id, kind: RelationKind::Broken, .. }
        if relation_id == id)
}

pub fn refuse_added(app: &str, remote: &str) -> String {
    format!(
        "this cluster keeps its state in the units' etcd: an external etcd cannot be added to it; remove the relation: juju remove-relation {app}:etcd {remote}"
    )
}

pub fn refuse_removed(app: &str) -> String {
    format!(
        "this cluster keeps its state in the external etcd of the removed etcd relation: relate it again: juju integrate {app}:etcd <charmed-etcd application>"
    )
}

impl Reconciler<'_> {
    /// Steps 5 and 6. `Err`: the unit's status while it waits (or is
    /// blocked) before pgpilot.
    pub(super) fn cluster_etcd(&mut self, ip: &str) -> Result<ClusterEtcd, Status> {
        let o = self.o;
        let units = o.peer.as_ref().map(|p| p.units().len()).unwrap_or(1);
        let relation = o
            .relations_on(ETCD_ENDPOINT)
            .iter()
            .find(|r| !is_broken(&o.event, &r.id));
        // Recorded: `dcs=external`; the units' own etcd is implied by its
        // members (clusters created before the choice existed have them).
        let external = match self.app_value(APP_DCS) {
            Some(recorded) => recorded == DCS_EXTERNAL,
            None if self.app_value(peer::APP_ETCD_MEMBERS).is_some() => false,
            None if relation.is_none() => false,
            None if !o.is_leader => {
                return Err(Status::waiting(
                    "waiting for the leader to choose the cluster's etcd",
                ))
            }
            None => {
                // The cluster is created now, with the relation: for good.
                self.set_app(APP_DCS, DCS_EXTERNAL);
                true
            }
        };
        if o.is_leader {
            self.app_status = Some(app_status(o, units, external));
        }
        if !external {
            let members = self.own_etcd(ip)?;
            let refusal = relation.map(|r| Status::blocked(refuse_added(&o.app, &r.remote_app)));
            return Ok(ClusterEtcd {
                members,
                external: None,
                refusal,
            });
        }
        let Some(relation) = relation else {
            return Err(Status::blocked(refuse_removed(&o.app)));
        };
        let identity = o
            .secrets
            .app_secret
            .as_ref()
            .and_then(ClientIdentity::from_secret);
        if o.is_leader {
            self.publish_client(relation, identity.as_ref());
        }
        let Some(identity) = identity else {
            return Err(Status::waiting(
                "waiting for the leader to make the etcd client certificate",
            ));
        };
        let answer = etcd_client::provider_answer(relation, &o.etcd_client_secrets)
            .map_err(|why| Status::waiting(format!("waiting for the external etcd: {why}")))?;
        Ok(ClusterEtcd {
            members: Vec::new(),
            external: Some((answer, identity)),
            refusal: None,
        })
    }

    /// The leader's side of the relation: the requirer's fields and our
    /// certificate in a secret granted to it (the identity made first when
    /// there is none).
    fn publish_client(&mut self, relation: &RelationView, identity: Option<&ClientIdentity>) {
        let o = self.o;
        let Some(app_secret_id) = o.secrets.app_secret_id.clone() else {
            return; // created in this hook (step 4): the next one goes on.
        };
        let mut fields = etcd_client::requirer_fields(&o.app);
        let published = relation.local_app_data.get(FIELD_SECRET_MTLS);
        if let (Some(_), Some(uri)) = (identity, published) {
            fields.insert(FIELD_SECRET_MTLS.into(), uri.clone());
            let changes = crate::relation::bag_changes(
                &relation
                    .local_app_data
                    .iter()
                    .filter(|(k, _)| fields.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                &fields,
            );
            if !changes.is_empty() {
                self.plan.push(Step::SetRelationData {
                    relation_id: relation.id.clone(),
                    app: true,
                    data: changes,
                });
            }
            return;
        }
        self.plan.push(Step::PublishEtcdClient {
            relation_id: relation.id.clone(),
            label: etcd_client::mtls_label(relation),
            cn: etcd_client::client_cn(&o.model, &o.app),
            app_secret_id,
            app_secret: o.secrets.app_secret.clone().unwrap_or_default(),
            cert: identity.map(|i| i.cert.clone()),
            fields,
        });
    }

    /// The units' own etcd: the leader keeps the membership (step 5), this
    /// unit's member is started once admitted (step 6).
    fn own_etcd(&mut self, ip: &str) -> Result<Vec<EtcdEntry>, Status> {
        let o = self.o;
        let me = o.member();
        let members = self.manage_etcd(ip);
        let members = self.etcd_tls_leader(members);
        let Some(my_entry) = members.iter().find(|m| m.name == me).cloned() else {
            return Err(Status::waiting(msg::AWAITING_ETCD_ADMISSION));
        };
        if !o.service_active(SERVICE_ETCD) {
            if self.unit_value(peer::UNIT_ETCD_STARTED) != Some("true") {
                let (level, copy) = self.etcd_tls_start(&my_entry)?;
                let token = format!("{}-{}", o.model, o.app);
                let keys =
                    etcd::bootstrap_keys(&my_entry, ip, &members, &token, level, copy.as_ref());
                let diff = snap_diff(&o.snap_config, &keys);
                if !diff.is_empty() {
                    self.plan.push(Step::SnapSet(diff));
                }
            }
            self.plan
                .push(Step::StartServices(vec![SERVICE_ETCD.to_string()]));
        } else {
            self.etcd_tls_unit(&my_entry, ip);
        }
        self.set_unit(peer::UNIT_ETCD_STARTED, "true");
        self.flush_unit();
        Ok(members)
    }
}

#[cfg(test)]
#[path = "etcd_client_tests.rs"]
mod tests;
