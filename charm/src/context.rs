//! The hook environment: what Juju tells `dispatch` through environment
//! variables, parsed once into a [`HookContext`] holding one typed [`Event`].
//!
//! Juju runs `dispatch` for every hook and action with
//! `JUJU_DISPATCH_PATH=hooks/<name>` or `actions/<name>` (charm-snap.md §2.1)
//! and the variables of §2.2. Nothing here runs a tool or reads a file.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The peer relation's endpoint (charmcraft.yaml `peers`).
pub const PEER_ENDPOINT: &str = "database-peers";
/// The storage holding PostgreSQL's data (charmcraft.yaml `storage`).
pub const DATA_STORAGE: &str = "pgdata";

/// The other applications' endpoints (charmcraft.yaml `provides` and
/// `requires`; names and interfaces of today's charm where it has them).
pub const DATABASE_ENDPOINT: &str = "database";
pub const S3_ENDPOINT: &str = "s3-parameters";
pub const CERTIFICATES_ENDPOINT: &str = "certificates";
pub const COS_ENDPOINT: &str = "cos-agent";
pub const ETCD_ENDPOINT: &str = "etcd";
/// Every non-peer endpoint, in the order a hook reads them.
pub const RELATION_ENDPOINTS: &[&str] = &[
    DATABASE_ENDPOINT,
    S3_ENDPOINT,
    CERTIFICATES_ENDPOINT,
    COS_ENDPOINT,
    ETCD_ENDPOINT,
];

/// Which `-relation-*` hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Created,
    Joined,
    Changed,
    Departed,
    Broken,
}

impl RelationKind {
    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "created" => RelationKind::Created,
            "joined" => RelationKind::Joined,
            "changed" => RelationKind::Changed,
            "departed" => RelationKind::Departed,
            "broken" => RelationKind::Broken,
            _ => return None,
        })
    }
}

/// What woke the charm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Install,
    LeaderElected,
    LeaderSettingsChanged,
    Start,
    ConfigChanged,
    UpdateStatus,
    Stop,
    Remove,
    UpgradeCharm,
    /// `hooks/role-changed`: not a Juju hook but pgpilot's callback (a
    /// promotion, a demotion, a start or reload) running dispatch through
    /// `juju-exec`, so statuses follow a failover at once.
    RoleChanged,
    /// A secret this unit watches has a new revision.
    SecretChanged {
        id: String,
        label: Option<String>,
    },
    /// An owned secret's revision is no longer tracked by anyone.
    SecretRemove {
        id: String,
        label: Option<String>,
        revision: Option<u32>,
    },
    PeerRelationCreated {
        relation_id: String,
    },
    PeerRelationJoined {
        relation_id: String,
        remote_unit: String,
    },
    PeerRelationChanged {
        relation_id: String,
        /// Empty when the application databag changed.
        remote_unit: Option<String>,
    },
    PeerRelationDeparted {
        relation_id: String,
        remote_unit: Option<String>,
        /// The unit that leaves: the remote unit, or this unit itself when it
        /// is the one being removed.
        departing_unit: Option<String>,
    },
    PeerRelationBroken {
        relation_id: String,
    },
    /// A hook of one of [`RELATION_ENDPOINTS`] (another application).
    Relation {
        endpoint: String,
        kind: RelationKind,
        /// `database:7`
        relation_id: String,
        remote_unit: Option<String>,
        remote_app: Option<String>,
        /// departed: the unit that leaves (possibly this one).
        departing_unit: Option<String>,
    },
    StorageAttached {
        storage_id: String,
        location: Option<PathBuf>,
    },
    StorageDetaching {
        storage_id: String,
    },
    /// `juju run <unit> <name>`.
    Action {
        name: String,
        /// JUJU_ACTION_UUID (an id on Juju 3).
        id: Option<String>,
    },
    /// A hook this charm has no use for (another endpoint's relation hooks,
    /// a future Juju hook). Logged, then exit 0.
    Unknown {
        hook: String,
    },
}

impl Event {
    /// An action (`actions/<name>`), not a hook.
    pub fn is_action(&self) -> bool {
        matches!(self, Event::Action { .. })
    }

