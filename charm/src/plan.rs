//! What a hook decided to do: an ordered list of [`Step`]s and the statuses
//! to show. Plain data: [`crate::reconcile`] and [`crate::actions`] build it,
//! [`crate::apply`] carries it out in order and stops at the first step that
//! fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::client::UserSpec;
use crate::snap::is_secret_key;
use crate::status::Status;
use crate::tools::LogLevel;

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A status shown at once, before long steps (status-set is immediate).
    ShowStatus(Status),
    /// `snap install --dangerous FILE` (the charm's resource).
    InstallSnapFile(PathBuf),
    /// `snap install charmed-postgresql --revision N`.
    InstallSnapRevision(String),
    /// `snap refresh --hold`.
    HoldSnap,
    /// application-version-set (and recorded in the unit bag).
    SetWorkloadVersion(String),
    OpenPort(String),
    /// relation-set on this unit's peer bag; an empty value deletes.
    SetUnitData(BTreeMap<String, String>),
    /// relation-set --app on the peer relation (leader only).
    SetAppData(BTreeMap<String, String>),
    /// relation-set on another application's relation: this unit's bag,
    /// or (`app`, leader only) this application's; an empty value deletes.
    SetRelationData {
        relation_id: String,
        app: bool,
        data: BTreeMap<String, String>,
    },
    /// secret-add --owner application, then its URI into the app bag.
    CreateAppSecret {
        label: String,
        content: BTreeMap<String, String>,
    },
    /// secret-set: a new revision.
    UpdateAppSecret {
        id: String,
        content: BTreeMap<String, String>,
    },
    /// The leader's side of the `etcd` relation: the application's etcd
    /// client identity (made now when `cert` is `None`: an ECDSA key and a
    /// self-signed leaf certificate with CN `cn`, added to the application
    /// secret `app_secret_id` beside `app_secret`'s keys), its certificate
    /// in a secret `label` granted to the relation, and `fields` with that
    /// secret's URI as `secret-mtls` into our application bag there.
    PublishEtcdClient {
        relation_id: String,
        label: String,
        cn: String,
        app_secret_id: String,
        app_secret: BTreeMap<String, String>,
        cert: Option<String>,
        fields: BTreeMap<String, String>,
    },
    /// secret-remove --revision (an obsolete revision nobody tracks).
    RemoveSecretRevision {
        id: String,
        revision: u32,
    },
    /// etcdctl member add --learner.
    EtcdAddLearner {
        name: String,
        peer_url: String,
        endpoints: Vec<String>,
    },
    /// etcdctl member promote; "not caught up yet" stops the plan quietly.
    EtcdPromote {
        id: u64,
        name: String,
        endpoints: Vec<String>,
    },
    /// etcdctl member remove.
    EtcdRemove {
        id: u64,
        name: String,
        endpoints: Vec<String>,
    },
    /// etcdctl member update: the member's peer URL moves (TLS on or off).
    EtcdUpdatePeer {
        id: u64,
        name: String,
        peer_url: String,
        endpoints: Vec<String>,
    },
    /// Wait (a minute at most) until the etcd at `endpoint` answers
    /// `endpoint health`; not yet: the plan stops quietly, so what follows
    /// (the level recorded in the unit bag) waits for a later hook.
    EtcdWaitHealthy {
        endpoint: String,
    },
    /// `snap set charmed-postgresql k=v ...` (one transaction).
    SnapSet(Vec<(String, Value)>),
    StartServices(Vec<String>),
    /// `snap stop --disable`: stays down across reboots and refreshes.
    StopServices(Vec<String>),
    /// Cluster-wide settings through pgpilot (`patronictl edit-config`,
    /// i.e. PATCH /config): `settings` are top-level keys, `parameters`
    /// PostgreSQL parameters; a null value removes.
    PatchClusterConfig {
        settings: Vec<(String, Value)>,
        parameters: Vec<(String, Value)>,
    },
    /// Restart this member's PostgreSQL through pgpilot (pending restart).
    RestartMember(String),
    /// Wipe and clone this member again (`patronictl reinit`).
    ReinitMember(String),
    /// Planned switchover to `candidate`.
    Switchover {
        leader: String,
        candidate: String,
    },
    /// Failover to `candidate` (no healthy primary needed).
    Failover {
        candidate: String,
    },
    /// Create and drop extensions in one database on the primary, as the
    /// superuser (one transaction).
    SetExtensions {
        host: String,
        port: u16,
        database: String,
        create: Vec<String>,
        drop: Vec<String>,
        superuser_password: String,
    },
    /// A `database` relation's user on the primary, as the superuser:
    /// created or altered to `spec` with `password`, its database created
    /// if missing and opened to it (docs/charm-relations.md "database").
    EnsureClientUser {
        host: String,
        port: u16,
        user: String,
        password: String,
        database: String,
        spec: UserSpec,
        /// Groups it is in that `spec` does not name.
        leave: BTreeSet<String>,
        superuser_password: String,
    },
    /// A relation user dropped: no more logins, its sessions closed (on
    /// the primary and on `replicas`), what it owns given to the superuser
    /// in every database, then the role. Its databases stay.
    DropClientUser {
        host: String,
        port: u16,
        user: String,
        replicas: Vec<(String, u16)>,
        superuser_password: String,
    },
    /// secret-add --owner application --label, secret-grant to the
    /// relation, and its URI into our application bag there under `key`.
    CreateRelationSecret {
        relation_id: String,
        label: String,
        key: String,
        content: BTreeMap<String, String>,
    },
    /// secret-remove: every revision.
    RemoveSecret {
        id: String,
    },
    /// A certificate request on `relation_id` (`certificates`): a CSR for
    /// `wanted` made with `key`, or with a new key kept in a new unit-owned
    /// secret (its URI into the peer unit bag), into our unit bag there in
    /// the v4 format, replacing an earlier request.
    RequestCertificate {
        relation_id: String,
        wanted: crate::tls::Wanted,
        key: Option<crate::tls::PrivateKey>,
    },
    /// create-backup: `pgpilot backup --type KIND` on this unit (status
    /// `creating backup` meanwhile, `status_after` at the end), its output
    /// stored in the repository as a log, failed or not.
    CreateBackup {
        kind: String,
        status_after: Option<Status>,
    },
    /// restore: stop pgpilot, delete the cluster's keys in etcd
    /// (`/pgpilot/<scope>/`), set `bootstrap` (the `[bootstrap_from]` keys),
    /// empty the data directory, start pgpilot; a failure before the data
    /// is gone starts pgpilot again (`status_after` shown).
    Restore {
        scope: String,
        etcd_endpoints: Vec<String>,
        bootstrap: Vec<(String, Value)>,
        status_after: Option<Status>,
    },
    /// ALTER ROLE ... PASSWORD on the primary, as the superuser.
    AlterRolePassword {
        host: String,
        port: u16,
        role: String,
        password: String,
        superuser_password: String,
    },
}

