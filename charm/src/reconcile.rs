//! The decision: a pure function from one [`Observed`] snapshot to a
//! [`Plan`]. Nothing here runs a tool, reads a file or the clock; "why did
//! unit X restart?" is answered in this file.
//!
//! A hook converges the unit in this order, and stops at the first thing it
//! must wait for (the next hook sees the same unmet state and goes on; there
//! is no deferral queue):
//!
//! 1. the snap: installed (resource file, else the pinned revision), held;
//! 2. the options: checked before anything is applied;
//! 3. the peer relation and this unit's address (published in its bag,
//!    and in its `cos-agent` document: reconcile/cos.rs);
//! 4. the passwords: the leader creates the application secret once;
//!    `system-users` overrides it;
//! 5. etcd membership (leader): departed units removed, a started learner
//!    promoted, the next unit added as a learner, one at a time;
//! 6. this unit's etcd: started with the member list it was admitted with;
//!    or, for a cluster created with an `etcd` relation, neither: the
//!    external etcd's endpoints and TLS files (reconcile/etcd_client.rs);
//! 7. pgpilot: its keys set and started; once running, changes that restart
//!    it wait for the leader's grant (replicas first, the primary last, one
//!    at a time, never a member that is starting);
//! 8. leader: cluster-wide settings (`edit-config`), restart grants, the
//!    plugin options' extensions in every database, the `database`
//!    relations' users and answers (reconcile/client.rs), the S3
//!    repository's check and a restore's progress (reconcile/backup.rs);
//! 9. a member broken for [`REINIT_AFTER_SECS`] is reinitialised;
//! 10. statuses, set only when they differ from what is shown.
//!
//! stop, remove, and every hook once this unit is leaving the peer relation
//! tear down instead: pgpilot stops (handing over if it leads), the member
//! leaves etcd, etcd stops.
//!
//! Observed == desired gives an empty plan: a hook run twice changes
//! nothing the second time.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::{self, ClusterMember};
use crate::config::{self, CharmConfig};
use crate::context::Event;
use crate::etcd::{self, EtcdMember};
use crate::observe::{etcd_endpoints, secret_key, Observed, Passwords, SYSTEM_USERS};
use crate::peer::{self, EtcdEntry};
use crate::plan::{Plan, Step};
use crate::snap::{self, SERVICE_ETCD, SERVICE_PGPILOT};
use crate::status::{msg, Status};
use crate::tools::LogLevel;

mod backup;
mod client;
mod cos;
mod etcd_client;
mod etcd_tls;
mod extensions;
mod membership;
mod rolling;
mod tls;

pub use extensions::{extension_changes, DatabaseChange, StillUsed};
pub use rolling::{config_fingerprint, next_restart};

/// PostgreSQL's port, opened on every unit.
pub const PG_PORT: &str = "5432/tcp";
pub const PG_PORT_NUMBER: u16 = 5432;
pub const API_PORT: u16 = 8008;
/// A member broken this long (seconds) is reinitialised.
pub const REINIT_AFTER_SECS: u64 = 600;

/// Member-level parameters this charm manages through `snap set`.
const MEMBER_PARAMETERS: &[&str] = &[
    "shared_buffers",
    "effective_cache_size",
    "shared_preload_libraries",
];

pub fn reconcile(o: &Observed) -> Plan {
    let mut r = Reconciler::new(o);
    if o.disabled {
        // Touch nothing: only say so.
        r.plan.unit_status = Some(Status::blocked(msg::DISABLED));
        return r.plan;
    }
    match &o.event {
        Event::Action { .. } => return r.plan,
        Event::Unknown { hook } => {
            r.plan
                .log(LogLevel::Info, format!("hook {hook}: nothing to do"));
            return r.plan;
        }
        Event::Stop | Event::Remove => {
            r.teardown();
            return r.finish(None);
        }
        _ => {}
    }
    // This unit leaves: from the hook that says so on, every hook only
    // tears down (an update-status in between must not start services).
    let leaving = o.event.departing_unit() == Some(o.unit.as_str())
        || client::leaves_client_relation(&o.event, &o.unit);
    if leaving || r.unit_value(peer::UNIT_DEPARTING) == Some("true") {
        r.teardown();
        if leaving {
            r.set_unit(peer::UNIT_DEPARTING, "true");
        }
        return r.finish(None);
    }
    let unit_status = r.converge();
    r.finish(Some(unit_status))
}

