//! Table tests of the `certificates` relation: [`reconcile`] on a settled
//! 3-unit cluster seen from unit 1, related to a provider.

use serde_json::{json, Value};

use super::super::reconcile;
use super::super::tests::{settled, with_event};
use crate::context::{Event, RelationKind, CERTIFICATES_ENDPOINT};
use crate::observe::Observed;
use crate::peer;
use crate::plan::{Plan, Step};
use crate::relation::RelationView;
use crate::tls::{self, PrivateKey};

const CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\nOURS\n-----END CERTIFICATE REQUEST-----";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----";
/// Its fingerprint for unit 1 at 10.0.0.2.
const WANTED: &str = "CN=10.0.0.2;IP=10.0.0.2;DNS=postgresql-1";
const RID: &str = "certificates:9";

fn certificates(entries: &[(&str, &str, bool)]) -> String {
    let list: Vec<Value> = entries
        .iter()
        .map(|(csr, cert, revoked)| {
            json!({"certificate": cert, "certificate_signing_request": csr,
                   "ca": "CA", "chain": [cert, "CA"], "revoked": revoked})
        })
        .collect();
    Value::from(list).to_string()
}

/// Unit 1 of a settled cluster, related to a provider: its key read, its
/// request in its bag (for this address), the provider's bag as given.
fn related(key: bool, request: bool, provider: Option<String>) -> Observed {
    let mut o = settled(3, 1);
    let mut rel = RelationView {
        id: RID.into(),
        endpoint: CERTIFICATES_ENDPOINT.into(),
        remote_app: "self-signed-certificates".into(),
        ..Default::default()
    };
    if request {
        rel.local_unit_data
            .insert(tls::CSRS_KEY.into(), tls::encode_request(CSR));
        set_mine(&mut o, peer::UNIT_TLS_REQUESTED, WANTED);
    }
    if key {
        set_mine(&mut o, peer::UNIT_TLS_SECRET, "secret:key1");
        o.tls_key = Some(Ok(PrivateKey(KEY.into())));
    }
    if let Some(p) = provider {
        rel.remote_app_data.insert(tls::CERTIFICATES_KEY.into(), p);
    }
    o.relations.insert(CERTIFICATES_ENDPOINT.into(), vec![rel]);
    o
}

/// A key of unit 1's peer bag.
fn set_mine(o: &mut Observed, key: &str, value: &str) {
    let peer = o.peer.as_mut().expect("a peer relation");
    let bag = peer.unit_data.get_mut("postgresql/1").expect("unit 1");
    bag.insert(key.into(), value.into());
}

/// The snap holds these TLS values.
fn in_force(mut o: Observed, cert: &str) -> Observed {
    o.snap_config["tls"] = json!({"cert": cert.trim(), "key": KEY, "ca": "CA"});
    o
}

fn summary(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::RequestCertificate {
                relation_id,
                wanted,
                key,
            } => Some(format!(
                "request {relation_id} {} {}",
                wanted.fingerprint(),
                if key.is_some() { "same key" } else { "new key" }
            )),
            Step::SnapSet(pairs) => {
                let tls: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| k.starts_with("tls."))
                    .map(|(k, v)| match v {
                        Value::Null => format!("{k}!"),
                        Value::String(s) => format!("{k}={}", s.lines().next().unwrap_or("")),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                (!tls.is_empty()).then(|| format!("snap set {}", tls.join(" ")))
            }
            Step::SetUnitData(data) => data
                .get(peer::UNIT_TLS_REQUESTED)
                .map(|v| format!("tls-requested={v}")),
            Step::RestartMember(_) => Some("restart".into()),
            _ => None,
        })
        .collect()
}

