//! The `etcd` relation in [`reconcile`]: chosen at creation, refused
//! later, the leader's fields, pgpilot's keys for the external etcd. Built
//! on the settled cluster of reconcile_tests.rs (unit 0 is the leader).

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::tests::{set_app_bag, settled, summary};
use super::*;
use crate::observe::Observed;
use crate::plan::Plan;
use crate::reconcile::reconcile;
use crate::relation::RelationView;
use crate::snap::SERVICE_PGPILOT;

const CA: &str = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----";

fn relation(provider: bool, published: bool) -> RelationView {
    let mut r = RelationView {
        id: "etcd:9".into(),
        endpoint: ETCD_ENDPOINT.into(),
        remote_app: "charmed-etcd".into(),
        ..Default::default()
    };
    if provider {
        for (k, v) in [
            ("endpoints", "10.9.0.2:2379,10.9.0.1:2379"),
            ("secret-user", "secret:user"),
            ("secret-tls", "secret:tls"),
            ("version", "3.5.18"),
        ] {
            r.remote_app_data.insert(k.into(), v.into());
        }
    }
    if published {
        r.local_app_data = etcd_client::requirer_fields("postgresql");
        r.local_app_data
            .insert(FIELD_SECRET_MTLS.into(), "secret:mtls".into());
    }
    r
}

fn provider_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let bag = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    BTreeMap::from([
        (
            "secret:user".to_string(),
            bag(&[
                ("username", "pgpilot.dev.postgresql"),
                ("uris", "https://10.9.0.2:2379,https://10.9.0.1:2379"),
            ]),
        ),
        (
            "secret:tls".to_string(),
            bag(&[("tls", "True"), ("tls-ca", CA)]),
        ),
    ])
}

fn with_identity(o: &mut Observed) {
    let content = o.secrets.app_secret.as_mut().unwrap();
    content.insert(etcd_client::SECRET_CLIENT_CERT.into(), "CERT".into());
    content.insert(etcd_client::SECRET_CLIENT_KEY.into(), "KEY".into());
}

/// A cluster of `units` that lives in the external etcd, seen from `me`:
/// no etcd members, `dcs=external`, pgpilot and etcd not running yet.
fn external(units: usize, me: usize, rel: Option<RelationView>) -> Observed {
    let mut o = settled(units, me);
    let peer = o.peer.as_mut().unwrap();
    peer.app_data.remove(crate::peer::APP_ETCD_MEMBERS);
    set_app_bag(&mut o, APP_DCS, DCS_EXTERNAL);
    o.relations
        .insert(ETCD_ENDPOINT.into(), rel.into_iter().collect());
    o.etcd = None;
    o
}

fn steps(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            // Keys of mixed trees: the summary's `<root>.*` form is for one.
            Step::SnapSet(pairs) => {
                let keys: Vec<&str> = pairs
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with("dcs-tls.") || *k == "pgpilot.dcs.endpoints")
                    .collect();
                format!("snap set ... {}", keys.join(" "))
            }
            other => summary(other),
        })
        .collect()
}

#[test]
fn a_relation_when_the_cluster_is_created_makes_it_live_in_the_external_etcd() {
    let mut o = settled(1, 0);
    let peer = o.peer.as_mut().unwrap();
    peer.app_data.remove(crate::peer::APP_ETCD_MEMBERS);
    o.services.clear();
    o.etcd = None;
    o.relations
        .insert(ETCD_ENDPOINT.into(), vec![relation(false, false)]);
    let plan = reconcile(&o);
    assert_eq!(
        steps(&plan),
        [
            "etcd client pgpilot.dev.postgresql (a new identity) on etcd:9: prefix, provided-secrets, requested-secrets",
            "app-data dcs=external",
        ]
    );
    let Step::PublishEtcdClient {
        label, app_secret, ..
    } = &plan.steps[0]
    else {
        panic!()
    };
    assert_eq!(label, "etcd.9.mtls.secret");
    assert!(
        app_secret.contains_key("operator-password"),
        "the passwords are kept"
    );
    assert_eq!(
        plan.unit_status,
        Some(Status::waiting(
            "waiting for the leader to make the etcd client certificate"
        ))
    );
}

#[test]
fn the_answer_puts_pgpilot_on_the_external_etcd_and_the_units_etcd_stays_down() {
    let mut o = external(2, 0, Some(relation(true, true)));
    with_identity(&mut o);
    o.etcd_client_secrets = provider_secrets();
    o.services.clear();
    let plan = reconcile(&o);
    assert_eq!(
        steps(&plan),
        [
            "snap set ... pgpilot.dcs.endpoints dcs-tls.ca dcs-tls.cert dcs-tls.key",
            "start pgpilot",
            "unit-data config-applied",
        ]
    );
    let Step::SnapSet(pairs) = &plan.steps[0] else {
        panic!()
    };
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    assert_eq!(
        get("pgpilot.dcs.endpoints"),
        Some(&Value::from(vec![
            "https://10.9.0.1:2379",
            "https://10.9.0.2:2379"
        ]))
    );
    assert_eq!(get("dcs-tls.ca"), Some(&Value::from(CA)));
    assert_eq!(get("dcs-tls.key"), Some(&Value::from("KEY")));
    assert!(
        !plan.steps.iter().any(
            |s| matches!(s, Step::StartServices(v) if v.contains(&crate::snap::SERVICE_ETCD.to_string()))
        ),
        "the units' etcd is not started"
    );
    // Two units with an external etcd fail over: no warning.
    assert_eq!(plan.app_status, Some(Status::active("")));
}

