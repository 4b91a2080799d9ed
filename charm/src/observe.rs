//! One snapshot of everything a hook decides on ([`Observed`]), and
//! [`observe`], which reads it through the two seams ([`HookTools`],
//! [`SnapDriver`]) once per hook, before anything is decided.
//!
//! Reading Juju's state (config, leadership, relation data, secrets,
//! statuses) must work: a failure is an error and the hook is retried.
//! Reading the workload (etcd's member list, pgpilot's cluster view) may fail
//! while it starts or is broken: those are `None`, and the decision says
//! what it waits for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client::ClientsView;
use crate::cluster::{self, ClusterMember};
use crate::config::{self, Machine};
use crate::context::{member_name, Event, HookContext, PEER_ENDPOINT, RELATION_ENDPOINTS};
use crate::etcd::{self, EtcdMember};
use crate::extensions::{self, ExtensionsView};
use crate::peer::{self, PeerView};
use crate::relation::RelationView;
use crate::snap::{
    self, ServiceState, SnapDriver, SnapError, SnapInfo, SERVICE_ETCD, SERVICE_PGPILOT,
};
use crate::status::Status;
use crate::tools::{Bag, HookTools, ToolError};

mod backup;
mod clients;

/// The charm's resource holding the snap file.
pub const SNAP_RESOURCE: &str = "charmed-postgresql-snap";

/// The system users whose passwords the charm keeps, and the key of each
/// in the application secret (`<user>-password`, today's keys).
pub const SYSTEM_USERS: &[&str] = &["operator", "replication", "monitoring", "patroni"];

pub fn secret_key(user: &str) -> String {
    format!("{user}-password")
}

/// user → password.
pub type Passwords = BTreeMap<String, String>;

/// What could be read of the secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretsView {
    /// The application secret's URI (from the app bag).
    pub app_secret_id: Option<String>,
    /// Its content (`<user>-password` keys).
    pub app_secret: Option<BTreeMap<String, String>>,
    /// Why it could not be read.
    pub app_secret_error: Option<String>,
    /// The `system-users` user secret: content (`<user>: <password>`), or why
    /// it cannot be read (not granted, ...). `None`: option unset.
    pub user_secret: Option<Result<BTreeMap<String, String>, String>>,
}

/// Facts about the host, gathered by the binary: time and randomness are
/// inputs, like `now` in `ha::decide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Seconds since the epoch.
    pub now: u64,
    pub machine: Machine,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// Passwords to use if the leader has to generate them in this hook.
    pub fresh_passwords: Passwords,
    /// Passwords for `database` relation users created in this hook.
    pub fresh_client_passwords: Vec<String>,
    /// How pgpilot's callbacks wake this unit's charm (`juju-exec` running
    /// `dispatch` with `hooks/role-changed`); `None` when `juju-exec` is
    /// not on the hook's PATH.
    pub wake_command: Option<Vec<String>>,
}

/// Everything one hook decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub event: Event,
    pub unit: String,
    pub app: String,
    pub model: String,
    /// JUJU_MODEL_UUID (empty when Juju does not say).
    pub model_uuid: String,
    /// The `disable` file exists: nothing else was read.
    pub disabled: bool,
    pub host: HostFacts,
    pub is_leader: bool,
    /// config-get --all.
    pub config: Map<String, Value>,
    /// The snap file attached as a resource (non-empty), when not installed.
    pub resource: Option<PathBuf>,
    /// The store revision pinned for this architecture, if any.
    pub pinned_revision: Option<String>,
    /// `None`: the snap is not installed.
    pub snap: Option<SnapInfo>,
    pub services: Vec<ServiceState>,
    /// `snap get -d`.
    pub snap_config: Value,
    /// `None`: no peer relation yet (or any more).
    pub peer: Option<PeerView>,
    /// This unit's address on the peer relation.
    pub address: Option<String>,
    /// The other applications' relations, by endpoint (every endpoint of
    /// [`RELATION_ENDPOINTS`] has an entry, possibly empty).
    pub relations: BTreeMap<String, Vec<RelationView>>,
    pub secrets: SecretsView,
    /// The provider's secrets on the `etcd` relation (`secret-user`,
    /// `secret-tls`), by URI; an unreadable one is absent.
    pub etcd_client_secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// `etcdctl member list`; `None` when etcd could not be asked.
    pub etcd: Option<Vec<EtcdMember>>,
    /// `patronictl list`; `None` when pgpilot could not be asked.
    pub cluster: Option<Vec<ClusterMember>>,
    /// `patronictl show-config -f json` (leader only).
    pub dynamic_config: Option<Value>,
    /// The databases' extensions on the primary (leader, only when
    /// [`extensions::worth_reading`]); `None` when not read.
    pub extensions: Option<ExtensionsView>,
    /// Roles, databases and version on the primary (leader, when it serves
    /// `database` relations: [`clients::worth_reading`]); `None` when not
    /// read.
    pub clients: Option<ClientsView>,
    /// The content of our `database` relations' secrets (leader), by URI;
    /// an unreadable one is absent.
    pub client_secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Backups: the S3 credentials secret, `pgpilot check` and `info`.
    pub backup: crate::backup::BackupView,
    /// This unit's TLS private key (its unit secret, named in its peer
    /// bag), read while a `certificates` relation exists; `None`: no
    /// secret yet; `Err`: it cannot be read now.
    pub tls_key: Option<Result<crate::tls::PrivateKey, String>>,
    pub unit_status: Option<Status>,
    /// Leader only.
    pub app_status: Option<Status>,
    pub opened_ports: Vec<String>,
    /// action-get, for actions.
    pub action_params: Map<String, Value>,
}

