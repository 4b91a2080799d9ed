//! The `cos-agent` relation: every unit keeps its own `config` document
//! ([`crate::cos`]) in its unit bag of each cos-agent relation, rewritten
//! when what it says changes (this unit's address, TLS on the API) and
//! left alone otherwise.

use std::collections::BTreeMap;

use crate::context::{Event, RelationKind, COS_ENDPOINT};
use crate::cos::{self, MetricsTarget, Topology, CONFIG_KEY};
use crate::observe::Observed;
use crate::plan::Step;
use crate::relation::RelationView;
use crate::snap;

use super::API_PORT;

/// Snap keys any of which, set, means the REST API (and so `/metrics`)
/// serves HTTPS: the unit's certificate (`tls.cert`, which `[api.tls]`
/// names), or an `[api.tls]` of its own.
const API_TLS_KEYS: &[&str] = &["tls.cert", "pgpilot.api.tls.cert-file"];

fn api_tls(snap_config: &serde_json::Value) -> bool {
    API_TLS_KEYS
        .iter()
        .any(|k| snap::lookup(snap_config, k).is_some_and(|v| !v.is_null()))
}

/// The relation-set steps that bring every cos-agent relation's unit bag
/// to this unit's document (none when it is there already), for a unit
/// whose address is `address`.
pub fn cos_agent_steps(o: &Observed, address: &str) -> Result<Vec<Step>, cos::CosError> {
    let topology = Topology {
        model: o.model.clone(),
        model_uuid: o.model_uuid.clone(),
        application: o.app.clone(),
        unit: o.unit.clone(),
    };
    let target = MetricsTarget {
        address: address.to_string(),
        port: API_PORT,
        tls: api_tls(&o.snap_config),
    };
    steps(o.relations_on(COS_ENDPOINT), &o.event, &topology, &target)
}

fn steps(
    relations: &[RelationView],
    event: &Event,
    topology: &Topology,
    target: &MetricsTarget,
) -> Result<Vec<Step>, cos::CosError> {
    let relations: Vec<_> = relations
        .iter()
        .filter(|r| !is_broken(event, &r.id))
        .collect();
    if relations.is_empty() {
        return Ok(Vec::new());
    }
    let document = cos::agent_config(topology, target)?;
    Ok(relations
        .into_iter()
        .filter(|r| r.local_unit_data.get(CONFIG_KEY) != Some(&document))
        .map(|r| Step::SetRelationData {
            relation_id: r.id.clone(),
            app: false,
            data: BTreeMap::from([(CONFIG_KEY.to_string(), document.clone())]),
        })
        .collect())
}

/// This hook is the relation's `-relation-broken`: nothing to write to.
fn is_broken(event: &Event, id: &str) -> bool {
    matches!(event, Event::Relation { relation_id, kind: RelationKind::Broken, .. }
        if relation_id == id)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn topology() -> Topology {
        Topology {
            model: "dev".into(),
            model_uuid: "0123abcd-0000-4000-8000-000000000000".into(),
            application: "postgresql".into(),
            unit: "postgresql/1".into(),
        }
    }

    fn target(address: &str, tls: bool) -> MetricsTarget {
        MetricsTarget {
            address: address.into(),
            port: API_PORT,
            tls,
        }
    }

    fn relations(bags: &[(&str, Option<&str>)]) -> Vec<RelationView> {
        bags.iter()
            .map(|(id, config)| RelationView {
                id: id.to_string(),
                endpoint: COS_ENDPOINT.into(),
                remote_app: "grafana-agent".into(),
                local_unit_data: config
                    .map(|c| BTreeMap::from([(CONFIG_KEY.to_string(), c.to_string())]))
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect()
    }

    fn run(bags: &[(&str, Option<&str>)], event: &Event, target: &MetricsTarget) -> Vec<Step> {
        steps(&relations(bags), event, &topology(), target).unwrap()
    }

    fn written(steps: &[Step]) -> Vec<(String, Value)> {
        steps
            .iter()
            .map(|s| match s {
                Step::SetRelationData {
                    relation_id,
                    app: false,
                    data,
                } => {
                    assert_eq!(data.len(), 1, "only `config`: {data:?}");
                    (
                        relation_id.clone(),
                        serde_json::from_str(&data[CONFIG_KEY]).unwrap(),
                    )
                }
                other => panic!("unexpected step {other:?}"),
            })
            .collect()
    }

    fn target_of(doc: &Value) -> (&str, &str) {
        let job = &doc["metrics_scrape_jobs"][0];
        (
            job["static_configs"][0]["targets"][0].as_str().unwrap(),
            job["scheme"].as_str().unwrap(),
        )
    }

    #[test]
    fn not_related_nothing_to_do() {
        assert!(run(&[], &Event::UpdateStatus, &target("10.0.0.2", false)).is_empty());
    }

    #[test]
    fn a_new_relation_gets_this_units_document() {
        let steps = run(
            &[("cos-agent:5", None)],
            &Event::UpdateStatus,
            &target("10.0.0.2", false),
        );
        let w = written(&steps);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, "cos-agent:5");
        assert_eq!(target_of(&w[0].1), ("10.0.0.2:8008", "http"));
        let job = &w[0].1["metrics_scrape_jobs"][0]["job_name"];
        assert_eq!(job, "postgresql_1_pgpilot");
        let group = &w[0].1["metrics_alert_rules"]["groups"][0]["name"];
        assert_eq!(group, "dev_0123abcd_postgresql_pgpilot_ha_rules");
    }

    #[test]
    fn unchanged_writes_nothing_and_a_new_address_rewrites() {
        let here = target("10.0.0.2", false);
        let steps = run(&[("cos-agent:5", None)], &Event::UpdateStatus, &here);
        let Step::SetRelationData { data, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        let doc = data[CONFIG_KEY].clone();
        let settled = [("cos-agent:5", Some(doc.as_str()))];
        assert!(run(&settled, &Event::UpdateStatus, &here).is_empty());
        let moved = run(&settled, &Event::UpdateStatus, &target("10.0.0.9", false));
        assert_eq!(target_of(&written(&moved)[0].1), ("10.0.0.9:8008", "http"));
        let tls = run(&settled, &Event::UpdateStatus, &target("10.0.0.2", true));
        assert_eq!(target_of(&written(&tls)[0].1), ("10.0.0.2:8008", "https"));
    }

    #[test]
    fn a_broken_relation_is_not_written() {
        let broken = Event::Relation {
            endpoint: COS_ENDPOINT.into(),
            kind: RelationKind::Broken,
            relation_id: "cos-agent:5".into(),
            remote_unit: None,
            remote_app: Some("grafana-agent".into()),
            departing_unit: None,
        };
        let bags = [("cos-agent:5", None), ("cos-agent:6", None)];
        let w = written(&run(&bags, &broken, &target("10.0.0.2", false)));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, "cos-agent:6");
    }

    #[test]
    fn tls_is_read_from_the_snap() {
        use serde_json::json;
        assert!(api_tls(
            &json!({"tls": {"cert": "PEM", "key": "PEM", "ca": "PEM"}})
        ));
        assert!(api_tls(
            &json!({"pgpilot": {"api": {"tls": {"cert-file": "/x/cert.pem"}}}})
        ));
        assert!(!api_tls(
            &json!({"pgpilot": {"api": {"listen": "10.0.0.2:8008"}}})
        ));
        assert!(!api_tls(&json!({"tls": {"cert": null}})));
    }
}