#[test]
fn a_running_external_cluster_is_settled() {
    let mut o = external(2, 1, Some(relation(true, false)));
    with_identity(&mut o);
    o.etcd_client_secrets = provider_secrets();
    let mut keys = Vec::new();
    ClusterEtcd {
        members: Vec::new(),
        external: Some((
            etcd_client::provider_answer(&relation(true, false), &provider_secrets()).unwrap(),
            ClientIdentity::from_secret(o.secrets.app_secret.as_ref().unwrap()).unwrap(),
        )),
        refusal: None,
    }
    .override_keys(&mut keys);
    let doc = o.snap_config.as_object_mut().unwrap();
    doc.remove("etcd");
    for (k, v) in keys {
        let mut node = &mut *doc;
        let parts: Vec<&str> = k.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Default::default()))
                .as_object_mut()
                .unwrap();
        }
        node.insert(parts[parts.len() - 1].to_string(), v);
    }
    o.services.retain(|s| s.name == SERVICE_PGPILOT);
    // The fixture's config fingerprint counts the units' etcd members: the
    // first run records the one without them, and that is all.
    let first = reconcile(&o);
    assert_eq!(steps(&first), ["unit-data config-applied"]);
    let Step::SetUnitData(data) = &first.steps[0] else {
        panic!()
    };
    let me = o.unit.clone();
    let bag = o.peer.as_mut().unwrap().unit_data.get_mut(&me).unwrap();
    bag.extend(data.clone());
    let plan = reconcile(&o);
    assert_eq!(steps(&plan), Vec::<String>::new(), "{:?}", plan.logs);
    assert_eq!(plan.unit_status, None);
}

#[test]
fn an_etcd_relation_added_to_a_running_cluster_is_refused() {
    let mut o = settled(3, 1);
    o.relations
        .insert(ETCD_ENDPOINT.into(), vec![relation(true, false)]);
    let plan = reconcile(&o);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::PublishEtcdClient { .. } | Step::SnapSet(_))),
        "{:?}",
        plan.steps
    );
    assert_eq!(
        plan.unit_status,
        Some(Status::blocked(refuse_added("postgresql", "charmed-etcd")))
    );
    assert!(refuse_added("postgresql", "charmed-etcd")
        .ends_with("juju remove-relation postgresql:etcd charmed-etcd"));
}

#[test]
fn the_relation_of_an_external_cluster_removed_is_refused() {
    let mut o = external(2, 0, None);
    with_identity(&mut o);
    let plan = reconcile(&o);
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::SnapSet(_))),
        "pgpilot's keys are left alone: {:?}",
        plan.steps
    );
    assert_eq!(
        plan.unit_status,
        Some(Status::blocked(refuse_removed("postgresql")))
    );
    // relation-broken: the same, in that very hook.
    let mut o = external(2, 0, Some(relation(true, true)));
    with_identity(&mut o);
    o.event = Event::Relation {
        endpoint: ETCD_ENDPOINT.into(),
        kind: RelationKind::Broken,
        relation_id: "etcd:9".into(),
        remote_unit: None,
        remote_app: Some("charmed-etcd".into()),
        departing_unit: None,
    };
    assert_eq!(
        reconcile(&o).unit_status,
        Some(Status::blocked(refuse_removed("postgresql")))
    );
}

#[test]
fn a_unit_waits_for_the_leaders_choice_and_identity() {
    let mut o = settled(3, 2);
    o.peer
        .as_mut()
        .unwrap()
        .app_data
        .remove(crate::peer::APP_ETCD_MEMBERS);
    o.relations
        .insert(ETCD_ENDPOINT.into(), vec![relation(true, false)]);
    assert_eq!(
        reconcile(&o).unit_status,
        Some(Status::waiting(
            "waiting for the leader to choose the cluster's etcd"
        ))
    );
    let o = external(3, 2, Some(relation(true, false)));
    assert_eq!(
        reconcile(&o).unit_status,
        Some(Status::waiting(
            "waiting for the leader to make the etcd client certificate"
        ))
    );
}

#[test]
fn the_leader_republishes_only_what_differs() {
    let mut o = external(2, 0, Some(relation(true, true)));
    with_identity(&mut o);
    o.etcd_client_secrets = provider_secrets();
    let mut r = relation(true, true);
    r.local_app_data
        .insert("prefix".into(), "/somewhere/else/".into());
    o.relations.insert(ETCD_ENDPOINT.into(), vec![r]);
    let plan = reconcile(&o);
    assert!(
        plan.steps.iter().any(|s| matches!(s,
            Step::SetRelationData { relation_id, app: true, data }
                if relation_id == "etcd:9"
                    && data == &BTreeMap::from([("prefix".to_string(), "/pgpilot/postgresql/".to_string())]))),
        "{:?}",
        plan.steps
    );
    // A published relation with its identity: no new secret.
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::PublishEtcdClient { .. })));
}