impl Observed {
    /// A snapshot with nothing read: the disable switch.
    pub fn disabled(ctx: &HookContext, host: HostFacts) -> Self {
        Observed {
            disabled: true,
            ..Observed::empty(ctx, host)
        }
    }

    /// Defaults for every field (tests and the disable switch start here).
    pub fn empty(ctx: &HookContext, host: HostFacts) -> Self {
        Observed {
            event: ctx.event.clone(),
            unit: ctx.unit.clone(),
            app: ctx.app.clone(),
            model: ctx.model.clone(),
            model_uuid: ctx.model_uuid.clone().unwrap_or_default(),
            disabled: false,
            host,
            is_leader: false,
            config: Map::new(),
            resource: None,
            pinned_revision: None,
            snap: None,
            services: Vec::new(),
            snap_config: Value::Object(Map::new()),
            peer: None,
            address: None,
            relations: BTreeMap::new(),
            secrets: SecretsView::default(),
            etcd_client_secrets: BTreeMap::new(),
            etcd: None,
            cluster: None,
            dynamic_config: None,
            extensions: None,
            clients: None,
            client_secrets: BTreeMap::new(),
            backup: Default::default(),
            tls_key: None,
            unit_status: None,
            app_status: None,
            opened_ports: Vec::new(),
            action_params: Map::new(),
        }
    }

    pub fn member(&self) -> String {
        member_name(&self.unit)
    }

    /// The relations on `endpoint` (none when not related).
    pub fn relations_on(&self, endpoint: &str) -> &[RelationView] {
        self.relations
            .get(endpoint)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn service_active(&self, name: &str) -> bool {
        self.services.iter().any(|s| s.name == name && s.active)
    }

    /// This unit's member in pgpilot's view.
    pub fn my_cluster_member(&self) -> Option<&ClusterMember> {
        let me = self.member();
        self.cluster.as_ref()?.iter().find(|m| m.name == me)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Snap(#[from] SnapError),
}

/// Store revisions of the snap per architecture. Empty until the snap is
/// published: without an attached resource the unit then says so.
pub const PINNED_REVISIONS: &[(&str, &str)] = &[];

pub fn pinned_revision(arch: &str) -> Option<String> {
    PINNED_REVISIONS
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, r)| r.to_string())
}

const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Read everything, once.
pub fn observe(
    ctx: &HookContext,
    tools: &dyn HookTools,
    snap: &dyn SnapDriver,
    host: HostFacts,
) -> Result<Observed, ObserveError> {
    if ctx.disable_file().exists() {
        return Ok(Observed::disabled(ctx, host));
    }
    let mut o = Observed::empty(ctx, host);
    o.pinned_revision = pinned_revision(&o.host.arch);
    o.is_leader = tools.is_leader()?;
    o.config = tools.config_get()?;

    o.snap = snap.info()?;
    if o.snap.is_some() {
        o.services = snap.services()?;
        o.snap_config = snap.get_all()?;
    } else if let Ok(path) = tools.resource_get(SNAP_RESOURCE) {
        // An unattached resource fails resource-get or yields an empty file.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            o.resource = Some(path);
        }
    }