pub(crate) struct Reconciler<'a> {
    o: &'a Observed,
    plan: Plan,
    /// This unit's bag after the plan; flushed as SetUnitData steps.
    unit_bag: BTreeMap<String, String>,
    unit_flushed: BTreeMap<String, String>,
    /// The app bag after the plan (leader).
    app_bag: BTreeMap<String, String>,
    app_flushed: BTreeMap<String, String>,
    /// The leader's application status.
    app_status: Option<Status>,
    /// The `tls.*` snap keys this plan leaves in force (step 4): etcd's
    /// copy follows them in the same hook.
    tls_desired: Vec<(String, Value)>,
}

impl<'a> Reconciler<'a> {
    fn new(o: &'a Observed) -> Self {
        let unit_bag = o
            .peer
            .as_ref()
            .and_then(|p| p.unit_data.get(&o.unit).cloned())
            .unwrap_or_default();
        let app_bag = o
            .peer
            .as_ref()
            .map(|p| p.app_data.clone())
            .unwrap_or_default();
        Reconciler {
            o,
            plan: Plan::default(),
            unit_flushed: unit_bag.clone(),
            unit_bag,
            app_flushed: app_bag.clone(),
            app_bag,
            app_status: None,
            tls_desired: Vec::new(),
        }
    }

    fn set_unit(&mut self, key: &str, value: impl Into<String>) {
        self.unit_bag.insert(key.to_string(), value.into());
    }

