//! Other applications on the model, played by the test: a client asking
//! for a database, s3-integrator, a certificates provider, grafana-agent,
//! charmed-etcd. The test writes their bags and secrets; our units run the
//! hooks Juju would run for them.
//!
//! # What it reproduces
//!
//! - `juju integrate`: the relation exists with the remote application's
//!   units in it; every unit of ours runs `-relation-created`, then
//!   `-relation-joined` and `-relation-changed` for each remote unit.
//!   A unit added later runs the same for every relation (before
//!   `leader-elected`/`leader-settings-changed`, as in Juju's order).
//! - A remote bag changed by the test: `-relation-changed` on every unit of
//!   ours (JUJU_REMOTE_APP for the application bag, JUJU_REMOTE_UNIT for a
//!   unit's), queued, coalesced like every event.
//! - A change our units commit to their side fires nothing on our side (in
//!   Juju it wakes the remote application only); the test reads it with
//!   [`Deployment::local_app_data`] / [`Deployment::local_unit_data`].
//! - Secrets the remote application owns and grants to the relation
//!   ([`Deployment::add_remote_secret`]); what a consumer on the remote
//!   side reads of ours ([`Deployment::secret_content`]: the latest
//!   revision, if granted to the relation).
//! - `juju remove-relation`: the remote units leave at once; each unit of
//!   ours runs `-relation-departed` for each of them and
//!   `-relation-broken`, then is out of the relation; the relation goes
//!   with the last.
//!
//! # What it does not reproduce
//!
//! - The remote application's own hooks and charm (the test is its
//!   charm); cross-model relations (offers, secret encryption); subordinate
//!   scope (grafana-agent is a principal-less stand-in).

use super::*;

impl Deployment {
    /// `juju integrate postgresql:ENDPOINT REMOTE_APP` with `remote_units`
    /// units on the other side (`REMOTE_APP/0`, ...): the relation id.
    pub fn relate(
        &self,
        endpoint: &str,
        remote_app: &str,
        remote_units: usize,
    ) -> anyhow::Result<u32> {
        let sh = &self.shared;
        anyhow::ensure!(
            sh.model.charm_meta().endpoint_known(endpoint),
            "the charm has no endpoint {endpoint:?}"
        );
        let rid = sh.model.add_relation(endpoint, remote_app);
        sh.model.update(|st| {
            let rel = st.relations.get_mut(&rid).expect("just added");
            for n in 0..remote_units {
                let unit = format!("{remote_app}/{n}");
                let address = format!("{}.{}", sh.net, 200 + n);
                super::super::join(rel, &unit, &address);
            }
        });
        for agent in sh.agents() {
            for job in relation_jobs(sh, rid) {
                agent.push(job);
            }
        }
        Ok(rid)
    }

    /// The remote application's leader writes its application bag (an
    /// empty value deletes): `-relation-changed` on every unit of ours.
    pub fn set_remote_app_data(&self, rid: u32, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let (key, app) = self.shared.model.update(|st| {
            let rel = st.relations.get_mut(&rid).context("no such relation")?;
            let app = rel.remote_app.clone();
            update_bag(rel.app_data.entry(app.clone()).or_default(), data);
            anyhow::Ok((rel.key(), app))
        })?;
        self.fire_relation(&key, "JUJU_REMOTE_APP", &app);
        Ok(())
    }

    /// A remote unit writes its bag: `-relation-changed` on every unit of
    /// ours.
    pub fn set_remote_unit_data(
        &self,
        rid: u32,
        remote_unit: &str,
        data: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let key = self.shared.model.update(|st| {
            let rel = st.relations.get_mut(&rid).context("no such relation")?;
            anyhow::ensure!(
                rel.units.contains(remote_unit),
                "{remote_unit} is not in relation {rid}"
            );
            update_bag(
                rel.unit_data.entry(remote_unit.to_string()).or_default(),
                data,
            );
            anyhow::Ok(rel.key())
        })?;
        self.fire_relation(&key, "JUJU_REMOTE_UNIT", remote_unit);
        Ok(())
    }

    fn fire_relation(&self, key: &str, var: &str, value: &str) {
        let endpoint = key.split(':').next().unwrap_or_default();
        for agent in self.shared.agents() {
            agent.push(hook(
                &format!("{endpoint}-relation-changed"),
                &[("JUJU_RELATION_ID", key), (var, value)],
            ));
        }
    }

