//! Table tests of [`reconcile`]: one row per situation, named after what it
//! defends. Each row starts from a settled cluster (or a fresh unit) and
//! changes one thing; the expected plan is written as short step summaries
//! (see [`summary`]) plus the unit status it sets (`None`: unchanged).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::*;
use crate::cluster::Role;
use crate::config::Machine;
use crate::context::HookContext;
use crate::observe::HostFacts;
use crate::peer::PeerView;
use crate::snap::{ServiceState, SnapInfo};

const NOW: u64 = 1_800_000_000;
const MACHINE: Machine = Machine {
    memory_mb: 8192,
    cpus: 4,
};

fn ip(n: usize) -> String {
    format!("10.0.0.{}", n + 1)
}

fn unit(n: usize) -> String {
    format!("postgresql/{n}")
}

fn member(n: usize) -> String {
    format!("postgresql-{n}")
}

fn host() -> HostFacts {
    HostFacts {
        now: NOW,
        machine: MACHINE,
        arch: "amd64".into(),
        fresh_passwords: SYSTEM_USERS
            .iter()
            .map(|u| (u.to_string(), format!("fresh-{u}")))
            .collect(),
        fresh_client_passwords: vec!["Fresh0client0pw0".into()],
        wake_command: None,
    }
}

fn ctx(me: usize, event: Event) -> HookContext {
    HookContext {
        event,
        dispatch_path: "hooks/test".into(),
        unit: unit(me),
        app: "postgresql".into(),
        model: "dev".into(),
        model_uuid: None,
        charm_dir: PathBuf::from("/charm"),
        juju_version: Some("3.6.8".into()),
    }
}

fn entry(n: usize, learner: bool) -> EtcdEntry {
    EtcdEntry {
        name: member(n),
        unit: unit(n),
        peer_url: etcd::peer_url(&ip(n)),
        client_url: etcd::client_url(&ip(n)),
        learner,
        initial_state: if n == 0 { "new" } else { "existing" }.into(),
    }
}

fn etcd_member(n: usize, learner: bool, started: bool) -> EtcdMember {
    EtcdMember {
        id: 100 + n as u64,
        name: if started { member(n) } else { String::new() },
        peer_urls: vec![etcd::peer_url(&ip(n))],
        client_urls: if started {
            vec![etcd::client_url(&ip(n))]
        } else {
            vec![]
        },
        is_learner: learner,
    }
}

fn secret_content() -> BTreeMap<String, String> {
    SYSTEM_USERS
        .iter()
        .map(|u| (secret_key(u), format!("{u}-pw")))
        .collect()
}

fn passwords() -> Passwords {
    SYSTEM_USERS
        .iter()
        .map(|u| (u.to_string(), format!("{u}-pw")))
        .collect()
}

fn pg_member(n: usize, role: Role, state: &str) -> ClusterMember {
    ClusterMember {
        name: member(n),
        host: format!("{}:5432", ip(n)),
        role,
        state: state.into(),
        pending_restart: false,
    }
}

/// Dotted keys into a nested `snap get -d` document; null removes.
fn set_doc(doc: &mut Value, pairs: &[(String, Value)]) {
    for (key, value) in pairs {
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &mut *doc;
        for part in &parts[..parts.len() - 1] {
            node = node
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert_with(|| json!({}));
        }
        let last = parts[parts.len() - 1];
        if value.is_null() {
            node.as_object_mut().unwrap().remove(last);
        } else {
            node.as_object_mut()
                .unwrap()
                .insert(last.to_string(), value.clone());
        }
    }
}

fn services(etcd: bool, pgpilot: bool) -> Vec<ServiceState> {
    vec![
        ServiceState {
            name: "etcd".into(),
            enabled: etcd,
            active: etcd,
        },
        ServiceState {
            name: "pgbouncer".into(),
            enabled: false,
            active: false,
        },
        ServiceState {
            name: "pgpilot".into(),
            enabled: pgpilot,
            active: pgpilot,
        },
    ]
}

/// pgpilot's dynamic configuration as the leader would have patched it.
fn dynamic_for(units: usize, config: &Map<String, Value>) -> Value {
    let cfg = config::validate(config, MACHINE).unwrap();
    let sync = cfg.synchronous_node_count.resolve(units);
    let parameters: Map<String, Value> = cfg
        .cluster_parameters
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    json!({
        "ttl": 10, "loop_wait": 2, "retry_timeout": 3,
        "synchronous_mode": sync >= 1,
        "synchronous_node_count": sync.max(1),
        "synchronous_mode_strict": sync >= 1,
        "maximum_lag_on_failover": 1048576,
        "postgresql": {"use_pg_rewind": true, "parameters": parameters},
    })
}