    fn unit_value(&self, key: &str) -> Option<&str> {
        self.unit_bag
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Emit SetUnitData with what changed since the last flush.
    fn flush_unit(&mut self) {
        let changes = changed(&self.unit_flushed, &self.unit_bag);
        if !changes.is_empty() && self.o.peer.is_some() {
            self.plan.push(Step::SetUnitData(changes));
            self.unit_flushed = self.unit_bag.clone();
        }
    }

    fn set_app(&mut self, key: &str, value: impl Into<String>) {
        self.app_bag.insert(key.to_string(), value.into());
    }

    fn app_value(&self, key: &str) -> Option<&str> {
        self.app_bag
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flush_app(&mut self) {
        let changes = changed(&self.app_flushed, &self.app_bag);
        if !changes.is_empty() && self.o.is_leader && self.o.peer.is_some() {
            self.plan.push(Step::SetAppData(changes));
            self.app_flushed = self.app_bag.clone();
        }
    }

    /// Statuses go in only when they differ from what Juju shows.
    fn finish(mut self, unit_status: Option<Status>) -> Plan {
        self.flush_unit();
        self.flush_app();
        if let Some(s) = unit_status {
            if self.o.unit_status.as_ref() != Some(&s) {
                self.plan.unit_status = Some(s);
            }
        }
        if self.o.is_leader {
            if let Some(s) = self.app_status.take() {
                if self.o.app_status.as_ref() != Some(&s) {
                    self.plan.app_status = Some(s);
                }
            }
        }
        self.plan
    }

    fn converge(&mut self) -> Status {
        let o = self.o;

        // 1. The snap.
        let Some(snap_info) = &o.snap else {
            return self.install();
        };
        if !snap_info.held {
            self.plan.push(Step::HoldSnap);
        }

        // 2. The options, before anything is applied.
        let cfg = match config::validate(&o.config, o.host.machine) {
            Ok(c) => c,
            Err(e) => {
                let status = Status::blocked(e.to_string());
                self.app_status = Some(status.clone());
                self.plan.log(LogLevel::Warning, e.to_string());
                return status;
            }
        };
        if let Event::SecretRemove {
            id,
            revision: Some(revision),
            ..
        } = &o.event
        {
            let ours = o.secrets.app_secret_id.as_deref() == Some(id.as_str());
            if o.is_leader && ours {
                self.plan.push(Step::RemoveSecretRevision {
                    id: id.clone(),
                    revision: *revision,
                });
            }
        }

        // 3. The peer relation and this unit's address.
        let Some(peer) = &o.peer else {
            return Status::waiting(msg::AWAITING_PEER_RELATION);
        };
        if !o.opened_ports.iter().any(|p| p == PG_PORT) {
            self.plan.push(Step::OpenPort(PG_PORT.to_string()));
        }
        if self.unit_value(peer::UNIT_WORKLOAD_VERSION) != Some(snap_info.version.as_str()) {
            self.plan
                .push(Step::SetWorkloadVersion(snap_info.version.clone()));
            self.set_unit(peer::UNIT_WORKLOAD_VERSION, snap_info.version.clone());
        }
        let Some(ip) = o.address.clone() else {
            return Status::waiting(msg::AWAITING_ADDRESS);
        };
        let me = o.member();
        self.set_unit(peer::UNIT_IP, ip.clone());
        self.set_unit(peer::UNIT_MEMBER, me.clone());
        self.flush_unit();
        self.publish_cos(&ip);

        // 4. The passwords.
        let passwords = match self.passwords() {
            Ok(p) => p,
            Err(status) => return status,
        };

        // The unit's certificate (reconcile/tls.rs): what is in force after
        // this hook, for PostgreSQL and the API (step 7) and etcd (5-6).
        self.tls_desired = self.tls_keys(&ip);
        let tls_ready = self.tls_desired.iter().all(|(_, v)| !v.is_null());
        self.set_unit(peer::UNIT_TLS_READY, if tls_ready { "true" } else { "" });

        // 5-6. etcd: the units' own, or an external one (reconcile/etcd_client.rs).
        let cluster_etcd = match self.cluster_etcd(&ip) {
            Ok(c) => c,
            Err(status) => return status,
        };
        let members = &cluster_etcd.members;

        // 7. pgpilot.
        let mut desired = pgpilot_keys(&o.app, &me, &ip, members, &passwords, &cfg);
        desired.extend(callback_keys(o.host.wake_command.as_deref()));
        if cluster_etcd.external.is_none() {
            desired.extend(self.etcd_tls_dcs_keys(members));
        }
        cluster_etcd.override_keys(&mut desired);
        let (backup_keys, backup_fingerprint) = self.s3_keys();
        desired.extend(backup_keys);
        desired.extend(self.tls_desired.clone());
        let mut diff = snap_diff(&o.snap_config, &desired);
        let fingerprint = config_fingerprint(members, &o.config) + &backup_fingerprint;
        let pgpilot_active = o.service_active(SERVICE_PGPILOT);
        if pgpilot_active {
            // Passwords and callbacks: the snap reloads pgpilot (SIGHUP),
            // PostgreSQL keeps running, so no rolling restart.
            let (live, rest): (Vec<_>, Vec<_>) =
                diff.into_iter().partition(|(k, _)| applied_live(k));
            if !live.is_empty() {
                self.plan.push(Step::SnapSet(live));
            }
            diff = rest;
        }
        let pending = o.my_cluster_member().is_some_and(|m| m.pending_restart);
        let need_restart = pgpilot_active && (!diff.is_empty() || pending);
        if o.is_leader {
            self.grant_restart(need_restart, &fingerprint);
        }
        let status = if !pgpilot_active {
            if !diff.is_empty() {
                self.plan.push(Step::SnapSet(diff));
            }
            self.plan
                .push(Step::StartServices(vec![SERVICE_PGPILOT.to_string()]));
            self.set_unit(peer::UNIT_RESTART_REQUEST, "");
            self.set_unit(peer::UNIT_CONFIG_APPLIED, fingerprint);
            Status::waiting(msg::AWAITING_MEMBER)
        } else {
            self.rolling_change(diff, need_restart, &fingerprint)
        };

        if let Some(mine) = o.my_cluster_member() {
            let role = if mine.is_leader() {
                "leader"
            } else {
                "replica"
            };
            self.set_unit(peer::UNIT_MEMBER_STATE, format!("{role} {}", mine.state));
        }

        // 8. Cluster-wide settings and the plugins' extensions (the leader,
        //    on a running cluster).
        let mut blocked = None;
        if o.is_leader {
            if let Some(step) = self.cluster_patch(&cfg, peer.units().len()) {
                self.plan.push(step);
            }
            blocked = self.manage_extensions(&cfg, &passwords);
            let clients = self.manage_clients(&passwords);
            blocked = blocked.or(clients);
        }

        // 9. A member that stays broken.
        self.reinit_if_broken();
        let blocked = blocked.or(cluster_etcd.refusal);

        blocked.unwrap_or_else(|| self.backup_status(status))
    }

    /// The `cos-agent` relations: this unit's document in its bag.
    fn publish_cos(&mut self, ip: &str) {
        match cos::cos_agent_steps(self.o, ip) {
            Ok(steps) => self.plan.steps.extend(steps),
            Err(e) => self.plan.log(LogLevel::Error, e.to_string()),
        }
    }

    fn install(&mut self) -> Status {
        let o = self.o;
        let step = if let Some(path) = &o.resource {
            Step::InstallSnapFile(path.clone())
        } else if let Some(rev) = &o.pinned_revision {
            Step::InstallSnapRevision(rev.clone())
        } else {
            return Status::blocked(format!(
                "no snap to install: juju attach-resource {} charmed-postgresql-snap=charmed-postgresql.snap",
                o.app
            ));
        };
        let installing = Status::maintenance(msg::INSTALLING);
        if o.unit_status.as_ref() != Some(&installing) {
            self.plan.push(Step::ShowStatus(installing));
        }
        self.plan.push(step);
        self.plan.push(Step::HoldSnap);
        Status::waiting(msg::WAITING_TO_START)
    }

    /// The passwords every unit configures: the application secret (the
    /// leader creates it once, fills keys it lacks), with `system-users`
    /// overriding it.
    fn passwords(&mut self) -> Result<Passwords, Status> {
        let o = self.o;
        let s = &o.secrets;
        let fresh = &o.host.fresh_passwords;
        let mut passwords = Passwords::new();
        match (&s.app_secret_id, &s.app_secret) {
            (None, _) if o.is_leader => {
                let content = SYSTEM_USERS
                    .iter()
                    .map(|u| (secret_key(u), fresh.get(*u).cloned().unwrap_or_default()))
                    .collect();
                self.plan.push(Step::CreateAppSecret {
                    label: peer::app_secret_label(&o.app),
                    content,
                });
                passwords = fresh.clone();
            }
            (None, _) => return Err(Status::waiting(msg::AWAITING_PASSWORDS)),
            (Some(id), Some(content)) => {
                let mut complete = content.clone();
                for user in SYSTEM_USERS {
                    let key = secret_key(user);
                    match content.get(&key).filter(|p| !p.is_empty()) {
                        Some(p) => {
                            passwords.insert(user.to_string(), p.clone());
                        }
                        None if o.is_leader => {
                            let p = fresh.get(*user).cloned().unwrap_or_default();
                            complete.insert(key, p.clone());
                            passwords.insert(user.to_string(), p);
                        }
                        None => return Err(Status::waiting(msg::AWAITING_PASSWORDS)),
                    }
                }
                if &complete != content {
                    self.plan.push(Step::UpdateAppSecret {
                        id: id.clone(),
                        content: complete,
                    });
                }
            }
            (Some(_), None) => {
                let why = s.app_secret_error.clone().unwrap_or_default();
                self.plan.log(
                    LogLevel::Warning,
                    format!("cannot read the passwords secret: {why}"),
                );
                return Err(Status::waiting(msg::AWAITING_PASSWORDS));
            }
        }
        match &s.user_secret {
            None => {}
            Some(Err(why)) => {
                let first = why.lines().next().unwrap_or_default();
                return Err(Status::blocked(format!(
                    "system-users: cannot read the secret ({first}); run: juju grant-secret <secret> {}",
                    o.app
                )));
            }
            Some(Ok(content)) => {
                for (user, password) in content {
                    if !SYSTEM_USERS.contains(&user.as_str()) {
                        return Err(Status::blocked(format!(
                            "system-users: unknown user {user:?}; the users are {}",
                            SYSTEM_USERS.join(", ")
                        )));
                    }
                    if password.is_empty() {
                        return Err(Status::blocked(format!(
                            "system-users: the password of {user} is empty"
                        )));
                    }
                    passwords.insert(user.clone(), password.clone());
                }
            }
        }
        Ok(passwords)
    }

    /// The unit's status from pgpilot's view of its member.
    fn member_status(&self) -> Status {
        let o = self.o;
        let Some(mine) = o.my_cluster_member() else {
            return Status::waiting(msg::AWAITING_MEMBER);
        };
        if mine.is_broken() {
            return Status::waiting(format!(
                "member {}: reinitialised if it stays so for {} minutes",
                mine.state,
                REINIT_AFTER_SECS / 60
            ));
        }
        if !mine.is_healthy() {
            return Status::waiting(msg::AWAITING_MEMBER);
        }
        if mine.is_leader() {
            let running = o
                .cluster
                .as_ref()
                .map(|c| c.iter().filter(|m| m.is_healthy()).count())
                .unwrap_or(0);
            let units = o.peer.as_ref().map(|p| p.units().len()).unwrap_or(1);
            if running < units {
                return Status::active(msg::PRIMARY_DEGRADED);
            }
            return Status::active(msg::PRIMARY);
        }
        Status::active("")
    }

    fn cluster_patch(&self, cfg: &CharmConfig, units: usize) -> Option<Step> {
        let o = self.o;
        let dynamic = o.dynamic_config.as_ref()?;
        let cluster = o.cluster.as_deref()?;
        if !cluster::leader(cluster).is_some_and(ClusterMember::is_healthy) {
            return None;
        }
        let sync = cfg.synchronous_node_count.resolve(units);
        let wanted = [
            ("synchronous_mode", Value::from(sync >= 1)),
            ("synchronous_node_count", Value::from(sync.max(1))),
            (
                "synchronous_mode_strict",
                Value::from(cfg.synchronous_mode_strict && sync >= 1),
            ),
            (
                "maximum_lag_on_failover",
                Value::from(cfg.maximum_lag_on_failover),
            ),
        ];
        let settings: Vec<(String, Value)> = wanted
            .into_iter()
            .filter(|(k, v)| !snap::same_value(v, dynamic.get(*k)))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let current = dynamic.get("postgresql").and_then(|p| p.get("parameters"));
        let parameters: Vec<(String, Value)> = cfg
            .cluster_parameters
            .iter()
            .filter_map(|(name, v)| {
                let have = current.and_then(|c| c.get(name)).filter(|v| !v.is_null());
                let want = v.clone().unwrap_or(Value::Null);
                (!snap::same_value(&want, have)).then(|| (name.clone(), want))
            })
            .collect();
        if settings.is_empty() && parameters.is_empty() {
            return None;
        }
        Some(Step::PatchClusterConfig {
            settings,
            parameters,
        })
    }

    fn reinit_if_broken(&mut self) {
        let o = self.o;
        let me = o.member();
        let leader_elsewhere = o
            .cluster
            .as_deref()
            .and_then(cluster::leader)
            .is_some_and(|l| l.name != me && l.is_healthy());
        let broken = o.service_active(SERVICE_PGPILOT)
            && o.my_cluster_member().is_some_and(ClusterMember::is_broken)
            && leader_elsewhere;
        if !broken {
            self.set_unit(peer::UNIT_BROKEN_SINCE, "");
            return;
        }
        match self
            .unit_value(peer::UNIT_BROKEN_SINCE)
            .and_then(|v| v.parse::<u64>().ok())
        {
            None => self.set_unit(peer::UNIT_BROKEN_SINCE, o.host.now.to_string()),
            Some(since) if o.host.now.saturating_sub(since) >= REINIT_AFTER_SECS => {
                self.plan.push(Step::ReinitMember(me));
                self.set_unit(peer::UNIT_BROKEN_SINCE, "");
            }
            Some(_) => {}
        }
    }

    /// stop / remove / this unit departing: pgpilot hands over as it stops,
    /// then this member leaves etcd, then etcd stops.
    fn teardown(&mut self) {
        let o = self.o;
        if o.snap.is_none() {
            return;
        }
        let me = o.member();
        if o.service_active(SERVICE_PGPILOT) {
            self.plan
                .push(Step::StopServices(vec![SERVICE_PGPILOT.to_string()]));
        }
        if let Some(observed) = &o.etcd {
            let my_peer_url = o.address.as_deref().map(etcd::peer_url);
            let mine = observed.iter().find(|m: &&EtcdMember| {
                m.name == me
                    || my_peer_url
                        .as_ref()
                        .is_some_and(|u| etcd::lists_address(&m.peer_urls, u))
            });
            if let Some(m) = mine {
                let others: Vec<String> = etcd_endpoints(o)
                    .into_iter()
                    .filter(|e| !m.client_urls.iter().any(|u| etcd::same_host(u, e)))
                    .collect();
                if observed.len() > 1 && !others.is_empty() {
                    self.plan.push(Step::EtcdRemove {
                        id: m.id,
                        name: me.clone(),
                        endpoints: others,
                    });
                }
            }
        }
        if o.service_active(SERVICE_ETCD) {
            self.plan
                .push(Step::StopServices(vec![SERVICE_ETCD.to_string()]));
        }
        let stopped = Status::maintenance(msg::STOPPED);
        if !self.plan.steps.is_empty() && o.unit_status.as_ref() != Some(&stopped) {
            self.plan.unit_status = Some(stopped);
        }
    }
}

/// The application status the leader shows.
fn app_status(o: &Observed, units: usize, external_etcd: bool) -> Status {
    if units == 2 && !external_etcd {
        return Status::active(format!(
            "2 units cannot fail over (etcd loses its majority with either); run: juju add-unit {}",
            o.app
        ));
    }
    Status::active("")
}

/// Keys of `after` that differ from `before` (removed keys become "").
fn changed(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in after {
        let old = before.get(k).map(String::as_str).unwrap_or("");
        if old != v {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The pairs of `desired` the snap does not hold yet.
pub fn snap_diff(snap_config: &Value, desired: &[(String, Value)]) -> Vec<(String, Value)> {
    desired
        .iter()
        .filter(|(k, v)| !snap::same_value(v, snap::lookup(snap_config, k)))
        .cloned()
        .collect()
}

/// The `pgpilot.*` snap keys of this member.
pub fn pgpilot_keys(
    app: &str,
    member: &str,
    ip: &str,
    members: &[EtcdEntry],
    passwords: &Passwords,
    cfg: &CharmConfig,
) -> Vec<(String, Value)> {
    let mut endpoints = peer::voter_client_urls(members);
    if endpoints.is_empty() {
        endpoints.push(etcd::client_url(ip));
    }
    let pw = |user: &str| Value::from(passwords.get(user).cloned().unwrap_or_default());
    let mut keys: Vec<(String, Value)> = vec![
        ("pgpilot.cluster.scope".into(), Value::from(app)),
        ("pgpilot.cluster.name".into(), Value::from(member)),
        ("pgpilot.dcs.endpoints".into(), Value::from(endpoints)),
        ("pgpilot.postgresql.listen".into(), Value::from(ip)),
        (
            "pgpilot.postgresql.port".into(),
            Value::from(PG_PORT_NUMBER),
        ),
        (
            "pgpilot.postgresql.connect-address".into(),
            Value::from(format!("{ip}:{PG_PORT_NUMBER}")),
        ),
        (
            "pgpilot.postgresql.authentication.superuser.username".into(),
            Value::from("operator"),
        ),
        (
            "pgpilot.postgresql.authentication.superuser.password".into(),
            pw("operator"),
        ),
        (
            "pgpilot.postgresql.authentication.replication.username".into(),
            Value::from("replication"),
        ),
        (
            "pgpilot.postgresql.authentication.replication.password".into(),
            pw("replication"),
        ),
        (
            "pgpilot.api.listen".into(),
            Value::from(format!("{ip}:{API_PORT}")),
        ),
        ("pgpilot.api.username".into(), Value::from("patroni")),
        ("pgpilot.api.password".into(), pw("patroni")),
    ];
    for name in MEMBER_PARAMETERS {
        let value = cfg
            .member_parameters
            .get(*name)
            .cloned()
            .unwrap_or(Value::Null);
        keys.push((
            format!("pgpilot.postgresql.parameters.{}", name.replace('_', "-")),
            value,
        ));
    }
    keys
}

/// Keys a running pgpilot takes without a restart (the snap's configure
/// hook reloads it: docs/snap.md): the users' passwords, the API's
/// credentials, the callbacks, the TLS material (`tls.*`).
pub fn applied_live(key: &str) -> bool {
    key.starts_with("pgpilot.postgresql.callbacks.")
        || key.starts_with("tls.")
        || matches!(
            key,
            "pgpilot.postgresql.authentication.superuser.password"
                | "pgpilot.postgresql.authentication.replication.password"
                | "pgpilot.api.username"
                | "pgpilot.api.password"
                | "pgpilot.metrics.username"
                | "pgpilot.metrics.password"
        )
}

/// pgpilot's callbacks that wake this unit's charm after a role change, a
/// start of PostgreSQL or a reload (a replica following a new primary), so
/// statuses follow a failover at once. Not `on_stop`: a stop is what the
/// charm's own hooks do, and a callback waiting for the unit's hook lock
/// would hold pgpilot's shutdown up.
pub fn callback_keys(wake: Option<&[String]>) -> Vec<(String, Value)> {
    let value = wake.map_or(Value::Null, |argv| Value::from(argv.to_vec()));
    ["on-role-change", "on-start", "on-reload"]
        .iter()
        .map(|k| (format!("pgpilot.postgresql.callbacks.{k}"), value.clone()))
        .collect()
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