    if let Some(relation_id) = tools.relation_ids(PEER_ENDPOINT)?.into_iter().next() {
        let mut view = PeerView {
            relation_id: relation_id.clone(),
            ..Default::default()
        };
        view.app_data = tools.relation_get(&relation_id, Bag::App(&ctx.app))?;
        let mut units = tools.relation_list(&relation_id)?;
        units.push(ctx.unit.clone());
        for unit in units {
            let bag = tools.relation_get(&relation_id, Bag::Unit(&unit))?;
            view.unit_data.insert(unit, bag);
        }
        o.peer = Some(view);
        o.address = tools.network_get_address(PEER_ENDPOINT).ok().flatten();
    }

    for endpoint in RELATION_ENDPOINTS {
        let views = read_relations(ctx, tools, endpoint, o.is_leader)?;
        o.relations.insert(endpoint.to_string(), views);
    }

    o.secrets = read_secrets(&o, tools);
    o.etcd_client_secrets = read_etcd_client_secrets(&o, tools);

    if o.snap.is_some() {
        o.etcd = observe_etcd(&o, snap);
        if o.service_active(SERVICE_PGPILOT) {
            // pgpilot's etcd client can fail a read while one of several
            // endpoints is down (its machine lost); a second try goes to
            // another. Without it a healthy member would read as starting.
            o.cluster = (0..3).find_map(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                snap.run_app(
                    "patronictl",
                    &["list".to_string(), "-f".into(), "json".into()],
                    WORKLOAD_TIMEOUT,
                )
                .ok()
                .and_then(|out| cluster::parse_list(&out).ok())
            });
            if o.is_leader {
                o.dynamic_config = snap
                    .run_app(
                        "patronictl",
                        &["show-config".to_string(), "-f".into(), "json".into()],
                        WORKLOAD_TIMEOUT,
                    )
                    .ok()
                    .and_then(|out| serde_json::from_str(&out).ok());
            }
        }
    }

    o.extensions = read_extensions(&o, snap);
    o.clients = clients::read_view(&o, snap);
    o.backup.s3_secret = backup::read_secret(&o, tools);
    o.backup = backup::read_commands(&o, snap);
    o.client_secrets = clients::read_secrets(&o, tools);

    o.tls_key = crate::tls::read_key(&o, tools);

    o.unit_status = Some(tools.status_get(false)?);
    if o.is_leader {
        o.app_status = Some(tools.status_get(true)?);
    }
    o.opened_ports = tools.opened_ports()?;
    if ctx.event.is_action() {
        o.action_params = tools.action_get()?;
    }
    Ok(o)
}

/// Every relation on `endpoint`: both sides' bags that this unit may read.
fn read_relations(
    ctx: &HookContext,
    tools: &dyn HookTools,
    endpoint: &str,
    is_leader: bool,
) -> Result<Vec<RelationView>, ToolError> {
    let mut views = Vec::new();
    for id in tools.relation_ids(endpoint)? {
        // relation-broken: the relation is still listed, its other side
        // is gone; what is left of it is this side's bags.
        let broken = matches!(
            &ctx.event,
            Event::Relation { relation_id, kind: crate::context::RelationKind::Broken, .. }
                if *relation_id == id
        );
        let mut view = RelationView {
            id: id.clone(),
            endpoint: endpoint.to_string(),
            ..Default::default()
        };
        if !broken {
            view.remote_app = tools.relation_remote_app(&id)?.unwrap_or_default();
            if !view.remote_app.is_empty() {
                view.remote_app_data = tools.relation_get(&id, Bag::App(&view.remote_app))?;
            }
            for unit in tools.relation_list(&id)? {
                let bag = tools.relation_get(&id, Bag::Unit(&unit))?;
                view.remote_units.insert(unit, bag);
            }
        }
        if is_leader {
            view.local_app_data = tools.relation_get(&id, Bag::App(&ctx.app))?;
        }
        view.local_unit_data = tools.relation_get(&id, Bag::Unit(&ctx.unit))?;
        views.push(view);
    }
    Ok(views)
}

/// The secrets the external etcd's provider granted to the `etcd` relation.
fn read_etcd_client_secrets(
    o: &Observed,
    tools: &dyn HookTools,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for relation in o.relations_on(crate::context::ETCD_ENDPOINT) {
        for field in ["secret-user", "secret-tls"] {
            if let Some(uri) = relation.remote(field) {
                if let Ok(content) = tools.secret_get(uri, true) {
                    out.insert(uri.to_string(), content);
                }
            }
        }
    }
    out
}