impl Step {
    /// One line for logs, secret values redacted.
    pub fn describe(&self) -> String {
        match self {
            Step::SnapSet(pairs) => {
                let keys: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        if is_secret_key(k) {
                            format!("{k}=<redacted>")
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                format!("snap set {}", keys.join(" "))
            }
            Step::SetRelationData {
                relation_id,
                app,
                data,
            } => {
                let keys: Vec<String> = data
                    .iter()
                    .map(|(k, v)| {
                        if k.contains("password") || k == "uris" || k == "read-only-uris" {
                            format!("{k}=<redacted>")
                        } else {
                            format!("{k}={v:?}")
                        }
                    })
                    .collect();
                let bag = if *app { "app" } else { "unit" };
                format!("relation-set {relation_id} ({bag}) {}", keys.join(" "))
            }
            Step::CreateAppSecret { label, content } => {
                format!("secret-add {label} ({} keys)", content.len())
            }
            Step::UpdateAppSecret { id, content } => {
                format!("secret-set {id} ({} keys)", content.len())
            }
            Step::PublishEtcdClient {
                relation_id,
                cn,
                cert,
                fields,
                ..
            } => format!(
                "etcd client {cn} ({} identity) on {relation_id}: {}",
                if cert.is_some() { "its" } else { "a new" },
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Step::EnsureClientUser {
                host,
                user,
                database,
                spec,
                ..
            } => format!(
                "ensure user {user} (password <redacted>, {spec:?}) and database {database:?} on {host}"
            ),
            Step::DropClientUser { host, user, .. } => format!("drop user {user} on {host}"),
            Step::CreateRelationSecret {
                relation_id,
                label,
                content,
                ..
            } => format!(
                "secret-add {label} ({} keys), granted to {relation_id}",
                content.len()
            ),
            Step::RequestCertificate {
                relation_id,
                wanted,
                key,
            } => format!(
                "certificate request on {relation_id} for {} ({} key)",
                wanted.fingerprint(),
                if key.is_some() { "its" } else { "a new" }
            ),
            Step::AlterRolePassword { host, role, .. } => {
                format!("ALTER ROLE {role} PASSWORD <redacted> on {host}")
            }
            Step::SetExtensions {
                host,
                database,
                create,
                drop,
                ..
            } => format!(
                "extensions in {database:?} on {host}: create [{}] drop [{}]",
                create.join(", "),
                drop.join(", ")
            ),
            other => format!("{other:?}"),
        }
    }
}

/// What a hook run does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Set at the end; `None`: already right.
    pub unit_status: Option<Status>,
    /// Leader only; `None`: already right.
    pub app_status: Option<Status>,
    /// juju-log lines (not changes).
    pub logs: Vec<(LogLevel, String)>,
}

impl Plan {
    /// Nothing to change (logs aside).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.unit_status.is_none() && self.app_status.is_none()
    }

    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    pub fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.logs.push((level, message.into()));
    }
}

/// The outcome of an action: steps to run, then results or a failure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionPlan {
    pub steps: Vec<Step>,
    /// action-set, after the steps succeeded.
    pub results: BTreeMap<String, String>,
    /// action-fail with this message (no step runs).
    pub failure: Option<String>,
    /// action-log lines.
    pub progress: Vec<String>,
}

impl ActionPlan {
    pub fn fail(message: impl Into<String>) -> Self {
        ActionPlan {
            failure: Some(message.into()),
            ..Default::default()
        }
    }

    pub fn result(key: &str, value: impl Into<String>) -> Self {
        let mut p = ActionPlan::default();
        p.results.insert(key.to_string(), value.into());
        p
    }
}