/// One row per situation: the steps of the certificates relation.
#[test]
fn the_request_and_the_certificate_in_force() {
    let ours = |cert: &str| certificates(&[(CSR, cert, false)]);
    let real = include_str!("../testdata/cert.pem");
    let broken = Event::Relation {
        endpoint: CERTIFICATES_ENDPOINT.into(),
        kind: RelationKind::Broken,
        relation_id: RID.into(),
        remote_unit: None,
        remote_app: None,
        departing_unit: None,
    };
    type Row = (&'static str, Observed, Vec<String>);
    let rows: Vec<Row> = vec![
        (
            "related, no key yet: a new key and a request",
            related(false, false, None),
            vec![
                format!("request {RID} {WANTED} new key"),
                format!("tls-requested={WANTED}"),
            ],
        ),
        (
            "a key, no request (a new relation): a request with the same key",
            related(true, false, None),
            vec![
                format!("request {RID} {WANTED} same key"),
                format!("tls-requested={WANTED}"),
            ],
        ),
        (
            "requested, nothing issued yet: wait",
            related(true, true, None),
            vec![],
        ),
        (
            "issued for another unit only: wait",
            related(true, true, Some(certificates(&[("OTHER", "C9", false)]))),
            vec![],
        ),
        (
            "issued for our request: TLS on, by reload (no restart)",
            related(true, true, Some(ours("C1"))),
            vec!["snap set tls.cert=C1 tls.key=-----BEGIN PRIVATE KEY----- tls.ca=CA".into()],
        ),
        (
            "in force already: nothing",
            in_force(related(true, true, Some(ours("C1"))), "C1"),
            vec![],
        ),
        (
            "renewed for the same request: the new certificate, by reload",
            in_force(related(true, true, Some(ours("C2"))), "C1"),
            vec!["snap set tls.cert=C2".into()],
        ),
        (
            "revoked: ask again with the same key, keep what is in force",
            in_force(
                related(true, true, Some(certificates(&[(CSR, "C1", true)]))),
                "C1",
            ),
            vec![format!("request {RID} {WANTED} same key")],
        ),
        (
            "past 90% of its lifetime: ask again, keep serving it",
            in_force(related(true, true, Some(ours(real))), real),
            vec![format!("request {RID} {WANTED} same key")],
        ),
        (
            "a request made for another address: ask again",
            {
                let mut o = related(true, true, Some(ours("C1")));
                let old = "CN=10.9.9.9;IP=10.9.9.9;DNS=postgresql-1";
                set_mine(&mut o, peer::UNIT_TLS_REQUESTED, old);
                in_force(o, "C1")
            },
            vec![
                format!("request {RID} {WANTED} same key"),
                format!("tls-requested={WANTED}"),
            ],
        ),
        (
            "relation-broken: TLS off",
            with_event(
                in_force(related(true, true, Some(ours("C1"))), "C1"),
                broken.clone(),
            ),
            vec![
                "tls-requested=".into(),
                "snap set tls.cert! tls.key! tls.ca!".into(),
            ],
        ),
        ("no relation and TLS off: nothing", settled(3, 1), vec![]),
        (
            "the key cannot be read now: wait, TLS as it is",
            {
                let mut o = in_force(related(true, true, Some(ours("C2"))), "C1");
                o.tls_key = Some(Err("permission denied".into()));
                o
            },
            vec![],
        ),
        (
            "a provider bag that is not a list: wait",
            related(true, true, Some("{\"not\": \"a list\"}".into())),
            vec![],
        ),
    ];
    for (name, o, want) in rows {
        let plan = reconcile(&o);
        assert_eq!(summary(&plan), want, "{name}");
    }
}

/// The key's text never reaches a log line.
#[test]
fn the_key_is_never_logged() {
    let o = related(true, true, Some(certificates(&[(CSR, "C1", false)])));
    let plan = reconcile(&o);
    for step in &plan.steps {
        assert!(!step.describe().contains("KEY\n"), "{}", step.describe());
    }
    let o = related(false, false, None);
    for step in &reconcile(&o).steps {
        assert!(!format!("{step:?}").contains("-----BEGIN PRIVATE KEY"));
    }
}