fn read_secrets(o: &Observed, tools: &dyn HookTools) -> SecretsView {
    let mut view = SecretsView::default();
    if let Some(peer) = &o.peer {
        if let Some(id) = peer.app(peer::APP_SECRET_ID) {
            view.app_secret_id = Some(id.to_string());
            // Non-leaders follow the latest revision the leader wrote.
            match tools.secret_get(id, !o.is_leader) {
                Ok(content) => view.app_secret = Some(content),
                Err(e) => view.app_secret_error = Some(e.to_string()),
            }
        }
    }
    if let Some(Value::String(uri)) = o.config.get("system-users") {
        if !uri.trim().is_empty() {
            view.user_secret = Some(
                tools
                    .secret_get(uri.trim(), true)
                    .map_err(|e| e.stderr().map(str::to_string).unwrap_or(e.to_string())),
            );
        }
    }
    view
}

/// The superuser's password as PostgreSQL has it: `system-users`' when it
/// names one, else the application secret's.
fn superuser_password(o: &Observed) -> Option<String> {
    let user_secret = o.secrets.user_secret.as_ref().and_then(|r| r.as_ref().ok());
    user_secret
        .and_then(|c| c.get("operator"))
        .or_else(|| o.secrets.app_secret.as_ref()?.get(&secret_key("operator")))
        .cloned()
}

/// The databases and their extensions, read on the primary when the leader
/// may have to change them; `None` when not needed or not readable.
fn read_extensions(o: &Observed, snap: &dyn SnapDriver) -> Option<ExtensionsView> {
    let desired = config::validate(&o.config, o.host.machine)
        .ok()
        .map(|c| c.extensions);
    let recorded = o.peer.as_ref().and_then(|p| p.app(peer::APP_EXTENSIONS));
    if !extensions::worth_reading(o.is_leader, &o.event, desired.as_ref(), recorded) {
        return None;
    }
    let primary = cluster::leader(o.cluster.as_deref()?).filter(|l| l.is_healthy())?;
    let env = [("PGPASSWORD".to_string(), superuser_password(o)?)];
    let run = |database: &str, sql: &str| {
        let args = extensions::psql_args(primary.host_only(), primary.port(), database);
        snap.run_app_with("psql", &args, Some(sql), &env, WORKLOAD_TIMEOUT)
            .ok()
    };
    let databases =
        extensions::parse_databases(&run("postgres", extensions::DATABASES_SQL)?).ok()?;
    let mut view = ExtensionsView::default();
    for database in databases {
        let (installed, in_use) =
            extensions::parse_state(&run(&database, extensions::STATE_SQL)?).ok()?;
        view.installed.insert(database.clone(), installed);
        view.in_use.insert(database, in_use);
    }
    Some(view)
}

/// The endpoints to ask etcd through: the admitted voters, else the ones
/// pgpilot was given, else this unit's own etcd (none before the unit
/// knows its address).
pub fn etcd_endpoints(o: &Observed) -> Vec<String> {
    if let Some(peer) = &o.peer {
        let voters = peer::voter_client_urls(&peer.etcd_members());
        if !voters.is_empty() {
            return voters;
        }
    }
    if let Some(Value::Array(urls)) = snap::lookup(&o.snap_config, "pgpilot.dcs.endpoints") {
        let urls: Vec<String> = urls
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect();
        if !urls.is_empty() {
            return urls;
        }
    }
    o.address.iter().map(|ip| etcd::client_url(ip)).collect()
}

fn observe_etcd(o: &Observed, snap: &dyn SnapDriver) -> Option<Vec<EtcdMember>> {
    // A cluster on an external etcd: the units' own has no members to list.
    let dcs = o
        .peer
        .as_ref()
        .and_then(|p| p.app(crate::etcd_client::APP_DCS));
    if dcs == Some(crate::etcd_client::DCS_EXTERNAL) {
        return None;
    }
    let endpoints = etcd_endpoints(o);
    let own = o.address.as_deref().map(etcd::client_url);
    let local_only = endpoints
        .iter()
        .all(|e| own.as_ref().is_some_and(|own| etcd::same_host(e, own)));
    if endpoints.is_empty() || (local_only && !o.service_active(SERVICE_ETCD)) {
        return None;
    }
    let out = snap
        .run_app(
            "etcdctl",
            &etcd::member_list_args(&endpoints),
            WORKLOAD_TIMEOUT,
        )
        .ok()?;
    etcd::parse_member_list(&out).ok()
}
