//! Table tests of the units' etcd over TLS in a convergence: a settled
//! 3-unit cluster (unit 0 the leader) whose units hold their certificates,
//! related to a provider, at each stage of [`crate::etcd_tls`].

use serde_json::{json, Value};

use super::super::reconcile;
use super::super::tests::{set_app_bag, settled, with_event};
use crate::context::{Event, RelationKind, CERTIFICATES_ENDPOINT};
use crate::etcd::{self, Level};
use crate::observe::Observed;
use crate::peer::{self, EtcdEntry};
use crate::plan::{Plan, Step};
use crate::relation::RelationView;

const RID: &str = "certificates:9";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----";

/// Unit `me` of a settled cluster on the certificates relation, every unit
/// with its certificate in force (`cert`) and etcd at `level`.
fn on_tls(me: usize, stage: &str, level: Level, cert: &str) -> Observed {
    let mut o = settled(3, me);
    o.relations.insert(
        CERTIFICATES_ENDPOINT.into(),
        vec![RelationView {
            id: RID.into(),
            endpoint: CERTIFICATES_ENDPOINT.into(),
            remote_app: "self-signed-certificates".into(),
            ..Default::default()
        }],
    );
    o.snap_config["tls"] = json!({"cert": cert, "key": KEY, "ca": "CA"});
    if level != Level::Plain {
        o.snap_config["etcd-tls"] = json!({"cert": cert, "key": KEY, "ca": "CA"});
    }
    let peer = o.peer.as_mut().unwrap();
    for bag in peer.unit_data.values_mut() {
        bag.insert(peer::UNIT_TLS_READY.into(), "true".into());
        bag.insert(peer::UNIT_ETCD_TLS.into(), level.as_str().into());
    }
    set_app_bag(&mut o, peer::APP_ETCD_TLS, stage);
    o
}

/// Every admitted member's URLs with these schemes (peer, client).
fn schemes(o: &mut Observed, peer_https: bool, client_https: bool) {
    let view = o.peer.as_mut().unwrap();
    let mut members = view.etcd_members();
    for m in &mut members {
        m.peer_url = etcd::with_scheme(&m.peer_url, peer_https);
        m.client_url = etcd::client_url_as(&m.client_url, client_https);
    }
    set_members(o, &members);
}

fn set_members(o: &mut Observed, members: &[EtcdEntry]) {
    set_app_bag(o, peer::APP_ETCD_MEMBERS, &peer::encode_members(members));
}