    /// The unit that leaves the peer relation, if this hook says so.
    pub fn departing_unit(&self) -> Option<&str> {
        match self {
            Event::PeerRelationDeparted { departing_unit, .. } => departing_unit.as_deref(),
            _ => None,
        }
    }
}

/// Everything about this run that Juju put in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub event: Event,
    /// JUJU_DISPATCH_PATH as given, e.g. `hooks/config-changed`.
    pub dispatch_path: String,
    /// `postgresql/0`.
    pub unit: String,
    /// `postgresql`, from the unit name.
    pub app: String,
    pub model: String,
    pub model_uuid: Option<String>,
    /// The charm directory (JUJU_CHARM_DIR, else CHARM_DIR); the `disable`
    /// switch lives here.
    pub charm_dir: PathBuf,
    pub juju_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("{0} is not set: dispatch must be run by Juju (or with Juju's environment)")]
    Missing(&'static str),
    #[error("JUJU_DISPATCH_PATH {0:?} is neither hooks/<name> nor actions/<name>")]
    BadDispatchPath(String),
    #[error("JUJU_UNIT_NAME {0:?} is not <application>/<number>")]
    BadUnitName(String),
    #[error("hook {hook}: {var} is not set, but Juju sets it for this hook")]
    MissingForHook { hook: String, var: &'static str },
    #[error("hook {hook}: JUJU_RELATION is {relation:?}, the hook name says {endpoint:?}")]
    RelationMismatch {
        hook: String,
        relation: String,
        endpoint: String,
    },
}

/// A lookup in the environment map; empty values count as unset, as ops does.
struct Env<'a>(&'a BTreeMap<String, String>);

impl Env<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

impl HookContext {
    /// From the process environment.
    pub fn from_process_env() -> Result<Self, ContextError> {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_env(&env)
    }

    /// From an environment map (tests, the model simulator).
    pub fn from_env(vars: &BTreeMap<String, String>) -> Result<Self, ContextError> {
        let env = Env(vars);
        let dispatch_path = env
            .get("JUJU_DISPATCH_PATH")
            .ok_or(ContextError::Missing("JUJU_DISPATCH_PATH"))?;
        let unit = env
            .get("JUJU_UNIT_NAME")
            .ok_or(ContextError::Missing("JUJU_UNIT_NAME"))?;
        let app = app_of(&unit)
            .ok_or_else(|| ContextError::BadUnitName(unit.clone()))?
            .to_string();
        let charm_dir = env
            .get("JUJU_CHARM_DIR")
            .or_else(|| env.get("CHARM_DIR"))
            .map(PathBuf::from)
            .ok_or(ContextError::Missing("JUJU_CHARM_DIR"))?;
        let event = parse_event(&dispatch_path, &env)?;
        Ok(HookContext {
            event,
            dispatch_path,
            unit,
            app,
            model: env.get("JUJU_MODEL_NAME").unwrap_or_default(),
            model_uuid: env.get("JUJU_MODEL_UUID"),
            charm_dir,
            juju_version: env.get("JUJU_VERSION"),
        })
    }

    /// The `disable` switch: its presence makes every hook a no-op.
    pub fn disable_file(&self) -> PathBuf {
        self.charm_dir.join("disable")
    }
}

