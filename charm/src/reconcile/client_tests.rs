//! Table tests of the `database` relations: [`reconcile`] on a settled
//! three-unit cluster (unit 0 is the Juju leader and the primary) with one
//! client relation. One row per situation, named after what it defends;
//! steps are written out in full ([`client_summary`]).

use std::collections::BTreeMap;

use super::super::tests::{settled, with_event};
use crate::client::tests::set;
use crate::client::{ClientsView, RoleInfo};
use crate::cluster::Role;
use crate::context::{Event, RelationKind, DATABASE_ENDPOINT};
use crate::observe::Observed;
use crate::plan::{Plan, Step};
use crate::reconcile::reconcile;
use crate::relation::RelationView;
use crate::status::{Status, StatusKind};
use crate::testing::bag;

const RID: &str = "database:7";
const SECRETS: &str = r#"["username","password","tls","tls-ca","uris","read-only-uris"]"#;

/// What the primary has before any client: the superuser, replication,
/// the predefined groups.
fn view() -> ClientsView {
    let user = RoleInfo {
        login: true,
        ..Default::default()
    };
    let mut roles: BTreeMap<String, RoleInfo> = ["pg_read_all_data", "pg_monitor"]
        .iter()
        .map(|r| (r.to_string(), RoleInfo::default()))
        .collect();
    roles.insert(
        "operator".into(),
        RoleInfo {
            superuser: true,
            ..user.clone()
        },
    );
    roles.insert("replication".into(), user);
    ClientsView {
        version: "16.4".into(),
        databases: set(&["postgres"]),
        roles,
    }
}

/// A settled cluster seen from unit `me` with relation 7 to `myapp`,
/// whose application bag is `request`.
fn related(me: usize, request: &[(&str, &str)]) -> Observed {
    let mut o = settled(3, me);
    o.relations.insert(
        DATABASE_ENDPOINT.into(),
        vec![RelationView {
            id: RID.into(),
            endpoint: DATABASE_ENDPOINT.into(),
            remote_app: "myapp".into(),
            remote_app_data: bag(request),
            ..Default::default()
        }],
    );
    if o.is_leader {
        o.clients = Some(view());
    }
    o
}

fn asking(me: usize) -> Observed {
    related(me, &[("database", "mydb"), ("requested-secrets", SECRETS)])
}

/// The client steps in full; the others as the main table writes them.
fn client_summary(step: &Step) -> String {
    let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>().join(",");
    match step {
        Step::EnsureClientUser {
            host,
            user,
            password,
            database,
            spec,
            leave,
            ..
        } => format!(
            "ensure {user}/{password} {database} on {host} super={} createdb={} createrole={} in [{}] leave [{}]",
            spec.superuser,
            spec.createdb,
            spec.createrole,
            spec.member_of.iter().cloned().collect::<Vec<_>>().join(","),
            leave.iter().cloned().collect::<Vec<_>>().join(",")
        ),
        Step::DropClientUser { user, replicas, .. } => {
            format!("drop {user} (+{} replicas)", replicas.len())
        }
        Step::CreateRelationSecret {
            relation_id,
            label,
            key,
            content,
        } => format!("secret-add {label} [{}] -> {relation_id} {key}", keys(content)),
        Step::UpdateAppSecret { id, content } => format!("secret-set {id} [{}]", keys(content)),
        Step::RemoveSecret { id } => format!("secret-remove {id}"),
        Step::RemoveSecretRevision { id, revision } => format!("secret-remove {id} {revision}"),
        Step::SetRelationData { relation_id, data, .. } => {
            let pairs: Vec<String> = data.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("relation-set {relation_id} {}", pairs.join(" "))
        }
        other => super::super::tests::summary(other),
    }
}

/// The plan's client steps (the rest of the plan is the main table's).
fn steps(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::EnsureClientUser { .. }
                    | Step::DropClientUser { .. }
                    | Step::CreateRelationSecret { .. }
                    | Step::RemoveSecret { .. }
                    | Step::RemoveSecretRevision { .. }
                    | Step::SetRelationData { .. }
            ) || matches!(s, Step::UpdateAppSecret { id, .. } if id != "secret:app")
        })
        .map(client_summary)
        .collect()
}