/// The steps that concern etcd over TLS, one line each.
fn etcd_steps(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for step in &plan.steps {
        match step {
            Step::SetAppData(data) => {
                for key in [peer::APP_ETCD_TLS, peer::APP_ETCD_TLS_RESTART] {
                    if let Some(v) = data.get(key) {
                        out.push(format!("app {key}={v}"));
                    }
                }
            }
            Step::SetUnitData(data) => {
                if let Some(v) = data.get(peer::UNIT_ETCD_TLS) {
                    out.push(format!("unit etcd-tls={v}"));
                }
            }
            Step::SnapSet(pairs) => {
                let keys: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| k.starts_with("etcd") || k.starts_with("dcs-tls"))
                    .map(|(k, v)| match v {
                        Value::Null => format!("{k}!"),
                        Value::String(s) if k.ends_with("key") || k.ends_with("cert") => {
                            format!("{k}={}", s.lines().nth(1).unwrap_or(s))
                        }
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                if !keys.is_empty() {
                    out.push(format!("snap set {}", keys.join(" ")));
                }
            }
            Step::EtcdUpdatePeer { name, peer_url, .. } => {
                out.push(format!("member update {name} {peer_url}"))
            }
            Step::EtcdWaitHealthy { endpoint } => out.push(format!("wait {endpoint}")),
            _ => {}
        }
    }
    out
}

fn check(name: &str, o: Observed, want: &[&str]) {
    let plan = reconcile(&o);
    assert_eq!(etcd_steps(&plan), want, "{name}");
}

#[test]
fn the_leader_loads_its_certificate_first() {
    check(
        "off, every certificate in force: loaded, the leader's turn",
        on_tls(0, "", Level::Plain, "C1"),
        &[
            "app etcd-tls=loaded",
            "app etcd-tls-restart=postgresql-0",
            "snap set etcd.listen-client-urls=http://10.0.0.1:2379,https://10.0.0.1:2378 \
             etcd-tls.cert=C1 etcd-tls.key=KEY etcd-tls.ca=CA",
            "wait http://10.0.0.1:2379",
            "unit etcd-tls=loaded",
        ],
    );
    let mut waiting = on_tls(0, "", Level::Plain, "C1");
    waiting
        .peer
        .as_mut()
        .unwrap()
        .unit_data
        .get_mut("postgresql/2")
        .unwrap()
        .remove(peer::UNIT_TLS_READY);
    check(
        "a unit without its certificate: nothing moves",
        waiting,
        &[],
    );
    check(
        "a replica not granted waits",
        on_tls(1, "loaded", Level::Plain, "C1"),
        &[],
    );
    let mut granted = on_tls(1, "loaded", Level::Plain, "C1");
    set_app_bag(&mut granted, peer::APP_ETCD_TLS_RESTART, "postgresql-1");
    check(
        "a replica granted: its certificate loaded",
        granted,
        &[
            "snap set etcd.listen-client-urls=http://10.0.0.2:2379,https://10.0.0.2:2378 \
             etcd-tls.cert=C1 etcd-tls.key=KEY etcd-tls.ca=CA",
            "wait http://10.0.0.2:2379",
            "unit etcd-tls=loaded",
        ],
    );
}

#[test]
fn clients_then_peers_move_to_https() {
    // Every etcd loaded: the client URLs go https (pgpilot restarts roll).
    let o = on_tls(0, "loaded", Level::Loaded, "C1");
    let plan = reconcile(&o);
    assert_eq!(etcd_steps(&plan)[0], "app etcd-tls=clients");
    let members = plan.steps.iter().find_map(|s| match s {
        Step::SetAppData(d) => d.get(peer::APP_ETCD_MEMBERS).cloned(),
        _ => None,
    });
    assert!(
        members
            .as_deref()
            .is_some_and(|m| m.matches("https://").count() == 3
                && m.contains("\"peer-url\":\"http://10.0.0.1:2380\"")),
        "{members:?}"
    );
    // A replica at stage clients: pgpilot gets the CA (a restart, queued).
    let mut o = on_tls(1, "clients", Level::Loaded, "C1");
    schemes(&mut o, false, true);
    let plan = reconcile(&o);
    assert!(
        plan.steps.iter().any(|s| matches!(s, Step::SetUnitData(d)
            if d.get(peer::UNIT_RESTART_REQUEST).map(String::as_str) == Some("true"))),
        "{:?}",
        plan.steps
    );
    // Every pgpilot runs the https endpoints: the leader's peer URL first.
    let mut o = on_tls(0, "clients", Level::Loaded, "C1");
    schemes(&mut o, false, true);
    let members = o.peer.as_ref().unwrap().etcd_members();
    let fingerprint = super::super::rolling::config_fingerprint(&members, &o.config);
    for bag in o.peer.as_mut().unwrap().unit_data.values_mut() {
        bag.insert(peer::UNIT_CONFIG_APPLIED.into(), fingerprint.clone());
    }
    o.snap_config["pgpilot"]["dcs"]["endpoints"] = json!(members
        .iter()
        .map(|m| m.client_url.clone())
        .collect::<Vec<_>>());
    o.snap_config["dcs-tls"] = json!({"ca": "CA"});
    check(
        "clients applied everywhere: on, the leader's peer URL moves",
        o,
        &[
            "member update postgresql-0 https://10.0.0.1:2380",
            "app etcd-tls=on",
            "app etcd-tls-restart=postgresql-0",
            "snap set etcd.listen-client-urls=https://10.0.0.1:2378 \
             etcd.advertise-client-urls=https://10.0.0.1:2378 \
             etcd.listen-peer-urls=https://10.0.0.1:2380 \
             etcd.initial-advertise-peer-urls=https://10.0.0.1:2380 \
             etcd.initial-cluster=postgresql-0=https://10.0.0.1:2380,postgresql-1=http://10.0.0.2:2380,postgresql-2=http://10.0.0.3:2380",
            "wait https://10.0.0.1:2378",
            "unit etcd-tls=on",
        ],
    );
}

#[test]
fn renewal_and_removal() {
    let mut o = on_tls(1, "on", Level::On, "C2");
    schemes(&mut o, true, true);
    o.snap_config["etcd-tls"]["cert"] = json!("C1");
    check(
        "a renewed certificate: etcd's copy follows (no grant needed)",
        o,
        &["snap set etcd-tls.cert=C2"],
    );
    let mut o = on_tls(0, "on", Level::On, "C1");
    schemes(&mut o, true, true);
    let broken = Event::Relation {
        endpoint: CERTIFICATES_ENDPOINT.into(),
        kind: RelationKind::Broken,
        relation_id: RID.into(),
        remote_unit: None,
        remote_app: Some("self-signed-certificates".into()),
        departing_unit: None,
    };
    let steps = etcd_steps(&reconcile(&with_event(o, broken)));
    assert_eq!(
        steps[..3],
        [
            "member update postgresql-0 http://10.0.0.1:2380",
            "app etcd-tls=unpeer",
            "app etcd-tls-restart=postgresql-0",
        ],
        "{steps:?}"
    );
    // etcd's copy of the certificate stays while etcd uses it.
    assert!(
        steps[3].starts_with(
            "snap set etcd.listen-client-urls=http://10.0.0.1:2379,https://10.0.0.1:2378"
        ) && !steps[3].contains("etcd-tls."),
        "{steps:?}"
    );
}