    /// `juju remove-relation`: departed for each remote unit, then broken,
    /// on every unit of ours.
    pub fn unrelate(&self, rid: u32) -> anyhow::Result<()> {
        let sh = &self.shared;
        let (key, endpoint, remote) = sh.model.update(|st| {
            let rel = st.relations.get_mut(&rid).context("no such relation")?;
            let app = rel.remote_app.clone();
            let remote: Vec<String> = rel
                .units
                .iter()
                .filter(|u| super::super::state::app_of(u) == app)
                .cloned()
                .collect();
            for u in &remote {
                rel.units.remove(u);
            }
            anyhow::Ok((rel.key(), rel.endpoint.clone(), remote))
        })?;
        for agent in sh.agents() {
            for unit in &remote {
                agent.push(hook(
                    &format!("{endpoint}-relation-departed"),
                    &[
                        ("JUJU_RELATION_ID", &key),
                        ("JUJU_REMOTE_UNIT", unit),
                        ("JUJU_DEPARTING_UNIT", unit),
                    ],
                ));
            }
            agent.push(hook(
                &format!("{endpoint}-relation-broken"),
                &[("JUJU_RELATION_ID", &key)],
            ));
            agent.push(Job::LeaveRelation(rid));
        }
        Ok(())
    }

    /// Our application's bag on the relation (what the remote side reads).
    pub fn local_app_data(&self, rid: u32) -> BTreeMap<String, String> {
        let st = self.shared.model.state();
        st.relations
            .get(&rid)
            .and_then(|r| r.app_data.get(&st.application).cloned())
            .unwrap_or_default()
    }

    /// One of our units' bags on the relation.
    pub fn local_unit_data(&self, rid: u32, unit: &str) -> BTreeMap<String, String> {
        self.shared
            .model
            .state()
            .relations
            .get(&rid)
            .and_then(|r| r.unit_data.get(unit).cloned())
            .unwrap_or_default()
    }

    /// A secret the remote application owns, granted to the relation (as a
    /// requirer's `mtls-cert` or `requested-entity-secret`): its URI.
    pub fn add_remote_secret(&self, rid: u32, content: &[(&str, &str)]) -> anyhow::Result<String> {
        let bag: BTreeMap<String, String> = content
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let id = self.shared.model.update(|st| {
            let app = st
                .relations
                .get(&rid)
                .context("no such relation")?
                .remote_app
                .clone();
            st.next_secret += 1;
            let id = super::super::state::secret_id(st.next_secret);
            st.secrets.insert(
                id.clone(),
                Secret {
                    id: id.clone(),
                    owner: SecretOwner::Application(app),
                    label: None,
                    description: None,
                    revisions: BTreeMap::from([(1, bag)]),
                    grants: vec![Grant {
                        relation_id: rid,
                        unit: None,
                    }],
                    tracked: BTreeMap::new(),
                },
            );
            anyhow::Ok(id)
        })?;
        Ok(format!("secret:{id}"))
    }

    /// What the remote application reads of a secret our charm granted to
    /// one of its relations: the latest revision's content.
    pub fn secret_content(&self, uri: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let id = super::super::state::parse_secret_uri(uri).to_string();
        let st = self.shared.model.state();
        let secret = st
            .secrets
            .get(&id)
            .with_context(|| format!("no secret {uri}"))?;
        let granted = secret.grants.iter().any(|g| {
            st.relations
                .get(&g.relation_id)
                .is_some_and(|r| !r.peer && g.unit.is_none())
        });
        anyhow::ensure!(granted, "secret {uri} is granted to no other application");
        Ok(secret.revisions[&secret.latest()].clone())
    }
}

/// The events of joining relation `rid`: created, then joined and changed
/// for each remote unit.
fn relation_jobs(sh: &Shared, rid: u32) -> Vec<Job> {
    let st = sh.model.state();
    let Some(rel) = st.relations.get(&rid) else {
        return Vec::new();
    };
    let key = rel.key();
    let mut jobs = vec![hook(
        &format!("{}-relation-created", rel.endpoint),
        &[("JUJU_RELATION_ID", &key)],
    )];
    for unit in rel
        .units
        .iter()
        .filter(|u| super::super::state::app_of(u) == rel.remote_app)
    {
        for side in ["joined", "changed"] {
            jobs.push(hook(
                &format!("{}-relation-{side}", rel.endpoint),
                &[("JUJU_RELATION_ID", &key), ("JUJU_REMOTE_UNIT", unit)],
            ));
        }
    }
    jobs
}

/// A new unit's events for the relations to other applications it joined.
pub(super) fn joining_jobs(sh: &Shared, unit: &str) -> Vec<Job> {
    let ids: Vec<u32> = sh
        .model
        .state()
        .relations
        .values()
        .filter(|r| !r.peer && r.units.contains(unit))
        .map(|r| r.id)
        .collect();
    ids.into_iter()
        .flat_map(|rid| relation_jobs(sh, rid))
        .collect()
}

fn update_bag(bag: &mut BTreeMap<String, String>, data: &[(&str, &str)]) {
    for (k, v) in data {
        if v.is_empty() {
            bag.remove(*k);
        } else {
            bag.insert(k.to_string(), v.to_string());
        }
    }
}