/// The leader's view after `plan` ran: the users and databases made, our
/// secrets and bag written (as Juju commits them).
fn after(mut o: Observed, plan: &Plan) -> Observed {
    let mut next_secret = 0;
    for step in &plan.steps {
        let rel = o
            .relations
            .get_mut(DATABASE_ENDPOINT)
            .and_then(|v| v.first_mut());
        match step {
            Step::EnsureClientUser {
                user,
                database,
                spec,
                ..
            } => {
                let view = o.clients.as_mut().unwrap();
                view.roles.insert(
                    user.clone(),
                    RoleInfo {
                        login: true,
                        superuser: spec.superuser,
                        createdb: spec.createdb,
                        createrole: spec.createrole,
                        member_of: spec.member_of.clone(),
                    },
                );
                view.roles.entry("admin".into()).or_default();
                view.databases.insert(database.clone());
            }
            Step::CreateRelationSecret { key, content, .. } => {
                next_secret += 1;
                let uri = format!("secret:c{next_secret}");
                o.client_secrets.insert(uri.clone(), content.clone());
                rel.unwrap().local_app_data.insert(key.clone(), uri);
            }
            Step::UpdateAppSecret { id, content } => {
                o.client_secrets.insert(id.clone(), content.clone());
            }
            Step::SetRelationData { data, .. } => {
                let bag = &mut rel.unwrap().local_app_data;
                for (k, v) in data {
                    if v.is_empty() {
                        bag.remove(k);
                    } else {
                        bag.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(s) = &plan.unit_status {
        o.unit_status = Some(s.clone());
    }
    if let Some(s) = &plan.app_status {
        o.app_status = Some(s.clone());
    }
    o
}

/// The leader's view once relation 7 is served.
fn served() -> Observed {
    let o = asking(0);
    let plan = reconcile(&o);
    after(o, &plan)
}

/// The plan blocks the unit (other topics' statuses are not this table's).
fn blocked(plan: &Plan) -> bool {
    plan.unit_status
        .as_ref()
        .is_some_and(|s| s.kind == StatusKind::Blocked)
}

fn rel(o: &Observed) -> &RelationView {
    &o.relations_on(DATABASE_ENDPOINT)[0]
}

#[test]
fn a_new_request_makes_the_user_then_publishes() {
    let plan = reconcile(&asking(0));
    assert_eq!(
        steps(&plan),
        vec![
            "ensure relation-7/Fresh0client0pw0 mydb on 10.0.0.1 super=false createdb=false createrole=false in [] leave []",
            "secret-add database.7.user.secret [password,read-only-uris,uris,username] -> database:7 secret-user",
            "secret-add database.7.tls.secret [tls] -> database:7 secret-tls",
            "relation-set database:7 database=mydb endpoints=10.0.0.1:5432 read-only-endpoints=10.0.0.2:5432,10.0.0.3:5432 version=16.4",
        ]
    );
    let content = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::CreateRelationSecret { content, .. } => Some(content),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        content,
        &bag(&[
            ("username", "relation-7"),
            ("password", "Fresh0client0pw0"),
            (
                "uris",
                "postgresql://relation-7:Fresh0client0pw0@10.0.0.1:5432/mydb"
            ),
            (
                "read-only-uris",
                "postgresql://relation-7:Fresh0client0pw0@10.0.0.2,10.0.0.3:5432/mydb"
            ),
        ])
    );
    assert!(!blocked(&plan));
}

#[test]
fn a_served_relation_needs_nothing_until_the_cluster_changes() {
    let o = served();
    assert_eq!(steps(&reconcile(&o)), Vec::<String>::new(), "idempotent");
    for event in [
        Event::UpdateStatus,
        Event::RoleChanged,
        Event::LeaderElected,
    ] {
        let plan = reconcile(&with_event(o.clone(), event.clone()));
        assert!(steps(&plan).is_empty(), "{event:?}: {:?}", steps(&plan));
    }
}

#[test]
fn endpoints_follow_a_failover_and_a_lost_replica() {
    let secret = rel(&served()).local_app_data["secret-user"].clone();
    type Case = (&'static str, Vec<(usize, Role, &'static str)>, Vec<String>);
    let rows: Vec<Case> = vec![
        (
            "a switchover: the new primary and the old one as replica",
            vec![
                (0, Role::Replica, "streaming"),
                (1, Role::Leader, "running"),
                (2, Role::Replica, "streaming"),
            ],
            vec![
                format!("secret-set {secret} [password,read-only-uris,uris,username]"),
                "relation-set database:7 endpoints=10.0.0.2:5432 read-only-endpoints=10.0.0.1:5432,10.0.0.3:5432".into(),
            ],
        ),
        (
            "a replica that stopped streaming leaves the read-only endpoints",
            vec![
                (0, Role::Leader, "running"),
                (1, Role::Replica, "starting"),
                (2, Role::Replica, "streaming"),
            ],
            vec![
                format!("secret-set {secret} [password,read-only-uris,uris,username]"),
                "relation-set database:7 read-only-endpoints=10.0.0.3:5432".into(),
            ],
        ),
        (
            "no replica left: the primary is the read-only endpoint",
            vec![(0, Role::Leader, "running")],
            vec![
                format!("secret-set {secret} [password,read-only-uris,uris,username]"),
                "relation-set database:7 read-only-endpoints=10.0.0.1:5432".into(),
            ],
        ),
        (
            "no running primary: what is published stays",
            vec![
                (0, Role::Leader, "stopped"),
                (1, Role::Replica, "streaming"),
            ],
            vec![],
        ),
    ];
    for (name, members, want) in rows {
        let mut o = with_event(served(), Event::RoleChanged);
        o.cluster = Some(
            members
                .iter()
                .map(|(n, role, state)| crate::cluster::ClusterMember {
                    name: format!("postgresql-{n}"),
                    host: format!("10.0.0.{}:5432", n + 1),
                    role: *role,
                    state: state.to_string(),
                    pending_restart: false,
                })
                .collect(),
        );
        assert_eq!(steps(&reconcile(&o)), want, "{name}");
    }
    // The URIs name the new primary.
    let mut o = served();
    for m in o.cluster.as_mut().unwrap() {
        m.role = if m.name == "postgresql-1" {
            Role::Leader
        } else {
            Role::Replica
        };
        m.state = if m.name == "postgresql-1" {
            "running".into()
        } else {
            "streaming".into()
        };
    }
    let plan = reconcile(&o);
    let content = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateAppSecret { content, .. } => Some(content.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        content["uris"],
        "postgresql://relation-7:Fresh0client0pw0@10.0.0.2:5432/mydb"
    );
    assert_eq!(
        content["password"], "Fresh0client0pw0",
        "the password stays"
    );
}

#[test]
fn requests_that_wait_or_are_refused() {
    let refused = |m: &str| Some(Status::blocked(m));
    type Case = (&'static str, Observed, Vec<&'static str>, Option<Status>);
    let no_view = {
        let mut o = asking(0);
        o.clients = None;
        o
    };
    let rows: Vec<Case> = vec![
        ("no database named yet: nothing", related(0, &[("requested-secrets", SECRETS)]), vec![], None),
        ("a replica writes no client data", asking(1), vec![], None),
        ("the primary could not be read: a new user waits", no_view, vec![], None),
        (
            "an unknown extra-user-role is refused, naming the relation and the role",
            related(0, &[("database", "mydb"), ("extra-user-roles", "createdb,wizard")]),
            vec![],
            refused("relation database:7 (myapp): extra-user-roles asks for \"wizard\", which is not a role of this cluster; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "a system user's role is refused",
            related(0, &[("database", "mydb"), ("extra-user-roles", "replication")]),
            vec![],
            refused("relation database:7 (myapp): extra-user-roles asks for \"replication\", a system or relation user, which no relation may join; allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)"),
        ),
        (
            "a v1 request is refused",
            related(0, &[("version", "v1"), ("requests", "[{\"resource\": \"mydb\"}]")]),
            vec![],
            refused("relation database:7 (myapp): asks in the v1 format (version: v1), which this charm does not serve; relate a requirer that uses data_interfaces v0"),
        ),
        (
            "a reserved database name is refused",
            related(0, &[("database", "template1")]),
            vec![],
            refused("relation database:7 (myapp): invalid database name \"template1\": reserved by the charm; ask for another name"),
        ),
    ];
    for (name, o, want, status) in rows {
        let plan = reconcile(&o);
        assert_eq!(steps(&plan), want, "{name}");
        match &status {
            Some(s) => {
                assert_eq!(plan.unit_status.as_ref(), Some(s), "{name}: unit status");
                assert_eq!(plan.app_status.as_ref(), Some(s), "{name}: app status");
            }
            None => assert!(!blocked(&plan), "{name}: {:?}", plan.unit_status),
        }
    }
}

#[test]
fn a_refused_request_clears_once_fixed() {
    let bad = related(0, &[("database", "mydb"), ("extra-user-roles", "wizard")]);
    let plan = reconcile(&bad);
    assert_eq!(
        plan.unit_status.as_ref().map(|s| s.kind),
        Some(StatusKind::Blocked)
    );
    let mut o = after(bad, &plan);
    o.relations.get_mut(DATABASE_ENDPOINT).unwrap()[0]
        .remote_app_data
        .insert(
            "extra-user-roles".into(),
            "pg_read_all_data, CREATEDB".into(),
        );
    let plan = reconcile(&o);
    assert_eq!(
        steps(&plan)[0],
        "ensure relation-7/Fresh0client0pw0 mydb on 10.0.0.1 super=false createdb=true createrole=false in [pg_read_all_data] leave []"
    );
    assert!(!blocked(&plan), "{:?}", plan.unit_status);
    assert_eq!(plan.app_status, Some(Status::active("")));
}

#[test]
fn roles_asked_later_alter_the_user_and_keep_its_password() {
    let mut o = served();
    o.relations.get_mut(DATABASE_ENDPOINT).unwrap()[0]
        .remote_app_data
        .insert("extra-user-roles".into(), "admin".into());
    assert_eq!(
        steps(&reconcile(&o)),
        vec!["ensure relation-7/Fresh0client0pw0 mydb on 10.0.0.1 super=false createdb=true createrole=false in [admin] leave []"]
    );
    // A group granted by hand goes.
    let mut o = served();
    o.clients
        .as_mut()
        .unwrap()
        .roles
        .get_mut("relation-7")
        .unwrap()
        .member_of = set(&["pg_monitor"]);
    assert_eq!(
        steps(&reconcile(&o)),
        vec!["ensure relation-7/Fresh0client0pw0 mydb on 10.0.0.1 super=false createdb=false createrole=false in [] leave [pg_monitor]"]
    );
    // The user or its database gone (a restore, a manual drop): made again.
    let mut o = served();
    o.clients.as_mut().unwrap().databases.remove("mydb");
    assert_eq!(steps(&reconcile(&o)).len(), 1);
}

#[test]
fn without_requested_secrets_the_answer_is_plain_and_stays_so() {
    let o = related(0, &[("database", "mydb")]);
    let plan = reconcile(&o);
    assert_eq!(
        steps(&plan),
        vec![
            "ensure relation-7/Fresh0client0pw0 mydb on 10.0.0.1 super=false createdb=false createrole=false in [] leave []",
            "relation-set database:7 database=mydb endpoints=10.0.0.1:5432 password=Fresh0client0pw0 read-only-endpoints=10.0.0.2:5432,10.0.0.3:5432 tls=False uris=postgresql://relation-7:Fresh0client0pw0@10.0.0.1:5432/mydb username=relation-7 version=16.4",
        ]
    );
    // It asks for secrets later: a relation answered in plain text stays so.
    let mut o = after(o, &plan);
    o.relations.get_mut(DATABASE_ENDPOINT).unwrap()[0]
        .remote_app_data
        .insert("requested-secrets".into(), SECRETS.into());
    assert!(steps(&reconcile(&o)).is_empty());
}

#[test]
fn a_broken_relation_drops_its_user_and_secrets_and_keeps_its_database() {
    let o = served();
    let (user_uri, tls_uri) = {
        let b = &rel(&o).local_app_data;
        (b["secret-user"].clone(), b["secret-tls"].clone())
    };
    let mut broken = with_event(
        o.clone(),
        Event::Relation {
            endpoint: DATABASE_ENDPOINT.into(),
            kind: RelationKind::Broken,
            relation_id: RID.into(),
            remote_unit: None,
            remote_app: None,
            departing_unit: None,
        },
    );
    // relation-broken: the other side's bags are gone.
    let r = &mut broken.relations.get_mut(DATABASE_ENDPOINT).unwrap()[0];
    r.remote_app_data.clear();
    r.remote_app.clear();
    assert_eq!(
        steps(&reconcile(&broken)),
        vec![
            format!("secret-remove {user_uri}"),
            format!("secret-remove {tls_uri}"),
            "drop relation-7 (+2 replicas)".to_string(),
        ]
    );
    // The cluster cannot be read (a lost member's etcd): the secrets go
    // now, the user at a later hook.
    let mut unread = broken.clone();
    unread.cluster = None;
    unread.clients = None;
    assert_eq!(
        steps(&reconcile(&unread)),
        vec![
            format!("secret-remove {user_uri}"),
            format!("secret-remove {tls_uri}"),
        ]
    );
    // On a replica: nothing.
    let mut replica = broken.clone();
    replica.is_leader = false;
    replica.clients = None;
    assert!(steps(&reconcile(&replica)).is_empty());

    // A drop that failed is done again at update-status, once the relation
    // is gone; the database is never dropped.
    let mut later = with_event(o, Event::UpdateStatus);
    later.relations.insert(DATABASE_ENDPOINT.into(), vec![]);
    later.client_secrets.clear();
    assert_eq!(
        steps(&reconcile(&later)),
        vec!["drop relation-7 (+2 replicas)"]
    );
    // Roles that only look like relation users are left alone.
    later.clients.as_mut().unwrap().roles.remove("relation-7");
    later
        .clients
        .as_mut()
        .unwrap()
        .roles
        .insert("relation_id_7".into(), RoleInfo::default());
    assert!(steps(&reconcile(&later)).is_empty());
}

#[test]
fn this_unit_leaving_the_relation_tears_down_and_drops_nothing() {
    let o = with_event(
        served(),
        Event::Relation {
            endpoint: DATABASE_ENDPOINT.into(),
            kind: RelationKind::Departed,
            relation_id: RID.into(),
            remote_unit: Some("myapp/0".into()),
            remote_app: Some("myapp".into()),
            departing_unit: Some("postgresql/0".into()),
        },
    );
    let plan = reconcile(&o);
    let all: Vec<String> = plan.steps.iter().map(client_summary).collect();
    assert!(all.iter().any(|s| s == "stop pgpilot"), "{all:?}");
    let got = steps(&plan);
    assert!(
        !got.iter()
            .any(|s| s.starts_with("drop") || s.starts_with("secret")),
        "{got:?}"
    );
    // The remote unit departing is not this unit leaving.
    let o = with_event(
        served(),
        Event::Relation {
            endpoint: DATABASE_ENDPOINT.into(),
            kind: RelationKind::Departed,
            relation_id: RID.into(),
            remote_unit: Some("myapp/0".into()),
            remote_app: Some("myapp".into()),
            departing_unit: Some("myapp/0".into()),
        },
    );
    assert!(steps(&reconcile(&o)).is_empty());
}

#[test]
fn the_answer_follows_the_endpoints_while_the_primary_cannot_be_read() {
    let mut o = served();
    o.clients = None;
    for m in o.cluster.as_mut().unwrap() {
        m.role = if m.name == "postgresql-2" {
            Role::Leader
        } else {
            Role::Replica
        };
    }
    let got = steps(&reconcile(&o));
    assert_eq!(
        got.last().map(String::as_str),
        Some("relation-set database:7 endpoints=10.0.0.3:5432 read-only-endpoints=10.0.0.1:5432,10.0.0.2:5432")
    );
    assert!(!got
        .iter()
        .any(|s| s.starts_with("ensure") || s.starts_with("drop")));
}

#[test]
fn obsolete_revisions_of_relation_secrets_are_removed() {
    let o = served();
    let uri = rel(&o).local_app_data["secret-user"].clone();
    let o = with_event(
        o,
        Event::SecretRemove {
            id: uri.clone(),
            label: Some("database.7.user.secret".into()),
            revision: Some(2),
        },
    );
    assert_eq!(
        steps(&reconcile(&o)),
        vec![format!("secret-remove {uri} 2")]
    );
}

#[test]
fn tls_on_puts_the_ca_in_the_tls_secret() {
    let o = served();
    let uri = rel(&o).local_app_data["secret-tls"].clone();
    let mut on = o.clone();
    let snap = on.snap_config.as_object_mut().unwrap();
    snap.insert("tls".into(), serde_json::json!({"ca": "CA PEM"}));
    let plan = reconcile(&on);
    let content = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateAppSecret { id, content } if *id == uri => Some(content.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", steps(&plan)));
    assert_eq!(content, bag(&[("tls", "True"), ("tls-ca", "CA PEM")]));
    // TLS off again: back to False, the CA gone.
    let mut off = after(on, &plan);
    off.snap_config.as_object_mut().unwrap().remove("tls");
    assert_eq!(
        steps(&reconcile(&off)),
        vec![format!("secret-set {uri} [tls]")]
    );
}

#[test]
fn a_departing_replica_leaves_the_read_only_endpoints_at_once() {
    // pgpilot still lists postgresql-2 (its key has not expired).
    let mut o = with_event(
        served(),
        Event::PeerRelationDeparted {
            relation_id: "database-peers:0".into(),
            remote_unit: Some("postgresql/2".into()),
            departing_unit: Some("postgresql/2".into()),
        },
    );
    o.peer.as_mut().unwrap().unit_data.remove("postgresql/2");
    let secret = rel(&o).local_app_data["secret-user"].clone();
    assert_eq!(
        steps(&reconcile(&o)),
        vec![
            format!("secret-set {secret} [password,read-only-uris,uris,username]"),
            "relation-set database:7 read-only-endpoints=10.0.0.2:5432".to_string(),
        ]
    );
}