/// A settled cluster of `units` units seen from unit `me`; unit 0 is the
/// Juju leader and PostgreSQL's primary. Everything is as desired.
pub(super) fn settled(units: usize, me: usize) -> Observed {
    let members: Vec<EtcdEntry> = (0..units).map(|n| entry(n, false)).collect();
    let mut o = Observed::empty(&ctx(me, Event::UpdateStatus), host());
    o.is_leader = me == 0;
    o.snap = Some(SnapInfo {
        version: "16.4".into(),
        revision: "x1".into(),
        held: true,
    });
    o.services = services(true, true);
    let fingerprint = config_fingerprint(&members, &Map::new());
    let mut view = PeerView {
        relation_id: "database-peers:0".into(),
        ..Default::default()
    };
    view.app_data
        .insert(peer::APP_SECRET_ID.into(), "secret:app".into());
    view.app_data.insert(
        peer::APP_ETCD_MEMBERS.into(),
        peer::encode_members(&members),
    );
    for n in 0..units {
        let bag: BTreeMap<String, String> = [
            ("private-address", ip(n)),
            (peer::UNIT_IP, ip(n)),
            (peer::UNIT_MEMBER, member(n)),
            (peer::UNIT_ETCD_STARTED, "true".into()),
            (peer::UNIT_WORKLOAD_VERSION, "16.4".into()),
            (peer::UNIT_CONFIG_APPLIED, fingerprint.clone()),
            (
                peer::UNIT_MEMBER_STATE,
                if n == 0 {
                    "leader running".into()
                } else {
                    "replica streaming".into()
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        view.unit_data.insert(unit(n), bag);
    }
    o.peer = Some(view);
    o.address = Some(ip(me));
    o.secrets.app_secret_id = Some("secret:app".into());
    o.secrets.app_secret = Some(secret_content());
    o.etcd = Some((0..units).map(|n| etcd_member(n, false, true)).collect());
    o.cluster = Some(
        (0..units)
            .map(|n| {
                if n == 0 {
                    pg_member(0, Role::Leader, "running")
                } else {
                    pg_member(n, Role::Replica, "streaming")
                }
            })
            .collect(),
    );
    let cfg = config::validate(&Map::new(), MACHINE).unwrap();
    let mut doc = json!({});
    set_doc(
        &mut doc,
        &etcd::bootstrap_keys(
            &members[me],
            &ip(me),
            &members,
            "dev-postgresql",
            etcd::Level::Plain,
            None,
        ),
    );
    set_doc(
        &mut doc,
        &pgpilot_keys(
            "postgresql",
            &member(me),
            &ip(me),
            &members,
            &passwords(),
            &cfg,
        ),
    );
    o.snap_config = doc;
    if o.is_leader {
        o.dynamic_config = Some(dynamic_for(units, &Map::new()));
        o.app_status = Some(if units == 2 {
            app_status(&o, 2, false)
        } else {
            Status::active("")
        });
    }
    o.unit_status = Some(if me == 0 {
        Status::active(msg::PRIMARY)
    } else {
        Status::active("")
    });
    o.opened_ports = vec![PG_PORT.into()];
    o
}

/// `units` units of which the first `admitted` are in etcd and pgpilot;
/// the others have published their address only.
fn joining(admitted: usize, units: usize, me: usize) -> Observed {
    let mut o = settled(units, me);
    let members: Vec<EtcdEntry> = (0..admitted).map(|n| entry(n, false)).collect();
    let view = o.peer.as_mut().unwrap();
    view.app_data.insert(
        peer::APP_ETCD_MEMBERS.into(),
        peer::encode_members(&members),
    );
    let fingerprint = config_fingerprint(&members, &Map::new());
    for n in 0..units {
        let bag = view.unit_data.get_mut(&unit(n)).unwrap();
        if n < admitted {
            bag.insert(peer::UNIT_CONFIG_APPLIED.into(), fingerprint.clone());
        } else {
            bag.remove(peer::UNIT_ETCD_STARTED);
            bag.remove(peer::UNIT_CONFIG_APPLIED);
        }
    }
    o.etcd.as_mut().unwrap().truncate(admitted);
    o.cluster.as_mut().unwrap().truncate(admitted);
    if me >= admitted {
        o.services = services(false, false);
        o.snap_config = json!({});
        o.cluster = None;
        o.unit_status = Some(Status::waiting(msg::WAITING_TO_START));
    } else if me == 0 {
        o.unit_status = Some(Status::active(msg::PRIMARY_DEGRADED));
        let cfg = config::validate(&Map::new(), MACHINE).unwrap();
        let mut doc = json!({});
        set_doc(
            &mut doc,
            &etcd::bootstrap_keys(
                &members[0],
                &ip(0),
                &members,
                "dev-postgresql",
                etcd::Level::Plain,
                None,
            ),
        );
        set_doc(
            &mut doc,
            &pgpilot_keys(
                "postgresql",
                &member(0),
                &ip(0),
                &members,
                &passwords(),
                &cfg,
            ),
        );
        o.snap_config = doc;
    }
    o
}

/// A unit whose snap was just installed (held, no service running).
fn fresh(me: usize, event: Event) -> Observed {
    let mut o = Observed::empty(&ctx(me, event), host());
    o.is_leader = me == 0;
    o.snap = Some(SnapInfo {
        version: "16.4".into(),
        revision: "x1".into(),
        held: true,
    });
    o.services = services(false, false);
    let mut view = PeerView {
        relation_id: "database-peers:0".into(),
        ..Default::default()
    };
    view.unit_data
        .insert(unit(me), [("private-address".to_string(), ip(me))].into());
    o.peer = Some(view);
    o.address = Some(ip(me));
    o.unit_status = Some(Status::waiting(msg::WAITING_TO_START));
    o
}

pub(super) fn with_config(mut o: Observed, pairs: &[(&str, Value)]) -> Observed {
    for (k, v) in pairs {
        o.config.insert(k.to_string(), v.clone());
    }
    o
}

pub(super) fn with_event(mut o: Observed, event: Event) -> Observed {
    o.event = event;
    o
}

fn set_unit_bag(o: &mut Observed, n: usize, key: &str, value: &str) {
    o.peer
        .as_mut()
        .unwrap()
        .unit_data
        .get_mut(&unit(n))
        .unwrap()
        .insert(key.into(), value.into());
}

pub(super) fn set_app_bag(o: &mut Observed, key: &str, value: &str) {
    o.peer
        .as_mut()
        .unwrap()
        .app_data
        .insert(key.into(), value.into());
}

fn bag(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| match k.as_str() {
            peer::APP_ETCD_MEMBERS => {
                let members: Vec<EtcdEntry> = serde_json::from_str(v).unwrap();
                let names: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}{}", m.name, if m.learner { "~" } else { "" }))
                    .collect();
                format!("{k}=[{}]", names.join(","))
            }
            peer::UNIT_CONFIG_APPLIED => k.clone(),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A step in a few words: keys, not values (values are checked where they
/// matter, in dedicated tests).
pub(super) fn summary(step: &Step) -> String {
    match step {
        Step::ShowStatus(s) => format!("status {s}"),
        Step::InstallSnapFile(p) => format!("install --dangerous {}", p.display()),
        Step::InstallSnapRevision(r) => format!("install --revision {r}"),
        Step::HoldSnap => "hold".into(),
        Step::SetWorkloadVersion(v) => format!("version {v}"),
        Step::OpenPort(p) => format!("open-port {p}"),
        Step::SetUnitData(m) => format!("unit-data {}", bag(m)),
        Step::SetAppData(m) => format!("app-data {}", bag(m)),
        Step::CreateAppSecret { label, .. } => format!("secret-add {label}"),
        Step::UpdateAppSecret { id, .. } => format!("secret-set {id}"),
        Step::RemoveSecretRevision { id, revision } => format!("secret-remove {id} {revision}"),
        Step::EtcdAddLearner { name, .. } => format!("etcd add-learner {name}"),
        Step::EtcdPromote { name, .. } => format!("etcd promote {name}"),
        Step::EtcdRemove { name, .. } => format!("etcd remove {name}"),
        Step::SnapSet(pairs) if pairs.len() > 3 => {
            let root = pairs[0].0.split('.').next().unwrap();
            assert!(pairs.iter().all(|(k, _)| k.starts_with(root)));
            format!("snap set {root}.* ({} keys)", pairs.len())
        }
        Step::SnapSet(pairs) => format!(
            "snap set {}",
            pairs
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Step::StartServices(v) => format!("start {}", v.join(" ")),
        Step::StopServices(v) => format!("stop {}", v.join(" ")),
        Step::PatchClusterConfig {
            settings,
            parameters,
        } => {
            let mut parts = vec!["edit-config".to_string()];
            parts.extend(settings.iter().map(|(k, _)| format!("-s {k}")));
            parts.extend(parameters.iter().map(|(k, _)| format!("-p {k}")));
            parts.join(" ")
        }
        Step::RestartMember(m) => format!("restart {m}"),
        Step::ReinitMember(m) => format!("reinit {m}"),
        other => other.describe(),
    }
}

pub(super) struct Row {
    name: &'static str,
    o: Observed,
    steps: Vec<&'static str>,
    unit: Option<Status>,
}

pub(super) fn row(
    name: &'static str,
    o: Observed,
    steps: &[&'static str],
    unit: Option<Status>,
) -> Row {
    Row {
        name,
        o,
        steps: steps.to_vec(),
        unit,
    }
}

pub(super) fn check(table: &str, rows: Vec<Row>) {
    for r in rows {
        let plan = reconcile(&r.o);
        let got: Vec<String> = plan.steps.iter().map(summary).collect();
        assert_eq!(
            got, r.steps,
            "{table} / {}: steps (logs: {:?})",
            r.name, plan.logs
        );
        assert_eq!(
            plan.unit_status, r.unit,
            "{table} / {}: unit status",
            r.name
        );
    }
}

const GRANT_CMD: &str = "system-users: cannot read the secret (ERROR secret \"secret:user\" not found or not granted); run: juju grant-secret <secret> postgresql";

#[test]
fn installing_the_snap() {
    let resource = "/var/lib/juju/agents/unit-postgresql-0/resources/charmed-postgresql.snap";
    let bare = || {
        let mut o = Observed::empty(&ctx(0, Event::Install), host());
        o.is_leader = true;
        o.unit_status = Some(Status::maintenance(""));
        o
    };
    let mut attached = bare();
    attached.resource = Some(PathBuf::from(resource));
    let mut pinned = bare();
    pinned.pinned_revision = Some("393".into());
    let mut unheld = settled(3, 1);
    unheld.snap.as_mut().unwrap().held = false;
    check(
        "install",
        vec![
            row(
                "the attached resource is installed --dangerous, then refreshes are held",
                attached,
                &[
                    "status maintenance: installing PostgreSQL",
                    &*Box::leak(format!("install --dangerous {resource}").into_boxed_str()),
                    "hold",
                ],
                Some(Status::waiting(msg::WAITING_TO_START)),
            ),
            row(
                "without a resource the pinned store revision is installed",
                pinned,
                &[
                    "status maintenance: installing PostgreSQL",
                    "install --revision 393",
                    "hold",
                ],
                Some(Status::waiting(msg::WAITING_TO_START)),
            ),
            row(
                "with neither, the unit says which resource to attach",
                bare(),
                &[],
                Some(Status::blocked(
                    "no snap to install: juju attach-resource postgresql charmed-postgresql-snap=charmed-postgresql.snap",
                )),
            ),
            row(
                "an installed snap whose refreshes are not held is held",
                unheld,
                &["hold"],
                None,
            ),
        ],
    );
}

#[test]
fn passwords_and_secrets() {
    let mut lacking = settled(3, 0);
    lacking
        .secrets
        .app_secret
        .as_mut()
        .unwrap()
        .remove("patroni-password");
    let user = |o: Observed, content: Result<BTreeMap<String, String>, String>| {
        let mut o = with_config(o, &[("system-users", json!("secret:user"))]);
        o.secrets.user_secret = Some(content);
        o
    };
    let mine: BTreeMap<String, String> = [("operator".to_string(), "mine".to_string())].into();
    let unknown: BTreeMap<String, String> = [("postgres".to_string(), "x".to_string())].into();
    check(
        "passwords",
        vec![
            row(
                "leader-elected on a fresh application creates the passwords secret once and bootstraps etcd",
                fresh(0, Event::LeaderElected),
                &[
                    "open-port 5432/tcp",
                    "version 16.4",
                    "unit-data ip=10.0.0.1 member=postgresql-0 workload-version=16.4",
                    "secret-add database-peers.postgresql.app",
                    "app-data etcd-members=[postgresql-0]",
                    "snap set etcd.* (8 keys)",
                    "start etcd",
                    "unit-data etcd-started=true",
                    "snap set pgpilot.* (16 keys)",
                    "start pgpilot",
                    "unit-data config-applied",
                ],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "a second leader-elected adds no secret and no revision",
                with_event(settled(3, 0), Event::LeaderElected),
                &[],
                None,
            ),
            row(
                "a non-leader waits with `awaiting passwords generation`",
                fresh(1, Event::Start),
                &[
                    "open-port 5432/tcp",
                    "version 16.4",
                    "unit-data ip=10.0.0.2 member=postgresql-1 workload-version=16.4",
                ],
                Some(Status::waiting(msg::AWAITING_PASSWORDS)),
            ),
            row(
                "the leader fills a key the secret lacks (one new revision), applied live",
                lacking,
                &["secret-set secret:app", "snap set pgpilot.api.password"],
                None,
            ),
            row(
                "system-users overrides a generated password: applied live, no restart turn",
                user(settled(3, 1), Ok(mine.clone())),
                &["snap set pgpilot.postgresql.authentication.superuser.password"],
                None,
            ),
            row(
                "system-users on a single unit is applied at once",
                user(settled(1, 0), Ok(mine)),
                &["snap set pgpilot.postgresql.authentication.superuser.password"],
                None,
            ),
            row(
                "system-users not granted blocks with the command that fixes it",
                user(
                    settled(3, 1),
                    Err("ERROR secret \"secret:user\" not found or not granted".into()),
                ),
                &[],
                Some(Status::blocked(GRANT_CMD)),
            ),
            row(
                "system-users naming an unknown user blocks naming it",
                user(settled(3, 1), Ok(unknown)),
                &[],
                Some(Status::blocked(
                    "system-users: unknown user \"postgres\"; the users are operator, replication, monitoring, patroni",
                )),
            ),
            row(
                "the leader removes an obsolete revision of its secret",
                with_event(
                    settled(3, 0),
                    Event::SecretRemove {
                        id: "secret:app".into(),
                        label: None,
                        revision: Some(2),
                    },
                ),
                &["secret-remove secret:app 2"],
                None,
            ),
        ],
    );
}

#[test]
fn configuration() {
    let bad = || with_config(settled(3, 0), &[("memory_shared_buffers", json!(900_000))]);
    let bad_message = "config memory_shared_buffers=900000: must be between 16 and 419430 pages of 8 kB (40% of 8192 MB of memory)";
    let mut fixed = settled(3, 0);
    fixed.unit_status = Some(Status::blocked(bad_message));
    fixed.app_status = Some(Status::blocked(bad_message));
    let sb = || with_config(settled(3, 0), &[("memory_shared_buffers", json!(100_000))]);
    let new_fp = {
        let members: Vec<EtcdEntry> = (0..3).map(|n| entry(n, false)).collect();
        config_fingerprint(&members, &sb().config)
    };
    let mut replica_asks = sb();
    set_unit_bag(&mut replica_asks, 1, peer::UNIT_RESTART_REQUEST, "true");
    let mut one_at_a_time = replica_asks.clone();
    set_unit_bag(&mut one_at_a_time, 2, peer::UNIT_RESTART_REQUEST, "true");
    set_app_bag(
        &mut one_at_a_time,
        peer::APP_RESTART_GRANTED,
        "postgresql-1",
    );
    let mut granted_replica =
        with_config(settled(3, 1), &[("memory_shared_buffers", json!(100_000))]);
    set_app_bag(
        &mut granted_replica,
        peer::APP_RESTART_GRANTED,
        "postgresql-1",
    );
    let mut starting = granted_replica.clone();
    starting.cluster.as_mut().unwrap()[1].state = "creating replica".into();
    let mut primary_last = sb();
    set_unit_bag(&mut primary_last, 1, peer::UNIT_CONFIG_APPLIED, &new_fp);
    set_unit_bag(&mut primary_last, 2, peer::UNIT_CONFIG_APPLIED, &new_fp);
    let mut pending = settled(3, 0);
    for m in pending.cluster.as_mut().unwrap() {
        m.pending_restart = true;
    }
    let mut pending_granted = settled(3, 1);
    for m in pending_granted.cluster.as_mut().unwrap() {
        m.pending_restart = true;
    }
    set_app_bag(
        &mut pending_granted,
        peer::APP_RESTART_GRANTED,
        "postgresql-1",
    );
    check(
        "config",
        vec![
            row(
                "a bad config value blocks naming the option and the limit, and changes nothing",
                bad(),
                &[],
                Some(Status::blocked(bad_message)),
            ),
            row(
                "the block clears when the value is fixed",
                fixed,
                &[],
                Some(Status::active(msg::PRIMARY)),
            ),
            row(
                "a cluster-wide option goes through edit-config, on the leader",
                with_config(settled(3, 0), &[("memory_work_mem", json!(8192))]),
                &["edit-config -p work_mem"],
                None,
            ),
            row(
                "a non-leader leaves cluster-wide options to the leader",
                with_config(settled(3, 1), &[("memory_work_mem", json!(8192))]),
                &[],
                None,
            ),
            row(
                "resetting an option without a default removes its parameter",
                {
                    let mut o = settled(3, 0);
                    o.dynamic_config.as_mut().unwrap()["postgresql"]["parameters"]
                        ["max_connections"] = json!(500);
                    o
                },
                &["edit-config -p max_connections"],
                None,
            ),
            row(
                "synchronous_node_count follows the option",
                with_config(settled(3, 0), &[("synchronous_node_count", json!("1"))]),
                &["edit-config -s synchronous_node_count"],
                None,
            ),
            row(
                "a member-level change waits: the primary goes last",
                sb(),
                &["unit-data restart-request=true"],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "a replica that asks is granted the restart first",
                replica_asks,
                &[
                    "unit-data restart-request=true",
                    "app-data restart-granted=postgresql-1",
                ],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "the leader grants one restart at a time",
                one_at_a_time,
                &["unit-data restart-request=true"],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "the granted replica applies its change and says which configuration it runs",
                granted_replica,
                &[
                    "snap set pgpilot.postgresql.parameters.shared-buffers pgpilot.postgresql.parameters.effective-cache-size",
                    "unit-data config-applied",
                ],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "a member that is starting is never restarted",
                starting,
                &["unit-data member-state=replica creating replica restart-request=true"],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "the primary restarts once every replica runs the new configuration",
                primary_last,
                &[
                    "snap set pgpilot.postgresql.parameters.shared-buffers pgpilot.postgresql.parameters.effective-cache-size",
                    "unit-data config-applied",
                ],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "pending restarts (a cluster-wide parameter) roll replicas first",
                pending,
                &[
                    "unit-data restart-request=true",
                    "app-data restart-granted=postgresql-1",
                ],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "the granted replica restarts its pending member through pgpilot",
                pending_granted,
                &["restart postgresql-1"],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
        ],
    );
    // The leader shows the config error on the application too.
    let plan = reconcile(&bad());
    assert_eq!(plan.app_status, Some(Status::blocked(bad_message)));
}

#[test]
fn etcd_membership() {
    let mut one_learner = joining(2, 4, 0);
    let mut members: Vec<EtcdEntry> = (0..2).map(|n| entry(n, false)).collect();
    members.push(entry(2, true));
    set_app_bag(
        &mut one_learner,
        peer::APP_ETCD_MEMBERS,
        &peer::encode_members(&members),
    );
    one_learner
        .etcd
        .as_mut()
        .unwrap()
        .push(etcd_member(2, true, false));
    let mut started_learner = joining(2, 3, 0);
    set_app_bag(
        &mut started_learner,
        peer::APP_ETCD_MEMBERS,
        &peer::encode_members(&members),
    );
    started_learner
        .etcd
        .as_mut()
        .unwrap()
        .push(etcd_member(2, true, true));
    set_unit_bag(&mut started_learner, 2, peer::UNIT_ETCD_STARTED, "true");
    let mut lost_entry = joining(2, 3, 0);
    lost_entry
        .etcd
        .as_mut()
        .unwrap()
        .push(etcd_member(2, true, false));
    let mut learner_starts = joining(2, 3, 2);
    set_app_bag(
        &mut learner_starts,
        peer::APP_ETCD_MEMBERS,
        &peer::encode_members(&members),
    );
    learner_starts.unit_status = Some(Status::waiting(msg::AWAITING_ETCD_ADMISSION));
    let mut departed = with_event(
        settled(3, 0),
        Event::PeerRelationDeparted {
            relation_id: "database-peers:0".into(),
            remote_unit: Some(unit(2)),
            departing_unit: Some(unit(2)),
        },
    );
    departed.peer.as_mut().unwrap().unit_data.remove(&unit(2));
    let mut ghost = settled(3, 0);
    ghost
        .etcd
        .as_mut()
        .unwrap()
        .push(etcd_member(7, false, true));
    let mut rescheme = settled(3, 0);
    for m in rescheme.etcd.as_mut().unwrap() {
        m.peer_urls = m
            .peer_urls
            .iter()
            .map(|u| u.replace("http:", "https:"))
            .collect();
    }
    let mut second_cluster = fresh(0, Event::LeaderElected);
    second_cluster.secrets.app_secret_id = Some("secret:app".into());
    second_cluster.secrets.app_secret = Some(secret_content());
    second_cluster.etcd = Some(vec![etcd_member(5, false, true)]);
    check(
        "etcd",
        vec![
            row(
                "the leader adds a joining unit as a learner",
                joining(2, 3, 0),
                &[
                    "etcd add-learner postgresql-2",
                    "app-data etcd-members=[postgresql-0,postgresql-1,postgresql-2~]",
                ],
                None,
            ),
            row(
                "one learner at a time: the next unit waits",
                one_learner,
                &[],
                None,
            ),
            row(
                "a learner added by a hook that failed later is recorded, not added twice",
                lost_entry,
                &["app-data etcd-members=[postgresql-0,postgresql-1,postgresql-2~]"],
                None,
            ),
            row(
                "a learner whose etcd started is promoted; pgpilot's endpoints then roll",
                started_learner,
                &[
                    "etcd promote postgresql-2",
                    "app-data etcd-members=[postgresql-0,postgresql-1,postgresql-2]",
                    "unit-data restart-request=true",
                ],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY_DEGRADED,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "a joining unit starts etcd with the member list it was given, then pgpilot",
                learner_starts,
                &[
                    "snap set etcd.* (8 keys)",
                    "start etcd",
                    "unit-data etcd-started=true",
                    "snap set pgpilot.* (16 keys)",
                    "start pgpilot",
                    "unit-data config-applied",
                ],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "a unit not admitted yet waits and starts nothing",
                joining(2, 4, 3),
                &[],
                Some(Status::waiting(msg::AWAITING_ETCD_ADMISSION)),
            ),
            row(
                "a departing unit is removed from etcd by the leader, as it leaves",
                departed,
                &[
                    "etcd remove postgresql-2",
                    "app-data etcd-members=[postgresql-0,postgresql-1]",
                    "edit-config -s synchronous_node_count",
                    "unit-data restart-request=true",
                ],
                Some(Status::active(format!(
                    "{}, {}",
                    msg::PRIMARY,
                    msg::AWAITING_RESTART_TURN
                ))),
            ),
            row(
                "a member no unit owns is removed: quorum never counts a ghost",
                ghost,
                &["etcd remove postgresql-7"],
                None,
            ),
            row(
                "members whose peer URLs moved to https are the same members, not ghosts",
                rescheme,
                &[],
                None,
            ),
            row(
                "the leader never bootstraps a second etcd cluster",
                second_cluster,
                &[
                    "open-port 5432/tcp",
                    "version 16.4",
                    "unit-data ip=10.0.0.1 member=postgresql-0 workload-version=16.4",
                ],
                Some(Status::waiting(msg::AWAITING_ETCD_ADMISSION)),
            ),
        ],
    );
}

#[test]
fn a_joining_member_gets_the_admitted_list_and_state_existing() {
    let mut o = joining(2, 3, 2);
    let mut members: Vec<EtcdEntry> = (0..2).map(|n| entry(n, false)).collect();
    members.push(entry(2, true));
    set_app_bag(
        &mut o,
        peer::APP_ETCD_MEMBERS,
        &peer::encode_members(&members),
    );
    let plan = reconcile(&o);
    let Step::SnapSet(keys) = &plan.steps[0] else {
        panic!("{:?}", plan.steps)
    };
    let get = |k: &str| keys.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(
        get("etcd.initial-cluster"),
        json!("postgresql-0=http://10.0.0.1:2380,postgresql-1=http://10.0.0.2:2380,postgresql-2=http://10.0.0.3:2380")
    );
    assert_eq!(get("etcd.initial-cluster-state"), json!("existing"));
    // pgpilot talks to the voting members only.
    let Step::SnapSet(keys) = &plan.steps[3] else {
        panic!("{:?}", plan.steps)
    };
    let get = |k: &str| keys.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(
        get("pgpilot.dcs.endpoints"),
        json!(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
    );
    assert_eq!(get("pgpilot.cluster.name"), json!("postgresql-2"));
    assert_eq!(
        get("pgpilot.postgresql.connect-address"),
        json!("10.0.0.3:5432")
    );
}

#[test]
fn statuses() {
    let mut degraded = settled(3, 0);
    degraded.cluster.as_mut().unwrap()[2].state = "stopped".into();
    let mut replica = settled(3, 1);
    replica.unit_status = Some(Status::waiting(msg::AWAITING_MEMBER));
    let mut missing = settled(3, 1);
    missing.cluster.as_mut().unwrap().remove(1);
    let mut unreadable = settled(3, 1);
    unreadable.cluster = None;
    let mut two = settled(2, 0);
    two.app_status = Some(Status::active(""));
    check(
        "statuses",
        vec![
            row(
                "`Primary (degraded)` when fewer members run than units exist",
                degraded,
                &[],
                Some(Status::active(msg::PRIMARY_DEGRADED)),
            ),
            row(
                "a healthy replica is active with an empty message",
                replica,
                &[],
                Some(Status::active("")),
            ),
            row(
                "a member missing from pgpilot's view is awaited",
                missing,
                &[],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "pgpilot's view unreadable: awaited, nothing restarted",
                unreadable,
                &[],
                Some(Status::waiting(msg::AWAITING_MEMBER)),
            ),
            row(
                "two units: nothing to change on the unit",
                two.clone(),
                &[],
                None,
            ),
        ],
    );
    assert_eq!(
        reconcile(&two).app_status,
        Some(Status::active(
            "2 units cannot fail over (etcd loses its majority with either); run: juju add-unit postgresql"
        )),
        "two units: the application status says it cannot fail over and how to fix it"
    );
}

#[test]
fn broken_members() {
    let broken = |since: Option<u64>| {
        let mut o = settled(3, 1);
        o.cluster.as_mut().unwrap()[1].state = "start failed".into();
        if let Some(s) = since {
            set_unit_bag(&mut o, 1, peer::UNIT_BROKEN_SINCE, &s.to_string());
            set_unit_bag(&mut o, 1, peer::UNIT_MEMBER_STATE, "replica start failed");
        }
        o
    };
    let waiting = Some(Status::waiting(
        "member start failed: reinitialised if it stays so for 10 minutes",
    ));
    let mut recovered = settled(3, 1);
    set_unit_bag(&mut recovered, 1, peer::UNIT_BROKEN_SINCE, "1799999000");
    let mut broken_primary = settled(3, 0);
    broken_primary.cluster.as_mut().unwrap()[0].state = "start failed".into();
    set_unit_bag(
        &mut broken_primary,
        0,
        peer::UNIT_MEMBER_STATE,
        "leader start failed",
    );
    check(
        "broken",
        vec![
            row(
                "a broken member is noted first",
                broken(None),
                &["unit-data broken-since=1800000000 member-state=replica start failed"],
                waiting.clone(),
            ),
            row(
                "not reinitialised before 10 minutes",
                broken(Some(NOW - 60)),
                &[],
                waiting.clone(),
            ),
            row(
                "reinitialised once broken for 10 minutes",
                broken(Some(NOW - 601)),
                &["reinit postgresql-1", "unit-data broken-since="],
                waiting,
            ),
            row(
                "a member that recovered forgets it was broken",
                recovered,
                &["unit-data broken-since="],
                None,
            ),
            row(
                "a broken primary is not reinitialised from itself",
                broken_primary,
                &[],
                Some(Status::waiting(
                    "member start failed: reinitialised if it stays so for 10 minutes",
                )),
            ),
        ],
    );
}

#[test]
fn stopping_and_leaving() {
    let mut stopped = with_event(settled(3, 1), Event::Stop);
    stopped.services = services(false, false);
    stopped.etcd.as_mut().unwrap().remove(1);
    let stopping = Some(Status::maintenance(msg::STOPPED));
    let mut leaving = settled(3, 2);
    leaving.services = services(false, false);
    leaving.etcd.as_mut().unwrap().remove(2);
    leaving.unit_status = Some(Status::maintenance(msg::STOPPED));
    set_unit_bag(&mut leaving, 2, peer::UNIT_DEPARTING, "true");
    check(
        "teardown",
        vec![
            row(
                "stop: pgpilot hands over as it stops, the member leaves etcd, then etcd stops",
                with_event(settled(3, 1), Event::Stop),
                &["stop pgpilot", "etcd remove postgresql-1", "stop etcd"],
                stopping.clone(),
            ),
            row(
                "the last member does not remove itself from etcd",
                with_event(settled(1, 0), Event::Stop),
                &["stop pgpilot", "stop etcd"],
                stopping.clone(),
            ),
            row(
                "a departing unit tears itself down when it learns it leaves",
                with_event(
                    settled(3, 2),
                    Event::PeerRelationDeparted {
                        relation_id: "database-peers:0".into(),
                        remote_unit: Some(unit(0)),
                        departing_unit: Some(unit(2)),
                    },
                ),
                &[
                    "stop pgpilot",
                    "etcd remove postgresql-2",
                    "stop etcd",
                    "unit-data departing=true",
                ],
                stopping,
            ),
            row(
                "remove after stop has nothing left to do",
                stopped,
                &[],
                None,
            ),
            row(
                "a unit that is leaving never starts its services again",
                leaving,
                &[],
                None,
            ),
        ],
    );
}

#[test]
fn switches_and_odd_hooks() {
    let mut disabled = Observed::disabled(&ctx(1, Event::ConfigChanged), host());
    disabled.unit_status = Some(Status::active(""));
    check(
        "switches",
        vec![
            row(
                "the disable file blocks 'Disabled' and touches nothing",
                disabled,
                &[],
                Some(Status::blocked(msg::DISABLED)),
            ),
            row(
                "an unknown hook plans nothing",
                with_event(
                    settled(3, 0),
                    Event::Unknown {
                        hook: "database-relation-joined".into(),
                    },
                ),
                &[],
                None,
            ),
            row(
                "no peer relation yet: wait for it",
                {
                    let mut o = fresh(0, Event::Install);
                    o.peer = None;
                    o
                },
                &[],
                Some(Status::waiting(msg::AWAITING_PEER_RELATION)),
            ),
        ],
    );
}

/// The invariant of every hook: observed == desired gives an empty plan,
/// so a hook run twice changes nothing the second time.
#[test]
fn a_hook_run_twice_on_the_same_state_plans_nothing() {
    for units in 1..=4 {
        for me in 0..units {
            let events = [
                Event::UpdateStatus,
                Event::ConfigChanged,
                Event::Start,
                Event::UpgradeCharm,
                Event::LeaderElected,
                Event::LeaderSettingsChanged,
                Event::SecretChanged {
                    id: "secret:app".into(),
                    label: None,
                },
                Event::PeerRelationChanged {
                    relation_id: "database-peers:0".into(),
                    remote_unit: None,
                },
            ];
            for event in events {
                let o = with_event(settled(units, me), event.clone());
                let plan = reconcile(&o);
                assert!(
                    plan.is_empty(),
                    "{units} units, unit {me}, {event:?}: {:?}",
                    plan.steps.iter().map(summary).collect::<Vec<_>>()
                );
            }
        }
    }
}

/// What the plan would change, applied to the snapshot (a one-unit world:
/// pgpilot becomes the running primary when started).
fn apply_effects(o: &mut Observed, plan: &Plan) {
    let me = o.member();
    for step in &plan.steps {
        match step {
            Step::ShowStatus(s) => o.unit_status = Some(s.clone()),
            Step::InstallSnapFile(_) | Step::InstallSnapRevision(_) => {
                o.snap = Some(SnapInfo {
                    version: "16.4".into(),
                    revision: "x1".into(),
                    held: false,
                });
                o.services = services(false, false);
                o.resource = None;
            }
            Step::HoldSnap => o.snap.as_mut().unwrap().held = true,
            Step::SetWorkloadVersion(_) => {}
            Step::OpenPort(p) => o.opened_ports.push(p.clone()),
            Step::SetUnitData(m) => {
                let bag = o
                    .peer
                    .as_mut()
                    .unwrap()
                    .unit_data
                    .entry(o.unit.clone())
                    .or_default();
                for (k, v) in m {
                    bag.insert(k.clone(), v.clone());
                }
            }
            Step::SetAppData(m) => {
                for (k, v) in m {
                    o.peer
                        .as_mut()
                        .unwrap()
                        .app_data
                        .insert(k.clone(), v.clone());
                }
            }
            Step::CreateAppSecret { content, .. } => {
                o.secrets.app_secret_id = Some("secret:app".into());
                o.secrets.app_secret = Some(content.clone());
                o.peer
                    .as_mut()
                    .unwrap()
                    .app_data
                    .insert(peer::APP_SECRET_ID.into(), "secret:app".into());
            }
            Step::UpdateAppSecret { content, .. } => o.secrets.app_secret = Some(content.clone()),
            Step::SnapSet(pairs) => set_doc(&mut o.snap_config, pairs),
            Step::StartServices(names) => {
                for s in o.services.iter_mut().filter(|s| names.contains(&s.name)) {
                    s.active = true;
                    s.enabled = true;
                }
                if names.iter().any(|n| n == "etcd") {
                    o.etcd = Some(vec![etcd_member(0, false, true)]);
                }
                if names.iter().any(|n| n == "pgpilot") {
                    o.cluster = Some(vec![pg_member(0, Role::Leader, "running")]);
                    o.dynamic_config = Some(json!({"ttl": 10, "synchronous_mode": false,
                        "synchronous_node_count": 1, "synchronous_mode_strict": false,
                        "maximum_lag_on_failover": 1048576,
                        "postgresql": {"use_pg_rewind": true, "parameters": {}}}));
                }
            }
            Step::PatchClusterConfig {
                settings,
                parameters,
            } => {
                let d = o.dynamic_config.as_mut().unwrap();
                for (k, v) in settings {
                    d[k.as_str()] = v.clone();
                }
                for (k, v) in parameters {
                    d["postgresql"]["parameters"][k.as_str()] = v.clone();
                }
            }
            other => panic!("{me}: unexpected step in a one-unit deploy: {other:?}"),
        }
    }
    if let Some(s) = &plan.unit_status {
        o.unit_status = Some(s.clone());
    }
    if let Some(s) = &plan.app_status {
        o.app_status = Some(s.clone());
    }
}

#[test]
fn one_unit_deploys_from_nothing_and_settles() {
    let mut o = Observed::empty(&ctx(0, Event::Install), host());
    o.is_leader = true;
    o.resource = Some(PathBuf::from("/res/charmed-postgresql.snap"));
    let events = [
        Event::Install,
        Event::PeerRelationCreated {
            relation_id: "database-peers:0".into(),
        },
        Event::LeaderElected,
        Event::ConfigChanged,
        Event::Start,
        Event::UpdateStatus,
        Event::UpdateStatus,
    ];
    let mut hooks = Vec::new();
    for event in events {
        if matches!(event, Event::PeerRelationCreated { .. }) {
            o.peer = Some(PeerView {
                relation_id: "database-peers:0".into(),
                ..Default::default()
            });
            o.address = Some(ip(0));
        }
        o.event = event.clone();
        let plan = reconcile(&o);
        hooks.push((
            format!("{event:?}"),
            plan.steps.iter().map(summary).collect::<Vec<_>>(),
        ));
        apply_effects(&mut o, &plan);
    }
    let last = &hooks[hooks.len() - 1];
    assert!(last.1.is_empty(), "settled: {hooks:#?}");
    assert_eq!(
        o.unit_status,
        Some(Status::active(msg::PRIMARY)),
        "{hooks:#?}"
    );
    assert_eq!(o.app_status, Some(Status::active("")));
    assert!(o.service_active("etcd") && o.service_active("pgpilot"));
    // The cluster-wide options went through edit-config once, at start.
    let patches: usize = hooks
        .iter()
        .flat_map(|(_, s)| s)
        .filter(|s| s.starts_with("edit-config"))
        .count();
    assert_eq!(patches, 1, "{hooks:#?}");
    assert_eq!(
        snap::lookup(&o.snap_config, "pgpilot.dcs.endpoints"),
        Some(&json!(["http://10.0.0.1:2379"]))
    );
}

#[test]
fn next_restart_rules() {
    let cluster = vec![
        pg_member(0, Role::Leader, "running"),
        pg_member(1, Role::Replica, "streaming"),
        pg_member(2, Role::Replica, "streaming"),
    ];
    let req = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        next_restart(
            None,
            &req(&["postgresql-0", "postgresql-2"]),
            Some(&cluster),
            false
        ),
        Some("postgresql-2".into()),
        "replicas before the primary"
    );
    assert_eq!(
        next_restart(None, &req(&["postgresql-0"]), Some(&cluster), true),
        None,
        "the primary waits for the replicas' configuration"
    );
    assert_eq!(
        next_restart(None, &req(&["postgresql-0"]), Some(&cluster), false),
        Some("postgresql-0".into())
    );
    assert_eq!(
        next_restart(
            Some("postgresql-2"),
            &req(&["postgresql-1", "postgresql-2"]),
            Some(&cluster),
            false
        ),
        Some("postgresql-2".into()),
        "a grant holds while its member still asks"
    );
    let mut one_down = cluster.clone();
    one_down[2].state = "starting".into();
    assert_eq!(
        next_restart(None, &req(&["postgresql-1"]), Some(&one_down), false),
        None,
        "nobody restarts while another member is not healthy"
    );
    assert_eq!(
        next_restart(None, &req(&["postgresql-2"]), Some(&one_down), false),
        None,
        "a starting member is never restarted"
    );
    assert_eq!(
        next_restart(None, &req(&["postgresql-1"]), None, false),
        None
    );
}