/// `postgresql/0` → `postgresql`.
pub fn app_of(unit: &str) -> Option<&str> {
    let (app, number) = unit.rsplit_once('/')?;
    (!app.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then_some(app)
}

/// `postgresql/0` → `postgresql-0`: the member name in etcd and pgpilot.
pub fn member_name(unit: &str) -> String {
    unit.replace('/', "-")
}

/// `postgresql-0` → `postgresql/0` (the last `-` is the separator).
pub fn unit_of_member(member: &str) -> String {
    match member.rsplit_once('-') {
        Some((app, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{app}/{n}")
        }
        _ => member.to_string(),
    }
}

fn parse_event(dispatch_path: &str, env: &Env) -> Result<Event, ContextError> {
    let (kind, name) = dispatch_path
        .split_once('/')
        .filter(|(_, name)| !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| ContextError::BadDispatchPath(dispatch_path.to_string()))?;
    match kind {
        "actions" => Ok(Event::Action {
            name: name.to_string(),
            id: env.get("JUJU_ACTION_UUID"),
        }),
        "hooks" => parse_hook(name, env),
        _ => Err(ContextError::BadDispatchPath(dispatch_path.to_string())),
    }
}

fn parse_hook(hook: &str, env: &Env) -> Result<Event, ContextError> {
    let need = |var: &'static str| {
        env.get(var).ok_or(ContextError::MissingForHook {
            hook: hook.to_string(),
            var,
        })
    };
    let simple = match hook {
        "install" => Some(Event::Install),
        "leader-elected" => Some(Event::LeaderElected),
        "leader-settings-changed" => Some(Event::LeaderSettingsChanged),
        "start" => Some(Event::Start),
        "config-changed" => Some(Event::ConfigChanged),
        "update-status" => Some(Event::UpdateStatus),
        "stop" => Some(Event::Stop),
        "remove" => Some(Event::Remove),
        "upgrade-charm" => Some(Event::UpgradeCharm),
        crate::host::WAKE_HOOK => Some(Event::RoleChanged),
        _ => None,
    };
    if let Some(event) = simple {
        return Ok(event);
    }
    match hook {
        "secret-changed" => {
            return Ok(Event::SecretChanged {
                id: need("JUJU_SECRET_ID")?,
                label: env.get("JUJU_SECRET_LABEL"),
            })
        }
        "secret-remove" => {
            return Ok(Event::SecretRemove {
                id: need("JUJU_SECRET_ID")?,
                label: env.get("JUJU_SECRET_LABEL"),
                revision: env.get("JUJU_SECRET_REVISION").and_then(|r| r.parse().ok()),
            })
        }
        _ => {}
    }
    if let Some(storage) = hook.strip_suffix("-storage-attached") {
        if storage == DATA_STORAGE {
            return Ok(Event::StorageAttached {
                storage_id: need("JUJU_STORAGE_ID")?,
                location: env.get("JUJU_STORAGE_LOCATION").map(PathBuf::from),
            });
        }
    }
    if let Some(storage) = hook.strip_suffix("-storage-detaching") {
        if storage == DATA_STORAGE {
            return Ok(Event::StorageDetaching {
                storage_id: need("JUJU_STORAGE_ID")?,
            });
        }
    }
    if let Some((endpoint, kind)) = hook.rsplit_once("-relation-") {
        if endpoint == PEER_ENDPOINT {
            if let Some(relation) = env.get("JUJU_RELATION") {
                if relation != endpoint {
                    return Err(ContextError::RelationMismatch {
                        hook: hook.to_string(),
                        relation,
                        endpoint: endpoint.to_string(),
                    });
                }
            }
            let relation_id = need("JUJU_RELATION_ID")?;
            let remote_unit = env.get("JUJU_REMOTE_UNIT");
            let event = match kind {
                "created" => Event::PeerRelationCreated { relation_id },
                "joined" => Event::PeerRelationJoined {
                    relation_id,
                    remote_unit: need("JUJU_REMOTE_UNIT")?,
                },
                "changed" => Event::PeerRelationChanged {
                    relation_id,
                    remote_unit,
                },
                "departed" => Event::PeerRelationDeparted {
                    relation_id,
                    remote_unit,
                    departing_unit: env.get("JUJU_DEPARTING_UNIT"),
                },
                "broken" => Event::PeerRelationBroken { relation_id },
                _ => {
                    return Ok(Event::Unknown {
                        hook: hook.to_string(),
                    })
                }
            };
            return Ok(event);
        }
        if let (Some(endpoint), Some(kind)) = (
            RELATION_ENDPOINTS.iter().find(|e| **e == endpoint),
            RelationKind::parse(kind),
        ) {
            if let Some(relation) = env.get("JUJU_RELATION") {
                if relation != *endpoint {
                    return Err(ContextError::RelationMismatch {
                        hook: hook.to_string(),
                        relation,
                        endpoint: endpoint.to_string(),
                    });
                }
            }
            let remote_unit = env.get("JUJU_REMOTE_UNIT");
            if kind == RelationKind::Joined && remote_unit.is_none() {
                need("JUJU_REMOTE_UNIT")?;
            }
            return Ok(Event::Relation {
                endpoint: endpoint.to_string(),
                kind,
                relation_id: need("JUJU_RELATION_ID")?,
                remote_app: env.get("JUJU_REMOTE_APP").or_else(|| {
                    remote_unit
                        .as_deref()
                        .and_then(|u| u.split_once('/'))
                        .map(|(app, _)| app.to_string())
                }),
                remote_unit,
                departing_unit: env.get("JUJU_DEPARTING_UNIT"),
            });
        }
    }
    Ok(Event::Unknown {
        hook: hook.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("JUJU_UNIT_NAME", "postgresql/0"),
            ("JUJU_MODEL_NAME", "dev"),
            ("JUJU_MODEL_UUID", "0b7c"),
            (
                "JUJU_CHARM_DIR",
                "/var/lib/juju/agents/unit-postgresql-0/charm",
            ),
            ("JUJU_VERSION", "3.6.8"),
            ("JUJU_CONTEXT_ID", "postgresql/0-install-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn event(pairs: &[(&str, &str)]) -> Event {
        HookContext::from_env(&env(pairs)).unwrap().event
    }

    #[test]
    fn simple_hooks() {
        let rows = [
            ("hooks/install", Event::Install),
            ("hooks/leader-elected", Event::LeaderElected),
            (
                "hooks/leader-settings-changed",
                Event::LeaderSettingsChanged,
            ),
            ("hooks/start", Event::Start),
            ("hooks/config-changed", Event::ConfigChanged),
            ("hooks/update-status", Event::UpdateStatus),
            ("hooks/stop", Event::Stop),
            ("hooks/remove", Event::Remove),
            ("hooks/upgrade-charm", Event::UpgradeCharm),
            // pgpilot's callback through juju-exec.
            ("hooks/role-changed", Event::RoleChanged),
        ];
        for (path, expected) in rows {
            assert_eq!(event(&[("JUJU_DISPATCH_PATH", path)]), expected, "{path}");
        }
    }

    #[test]
    fn context_fields() {
        let ctx = HookContext::from_env(&env(&[("JUJU_DISPATCH_PATH", "hooks/start")])).unwrap();
        assert_eq!(ctx.unit, "postgresql/0");
        assert_eq!(ctx.app, "postgresql");
        assert_eq!(ctx.model, "dev");
        assert_eq!(ctx.model_uuid.as_deref(), Some("0b7c"));
        assert_eq!(ctx.juju_version.as_deref(), Some("3.6.8"));
        assert_eq!(
            ctx.disable_file(),
            PathBuf::from("/var/lib/juju/agents/unit-postgresql-0/charm/disable")
        );
    }

    #[test]
    fn legacy_charm_dir() {
        let mut e = env(&[("JUJU_DISPATCH_PATH", "hooks/start")]);
        e.remove("JUJU_CHARM_DIR");
        e.insert("CHARM_DIR".into(), "/srv/charm".into());
        let ctx = HookContext::from_env(&e).unwrap();
        assert_eq!(ctx.charm_dir, PathBuf::from("/srv/charm"));
    }

    #[test]
    fn peer_relation_hooks() {
        let rel = [
            ("JUJU_RELATION", "database-peers"),
            ("JUJU_RELATION_ID", "database-peers:3"),
            ("JUJU_REMOTE_APP", "postgresql"),
        ];
        let with = |path: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![("JUJU_DISPATCH_PATH", path)];
            pairs.extend_from_slice(&rel);
            pairs.extend_from_slice(extra);
            event(&pairs)
        };
        assert_eq!(
            with("hooks/database-peers-relation-created", &[]),
            Event::PeerRelationCreated {
                relation_id: "database-peers:3".into()
            }
        );
        assert_eq!(
            with(
                "hooks/database-peers-relation-joined",
                &[("JUJU_REMOTE_UNIT", "postgresql/1")]
            ),
            Event::PeerRelationJoined {
                relation_id: "database-peers:3".into(),
                remote_unit: "postgresql/1".into()
            }
        );
        assert_eq!(
            with(
                "hooks/database-peers-relation-changed",
                &[("JUJU_REMOTE_UNIT", "postgresql/1")]
            ),
            Event::PeerRelationChanged {
                relation_id: "database-peers:3".into(),
                remote_unit: Some("postgresql/1".into())
            }
        );
        assert_eq!(
            with("hooks/database-peers-relation-changed", &[]),
            Event::PeerRelationChanged {
                relation_id: "database-peers:3".into(),
                remote_unit: None
            },
            "an app databag change has no remote unit"
        );
        assert_eq!(
            with(
                "hooks/database-peers-relation-departed",
                &[
                    ("JUJU_REMOTE_UNIT", "postgresql/2"),
                    ("JUJU_DEPARTING_UNIT", "postgresql/2")
                ]
            ),
            Event::PeerRelationDeparted {
                relation_id: "database-peers:3".into(),
                remote_unit: Some("postgresql/2".into()),
                departing_unit: Some("postgresql/2".into())
            }
        );
        assert_eq!(
            with("hooks/database-peers-relation-broken", &[]),
            Event::PeerRelationBroken {
                relation_id: "database-peers:3".into()
            }
        );
    }

    #[test]
    fn secret_hooks() {
        assert_eq!(
            event(&[
                ("JUJU_DISPATCH_PATH", "hooks/secret-changed"),
                ("JUJU_SECRET_ID", "secret:cn8fk1ffhcmc79f7r5l0"),
                ("JUJU_SECRET_LABEL", "database-peers.postgresql.app"),
            ]),
            Event::SecretChanged {
                id: "secret:cn8fk1ffhcmc79f7r5l0".into(),
                label: Some("database-peers.postgresql.app".into())
            }
        );
        assert_eq!(
            event(&[
                ("JUJU_DISPATCH_PATH", "hooks/secret-remove"),
                ("JUJU_SECRET_ID", "secret:cn8fk1ffhcmc79f7r5l0"),
                ("JUJU_SECRET_REVISION", "3"),
            ]),
            Event::SecretRemove {
                id: "secret:cn8fk1ffhcmc79f7r5l0".into(),
                label: None,
                revision: Some(3)
            }
        );
    }

    #[test]
    fn storage_hooks() {
        assert_eq!(
            event(&[
                ("JUJU_DISPATCH_PATH", "hooks/pgdata-storage-attached"),
                ("JUJU_STORAGE_ID", "pgdata/0"),
                (
                    "JUJU_STORAGE_LOCATION",
                    "/var/snap/charmed-postgresql/common/var/lib/postgresql"
                ),
            ]),
            Event::StorageAttached {
                storage_id: "pgdata/0".into(),
                location: Some(PathBuf::from(
                    "/var/snap/charmed-postgresql/common/var/lib/postgresql"
                ))
            }
        );
        assert_eq!(
            event(&[
                ("JUJU_DISPATCH_PATH", "hooks/pgdata-storage-detaching"),
                ("JUJU_STORAGE_ID", "pgdata/0"),
            ]),
            Event::StorageDetaching {
                storage_id: "pgdata/0".into()
            }
        );
    }

    #[test]
    fn actions() {
        assert_eq!(
            event(&[
                ("JUJU_DISPATCH_PATH", "actions/get-primary"),
                ("JUJU_ACTION_NAME", "get-primary"),
                ("JUJU_ACTION_UUID", "42"),
            ]),
            Event::Action {
                name: "get-primary".into(),
                id: Some("42".into())
            }
        );
        // The name comes from the dispatch path; an unknown one is still an
        // action (dispatch fails it with a message).
        assert_eq!(
            event(&[("JUJU_DISPATCH_PATH", "actions/make-coffee")]),
            Event::Action {
                name: "make-coffee".into(),
                id: None
            }
        );
    }

    #[test]
    fn unknown_hooks() {
        for hook in [
            "db-admin-relation-joined",
            "database-relation-exploded",
            "collect-metrics",
            "pre-series-upgrade",
            "database-peers-relation-exploded",
            "logs-storage-attached",
        ] {
            let path = format!("hooks/{hook}");
            let mut pairs = vec![("JUJU_DISPATCH_PATH", path.as_str())];
            pairs.push(("JUJU_RELATION_ID", "database-peers:3"));
            assert_eq!(
                event(&pairs),
                Event::Unknown {
                    hook: hook.to_string()
                },
                "{hook}"
            );
        }
    }

    #[test]
    fn other_applications_relations() {
        let e = event(&[
            ("JUJU_DISPATCH_PATH", "hooks/database-relation-joined"),
            ("JUJU_RELATION_ID", "database:7"),
            ("JUJU_REMOTE_UNIT", "myapp/0"),
        ]);
        assert_eq!(
            e,
            Event::Relation {
                endpoint: "database".into(),
                kind: RelationKind::Joined,
                relation_id: "database:7".into(),
                remote_unit: Some("myapp/0".into()),
                remote_app: Some("myapp".into()),
                departing_unit: None,
            }
        );
        let e = event(&[
            ("JUJU_DISPATCH_PATH", "hooks/s3-parameters-relation-changed"),
            ("JUJU_RELATION_ID", "s3-parameters:9"),
            ("JUJU_REMOTE_APP", "s3-integrator"),
        ]);
        assert!(matches!(
            e,
            Event::Relation { kind: RelationKind::Changed, remote_unit: None, remote_app: Some(ref a), .. } if a == "s3-integrator"
        ));
        // joined needs its remote unit; every hook its relation id.
        let mut vars = env(&[("JUJU_DISPATCH_PATH", "hooks/cos-agent-relation-joined")]);
        vars.insert("JUJU_RELATION_ID".into(), "cos-agent:2".into());
        assert!(HookContext::from_env(&vars).is_err());
        let vars = env(&[("JUJU_DISPATCH_PATH", "hooks/etcd-relation-broken")]);
        assert!(HookContext::from_env(&vars).is_err());
        // A mismatch between the hook and JUJU_RELATION is refused.
        let vars = env(&[
            ("JUJU_DISPATCH_PATH", "hooks/certificates-relation-changed"),
            ("JUJU_RELATION", "database"),
            ("JUJU_RELATION_ID", "certificates:4"),
        ]);
        assert!(HookContext::from_env(&vars).is_err());
    }

    #[test]
    fn errors_name_the_variable() {
        let mut e = env(&[]);
        assert_eq!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::Missing("JUJU_DISPATCH_PATH")
        );
        e.insert("JUJU_DISPATCH_PATH".into(), "install".into());
        assert!(matches!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::BadDispatchPath(_)
        ));
        e.insert("JUJU_DISPATCH_PATH".into(), "scripts/install".into());
        assert!(matches!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::BadDispatchPath(_)
        ));
        e.insert("JUJU_DISPATCH_PATH".into(), "hooks/secret-changed".into());
        let err = HookContext::from_env(&e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hook secret-changed: JUJU_SECRET_ID is not set, but Juju sets it for this hook"
        );
        e.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/database-peers-relation-joined".into(),
        );
        e.insert("JUJU_RELATION_ID".into(), "database-peers:1".into());
        assert!(HookContext::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("JUJU_REMOTE_UNIT"));
        e.insert("JUJU_RELATION".into(), "database".into());
        assert!(matches!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::RelationMismatch { .. }
        ));
        let mut e = env(&[("JUJU_DISPATCH_PATH", "hooks/start")]);
        e.insert("JUJU_UNIT_NAME".into(), "postgresql".into());
        assert!(matches!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::BadUnitName(_)
        ));
        e.remove("JUJU_UNIT_NAME");
        assert_eq!(
            HookContext::from_env(&e).unwrap_err(),
            ContextError::Missing("JUJU_UNIT_NAME")
        );
    }

    #[test]
    fn names() {
        assert_eq!(member_name("postgresql/12"), "postgresql-12");
        assert_eq!(unit_of_member("postgresql-12"), "postgresql/12");
        assert_eq!(unit_of_member("my-pg-3"), "my-pg/3");
        assert_eq!(app_of("my-pg/3"), Some("my-pg"));
        assert_eq!(app_of("my-pg/x"), None);
    }
}
