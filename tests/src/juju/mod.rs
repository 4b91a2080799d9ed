//! A stand-in for a Juju model, for tests: runs a charm's `dispatch` (the
//! real binary, or a script) for one unit and one hook at a time with the
//! environment and hook tools Juju gives it, and keeps the model's state
//! (config, units, relations, secrets, statuses, ports, actions) in one
//! serde value, [`ModelState`]. No Juju controller can run here.
//!
//! ```no_run
//! # fn demo(charm_dir: &std::path::Path) -> anyhow::Result<()> {
//! use pgpilot_e2e::juju::Model;
//! let tmp = tempfile::tempdir()?;
//! let model = Model::new(tmp.path(), charm_dir, "postgresql")?;
//! let u0 = model.add_unit("10.0.0.1")?;
//! model.set_leader(&u0)?;
//! let run = model.run_hook(&u0, "config-changed", &[])?;
//! assert_eq!(run.code, 0, "{}", run.output);
//! # Ok(()) }
//! ```
//!
//! The design follows the snapd fixture (src/snapd): the hook tools are one
//! binary, `juju-tool` (src/bin/juju-tool.rs), symlinked under each tool's
//! name into `units/unit-APP-N/bin` (first on the hook's PATH); it sends its
//! argv, stdin and `JUJU_CONTEXT_ID` to `agent.socket` (as
//! `JUJU_AGENT_SOCKET_ADDRESS`), where the test process answers.
//!
//! # Files in the model directory
//!
//! | path | what |
//! |---|---|
//! | `agent.socket` | the hook tools' socket |
//! | `units/unit-APP-N/charm/` | the unit's copy of the charm directory (`JUJU_CHARM_DIR`, cwd of its hooks), made by [`Model::add_unit`] |
//! | `units/unit-APP-N/bin/` | the tools, as symlinks to `juju-tool` |
//! | `hooks.log` | every hook and action run: unit, dispatch path, exit code, committed or not, status changes, output |
//! | `debug-log.txt` | `juju-log` lines, written at once |
//! | `state.json` | the model's state after every hook (post-mortem only) |
//!
//! # What it reproduces
//!
//! - Dispatch as the uniter's `discoverHookHandler`: an executable
//!   `dispatch` at the charm root runs for everything, else `hooks/NAME` /
//!   `actions/NAME`; a missing hook is skipped, a missing action fails
//!   ("action not implemented on unit"). Each unit has its own copy of the
//!   charm directory (a `disable` file there concerns that unit only); cwd
//!   is that directory.
//! - The environment: an empty one plus `LANG`, PATH (the unit's tool dir
//!   first), JUJU_DISPATCH_PATH, JUJU_HOOK_NAME (empty for actions),
//!   JUJU_CHARM_DIR, CHARM_DIR, JUJU_UNIT_NAME, JUJU_MODEL_NAME,
//!   JUJU_MODEL_UUID, JUJU_VERSION, JUJU_CONTEXT_ID,
//!   JUJU_AGENT_SOCKET_ADDRESS/_NETWORK, JUJU_MACHINE_ID,
//!   JUJU_AVAILABILITY_ZONE, JUJU_PRINCIPAL_UNIT, JUJU_API_ADDRESSES, the
//!   proxy variables (empty), JUJU_ACTION_NAME/_UUID/_TAG for actions, and
//!   the caller's extras (JUJU_RELATION_ID, JUJU_REMOTE_UNIT,
//!   JUJU_STORAGE_ID, JUJU_SECRET_ID, ...); JUJU_RELATION and
//!   JUJU_REMOTE_APP are derived from JUJU_RELATION_ID when not given.
//! - Commit on success: relation data, secret create/update/grant/remove
//!   and the revision a consumer tracks, open/close-port are buffered per
//!   hook (the hook reads its own writes) and committed only if it exits 0.
//!   A hook sees the model as it was when it started, plus its own writes
//!   and its immediate changes.
//!   `status-set`, `juju-log`, `application-version-set` and
//!   `action-set`/`-fail`/`-log` take effect at once.
//! - The tools of charm-snap.md §2.3 that the charm uses (see
//!   [`tools::TOOLS`]) with their argv, JSON output and Juju-like errors
//!   (`ERROR ...`, exit 1; usage errors exit 2); leadership checks
//!   (`--app` bags, application secrets, application status); the peer
//!   application bag readable by every unit, a non-peer local application
//!   bag by the leader only; unit bags seeded with `private-address`,
//!   `ingress-address`, `egress-subnets`; secrets readable by their owners
//!   at the latest revision and by grantees at the revision they track
//!   (pinned at the first `secret-get`, moved by `--refresh`, `--peek`
//!   reads the latest); `config-get --all` with the charm's defaults
//!   (`config.yaml` or charmcraft.yaml's `config.options`); action
//!   parameters with actions.yaml's defaults; a failed action (non-zero
//!   exit: "exit status N", or `action-fail`); `resource-get` failing as
//!   Juju does when nothing is attached.
//! - Hooks are killed (their process group) after the hook timeout.
//!
//! # What it does not reproduce
//!
//! - No controller, no unit agents, no machines: hooks run on this host as
//!   the test's user, one [`Model::run_hook`] call at a time per caller
//!   (calls for different units may overlap, as Juju allows).
//! - Event ordering is the driver's job, and there is no driver yet: no
//!   deploy / add-unit / remove-unit sequences, no automatic
//!   `relation-changed` after a commit, no `secret-changed`, no
//!   `update-status` timer, no retries of failed hooks, no `error` unit
//!   status. `relation-list` lists every unit in the relation whether or
//!   not its `relation-joined` ran.
//! - One application per model (peer relations only; non-peer relations
//!   can be added with [`Model::add_relation`], but there are no remote
//!   charms to answer), no leadership lease (the test picks the leader),
//!   no `leader-get`/`leader-set`, `state-*`, `goal-state`,
//!   `secret-revoke`, consumer secret labels, secret expiry or rotation,
//!   `storage-add`/`storage-list`, `--endpoints` of ports, real networks
//!   (network-get answers the unit's address), action output capture into
//!   results (the output is in [`ActionRun::output`]).

pub mod checks;
pub mod driver;
mod host;
pub mod server;
pub mod state;
pub mod tools;

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Map, Value};

pub use state::{ActionState, ModelState, Relation, Secret, SecretOwner, Status, Storage, Unit};
pub use tools::StatusChange;
use tools::{Context, Inner};

/// The peer relation endpoint of the charm under test.
pub const PEER_ENDPOINT: &str = "database-peers";
/// What `JUJU_VERSION` says.
pub const JUJU_VERSION: &str = "3.6.8";

/// The fixture's `juju-tool`: `$PGPILOT_JUJU_TOOL_BIN`, else `juju-tool`
/// next to the test binary's directory (`target/debug/deps/..`).
pub fn juju_tool_bin() -> anyhow::Result<PathBuf> {
    crate::fixture_bin("juju-tool", "PGPILOT_JUJU_TOOL_BIN")
}

/// What the charm declares that the model needs: peer endpoints, config
/// options with their defaults, actions' parameter defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CharmMeta {
    pub name: String,
    pub peers: Vec<String>,
    /// `provides` and `requires` endpoints.
    pub endpoints: Vec<String>,
    pub config_defaults: Map<String, Value>,
    /// Action name → its parameters' defaults.
    pub action_defaults: Map<String, Value>,
}

impl CharmMeta {
    /// A `provides` or `requires` endpoint of the charm.
    pub fn endpoint_known(&self, endpoint: &str) -> bool {
        self.endpoints.iter().any(|e| e == endpoint)
    }

    /// From `metadata.yaml`, `config.yaml`, `actions.yaml` (a packed charm)
    /// or `charmcraft.yaml` (the source tree), whichever exist.
    pub fn load(charm_dir: &Path) -> anyhow::Result<CharmMeta> {
        let read = |name: &str| -> anyhow::Result<Option<Value>> {
            let path = charm_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(
                    serde_norway::from_str::<Option<Value>>(&text)
                        .with_context(|| format!("parsing {}", path.display()))?
                        .unwrap_or(Value::Null),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            }
        };
        let craft = read("charmcraft.yaml")?.unwrap_or(Value::Null);
        let metadata = read("metadata.yaml")?.unwrap_or_else(|| craft.clone());
        let config = read("config.yaml")?.unwrap_or_else(|| craft["config"].clone());
        let actions = read("actions.yaml")?.unwrap_or_else(|| craft["actions"].clone());
        Ok(CharmMeta::from_values(&metadata, &config, &actions))
    }

    pub fn from_values(metadata: &Value, config: &Value, actions: &Value) -> CharmMeta {
        let peers = metadata["peers"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let endpoints = ["provides", "requires"]
            .iter()
            .filter_map(|k| metadata[*k].as_object())
            .flat_map(|m| m.keys().cloned())
            .collect();
        let config_defaults = config["options"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.get("default").cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .unwrap_or_default();
        let action_defaults = actions
            .as_object()
            .map(|a| {
                a.iter()
                    .map(|(name, action)| {
                        let defaults: Map<String, Value> = action["params"]
                            .as_object()
                            .map(|p| {
                                p.iter()
                                    .filter_map(|(k, v)| {
                                        v.get("default").map(|d| (k.clone(), d.clone()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        (name.clone(), Value::Object(defaults))
                    })
                    .collect()
            })
            .unwrap_or_default();
        CharmMeta {
            name: metadata["name"].as_str().unwrap_or_default().to_string(),
            peers,
            endpoints,
            config_defaults,
            action_defaults,
        }
    }
}

/// One hook run.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub unit: String,
    /// `hooks/config-changed`, `actions/get-primary`.
    pub dispatch_path: String,
    /// The exit code; 128+N when killed by signal N; 0 for a skipped hook.
    pub code: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// Were its buffered writes committed (it exited 0)?
    pub committed: bool,
    /// Neither `dispatch` nor `hooks/NAME` (`actions/NAME`): nothing ran.
    pub skipped: bool,
    pub timed_out: bool,
    pub status_changes: Vec<StatusChange>,
    /// `juju-log` lines, `LEVEL message`.
    pub logs: Vec<String>,
    /// Relation bags whose content the commit changed: (relation id,
    /// owner: a unit or the application, an application bag?). Juju fires
    /// `relation-changed` on the other side for each.
    pub changed_bags: Vec<(u32, String, bool)>,
    /// How many buffered writes (relation data, secrets, ports) the hook
    /// made, committed or not.
    pub writes: usize,
    /// CPU time (user + system) of the hook's process and the hook tools
    /// it ran; not what those tools asked the test process to do.
    pub cpu: Duration,
    pub wall: Duration,
}

/// One action run.
#[derive(Debug, Clone)]
pub struct ActionRun {
    pub hook: HookRun,
    /// `completed` or `failed`.
    pub status: String,
    /// Why it failed.
    pub message: String,
    pub results: Map<String, Value>,
    pub logs: Vec<String>,
}

/// The model: state, the tools' socket, the charm to run.
pub struct Model {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    charm_dir: PathBuf,
    meta: CharmMeta,
    tool_bin: PathBuf,
    socket: PathBuf,
    hook_timeout: Mutex<Duration>,
    counter: AtomicU64,
    log: Mutex<()>,
    /// Hooks, actions and juju-exec runs so far, and their CPU time.
    totals: Mutex<(usize, Duration)>,
    _server: server::Server,
}

impl Model {
    /// A model in `dir` (created) for application `app` of the charm in
    /// `charm_dir`, with one relation per peer endpoint and no units.
    pub fn new(dir: &Path, charm_dir: &Path, app: &str) -> anyhow::Result<Model> {
        std::fs::create_dir_all(dir.join("units"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let charm_dir = charm_dir
            .canonicalize()
            .with_context(|| format!("charm directory {}", charm_dir.display()))?;
        let meta = CharmMeta::load(&charm_dir)?;
        let mut state = ModelState {
            model_name: "test".to_string(),
            model_uuid: model_uuid(&dir),
            application: app.to_string(),
            config_defaults: meta.config_defaults.clone(),
            ..ModelState::default()
        };
        for endpoint in &meta.peers {
            let id = state.next_relation_id;
            state.next_relation_id += 1;
            state.relations.insert(
                id,
                Relation {
                    id,
                    endpoint: endpoint.clone(),
                    remote_app: app.to_string(),
                    peer: true,
                    ..Relation::default()
                },
            );
        }
        let socket = dir.join("agent.socket");
        let _ = std::fs::remove_file(&socket);
        let inner = Arc::new(Mutex::new(Inner {
            state,
            contexts: Default::default(),
            debug_log: Some(dir.join("debug-log.txt")),
        }));
        let server = server::Server::start(Arc::clone(&inner), &socket)?;
        Ok(Model {
            inner,
            dir,
            charm_dir,
            meta,
            tool_bin: juju_tool_bin()?,
            socket,
            hook_timeout: Mutex::new(Duration::from_secs(300)),
            counter: AtomicU64::new(0),
            log: Mutex::new(()),
            totals: Mutex::new((0, Duration::ZERO)),
            _server: server,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn charm_meta(&self) -> &CharmMeta {
        &self.meta
    }

    pub fn set_hook_timeout(&self, timeout: Duration) {
        *self.hook_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    /// A copy of the model's (committed) state.
    pub fn state(&self) -> ModelState {
        self.lock().state.clone()
    }

    /// Change the state directly, as the controller (or `juju` CLI) would.
    pub fn update<T>(&self, change: impl FnOnce(&mut ModelState) -> T) -> T {
        change(&mut self.lock().state)
    }

    pub fn hooks_log_path(&self) -> PathBuf {
        self.dir.join("hooks.log")
    }

    pub fn hooks_log(&self) -> String {
        std::fs::read_to_string(self.hooks_log_path()).unwrap_or_default()
    }

    pub fn debug_log_path(&self) -> PathBuf {
        self.dir.join("debug-log.txt")
    }

    /// The directory of a unit's hook tools.
    pub fn unit_bin_dir(&self, unit: &str) -> PathBuf {
        self.unit_dir(unit).join("bin")
    }

    /// The unit's copy of the charm (its `JUJU_CHARM_DIR`).
    pub fn unit_charm_dir(&self, unit: &str) -> PathBuf {
        self.unit_dir(unit).join("charm")
    }

    fn unit_dir(&self, unit: &str) -> PathBuf {
        self.dir
            .join("units")
            .join(format!("unit-{}", unit.replace('/', "-")))
    }

    /// Add unit APP/N (N one more than the highest so far) with this
    /// address; it joins every relation of its application. Not the leader.
    pub fn add_unit(&self, address: &str) -> anyhow::Result<String> {
        let name = {
            let inner = self.lock();
            let app = &inner.state.application;
            let next = inner
                .state
                .units
                .keys()
                .filter_map(|u| u.rsplit('/').next()?.parse::<u32>().ok())
                .max()
                .map_or(0, |n| n + 1);
            format!("{app}/{next}")
        };
        let bin = self.unit_bin_dir(&name);
        std::fs::create_dir_all(&bin)?;
        let charm = self.unit_charm_dir(&name);
        if !charm.exists() {
            let status = Command::new("cp")
                .arg("-a")
                .arg(&self.charm_dir)
                .arg(&charm)
                .status()
                .context("running cp")?;
            anyhow::ensure!(
                status.success(),
                "cp -a {} {}: {status}",
                self.charm_dir.display(),
                charm.display()
            );
        }
        for tool in tools::TOOLS {
            let link = bin.join(tool);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&self.tool_bin, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        let mut inner = self.lock();
        let state = &mut inner.state;
        state.units.insert(
            name.clone(),
            Unit {
                name: name.clone(),
                address: address.to_string(),
                ..Unit::default()
            },
        );
        for rel in state.relations.values_mut() {
            join(rel, &name, address);
        }
        Ok(name)
    }

    /// The unit leaves the model (and every relation); its bags go.
    pub fn remove_unit(&self, unit: &str) {
        let mut inner = self.lock();
        inner.state.units.remove(unit);
        for rel in inner.state.relations.values_mut() {
            rel.units.remove(unit);
            rel.unit_data.remove(unit);
        }
    }

    /// What `juju status` shows while a failed hook waits for its retry.
    pub fn set_hook_error(&self, unit: &str, error: Option<String>) {
        if let Some(u) = self.lock().state.units.get_mut(unit) {
            u.hook_error = error;
        }
    }

    /// Add a relation on `endpoint` to `remote_app` (whose units the test
    /// adds to the relation with [`Model::update`]); every unit joins.
    pub fn add_relation(&self, endpoint: &str, remote_app: &str) -> u32 {
        let mut inner = self.lock();
        let state = &mut inner.state;
        let id = state.next_relation_id;
        state.next_relation_id += 1;
        let mut rel = Relation {
            id,
            endpoint: endpoint.to_string(),
            remote_app: remote_app.to_string(),
            peer: false,
            ..Relation::default()
        };
        for unit in state.units.values() {
            join(&mut rel, &unit.name, &unit.address);
        }
        state.relations.insert(id, rel);
        id
    }

    /// The id of the (first) relation on `endpoint`.
    pub fn relation_id(&self, endpoint: &str) -> Option<u32> {
        let inner = self.lock();
        let found = inner
            .state
            .relations
            .values()
            .find(|r| r.endpoint == endpoint)
            .map(|r| r.id);
        found
    }

    /// Make `unit` the leader (and no other unit).
    pub fn set_leader(&self, unit: &str) -> anyhow::Result<()> {
        let mut inner = self.lock();
        anyhow::ensure!(inner.state.units.contains_key(unit), "no unit {unit}");
        for u in inner.state.units.values_mut() {
            u.leader = u.name == unit;
        }
        Ok(())
    }

    /// `juju config APP k=v ...`; null resets an option to its default.
    pub fn set_config(&self, values: &Map<String, Value>) -> anyhow::Result<()> {
        let mut inner = self.lock();
        for (k, v) in values {
            anyhow::ensure!(
                inner.state.config_defaults.contains_key(k),
                "unknown option {k:?}"
            );
            if v.is_null() {
                inner.state.config.remove(k);
            } else {
                inner.state.config.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }

    pub fn add_storage(&self, unit: &str, id: &str, kind: &str, location: &Path) {
        if let Some(u) = self.lock().state.units.get_mut(unit) {
            u.storage.insert(
                id.to_string(),
                Storage {
                    kind: kind.to_string(),
                    location: location.to_path_buf(),
                },
            );
        }
    }

    /// `juju attach-resource APP NAME=PATH`.
    pub fn attach_resource(&self, name: &str, path: &Path) {
        self.lock()
            .state
            .resources
            .insert(name.to_string(), path.to_path_buf());
    }

    /// Run hook `hook` (`install`, `database-peers-relation-changed`) on
    /// `unit`, with extra environment (JUJU_RELATION_ID, JUJU_REMOTE_UNIT,
    /// JUJU_STORAGE_ID, ...). An error only when it cannot be run at all.
    pub fn run_hook(
        &self,
        unit: &str,
        hook: &str,
        extras: &[(&str, &str)],
    ) -> anyhow::Result<HookRun> {
        self.run(unit, "hooks", hook, extras, None, None)
    }

    /// `juju-exec -u UNIT COMMANDS`: `sh -c COMMANDS` in a hook context of
    /// its own on `unit` (hook tools on PATH, JUJU_CONTEXT_ID and the
    /// unit's JUJU_* variables; no JUJU_DISPATCH_PATH unless the commands
    /// set it), committed on exit 0 like a hook. Serialising it with the
    /// unit's hooks is the caller's job (the driver's unit agent).
    pub fn run_exec(&self, unit: &str, commands: &str) -> anyhow::Result<HookRun> {
        self.run(unit, "exec", "juju-exec", &[], None, Some(commands))
    }

    /// Run action `name` on `unit` with these parameters (over
    /// actions.yaml's defaults).
    pub fn run_action(
        &self,
        unit: &str,
        name: &str,
        params: &Map<String, Value>,
    ) -> anyhow::Result<ActionRun> {
        let mut all = self
            .meta
            .action_defaults
            .get(name)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        all.extend(params.clone());
        let id = {
            let mut inner = self.lock();
            inner.state.next_action += 1;
            let id = inner.state.next_action.to_string();
            inner.state.actions.insert(
                id.clone(),
                ActionState {
                    name: name.to_string(),
                    unit: unit.to_string(),
                    params: all,
                    status: "running".to_string(),
                    ..ActionState::default()
                },
            );
            id
        };
        let hook = self.run(unit, "actions", name, &[], Some(&id), None)?;
        let mut inner = self.lock();
        let action = inner
            .state
            .actions
            .get_mut(&id)
            .context("the action vanished")?;
        if hook.code != 0 {
            action.status = "failed".to_string();
            if action.message.is_empty() {
                action.message = if hook.skipped {
                    "action not implemented on unit".to_string()
                } else {
                    format!("exit status {}", hook.code)
                };
            }
        } else if action.status == "running" {
            action.status = "completed".to_string();
        }
        Ok(ActionRun {
            status: action.status.clone(),
            message: action.message.clone(),
            results: action.results.clone(),
            logs: action.logs.clone(),
            hook,
        })
    }

    fn run(
        &self,
        unit: &str,
        kind: &str,
        name: &str,
        extras: &[(&str, &str)],
        action_id: Option<&str>,
        exec: Option<&str>,
    ) -> anyhow::Result<HookRun> {
        let dispatch_path = match exec {
            Some(_) => name.to_string(),
            None => format!("{kind}/{name}"),
        };
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let context_id = format!("{unit}-{name}-{n}");
        let extra = |key: &str| {
            extras
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        };
        let (model_name, model_uuid, relation) = {
            let mut inner = self.lock();
            anyhow::ensure!(inner.state.units.contains_key(unit), "no unit {unit}");
            let relation_id = match extra("JUJU_RELATION_ID") {
                Some(r) => Some(
                    r.rsplit(':')
                        .next()
                        .and_then(|n| n.parse::<u32>().ok())
                        .filter(|n| inner.state.relations.contains_key(n))
                        .with_context(|| format!("JUJU_RELATION_ID={r}: no such relation"))?,
                ),
                None => None,
            };
            let relation = relation_id.map(|id| {
                let rel = &inner.state.relations[&id];
                (rel.key(), rel.endpoint.clone(), rel.remote_app.clone(), id)
            });
            let context = Context {
                unit: unit.to_string(),
                dispatch_path: dispatch_path.clone(),
                relation_id,
                remote_unit: extra("JUJU_REMOTE_UNIT"),
                storage_id: extra("JUJU_STORAGE_ID"),
                action_id: action_id.map(str::to_string),
                working: inner.state.clone(),
                pending: Vec::new(),
                status_changes: Vec::new(),
                logs: Vec::new(),
            };
            inner.contexts.insert(context_id.clone(), context);
            (
                inner.state.model_name.clone(),
                inner.state.model_uuid.clone(),
                relation,
            )
        };

        let unit_charm = self.unit_charm_dir(unit);
        let handler = match exec {
            Some(_) => Some(PathBuf::from("/bin/sh")),
            None => [unit_charm.join("dispatch"), unit_charm.join(&dispatch_path)]
                .into_iter()
                .find(|p| p.is_file()),
        };
        let outcome = match &handler {
            None => Ok(if kind == "actions" {
                ProcessEnd::nothing(1, "action not implemented on unit\n")
            } else {
                ProcessEnd::nothing(0, "")
            }),
            Some(program) => {
                let bin = self.unit_bin_dir(unit);
                let path = format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    bin.display()
                );
                let charm_dir = unit_charm.display().to_string();
                let machine = unit.rsplit('/').next().unwrap_or("0").to_string();
                let socket = self.socket.display().to_string();
                let mut env: Vec<(String, String)> = [
                    ("LANG", "C.UTF-8"),
                    ("PATH", path.as_str()),
                    ("JUJU_DISPATCH_PATH", dispatch_path.as_str()),
                    ("JUJU_HOOK_NAME", if kind == "hooks" { name } else { "" }),
                    ("JUJU_CHARM_DIR", charm_dir.as_str()),
                    ("CHARM_DIR", charm_dir.as_str()),
                    ("JUJU_UNIT_NAME", unit),
                    ("JUJU_MODEL_NAME", model_name.as_str()),
                    ("JUJU_MODEL_UUID", model_uuid.as_str()),
                    ("JUJU_VERSION", JUJU_VERSION),
                    ("JUJU_CONTEXT_ID", context_id.as_str()),
                    ("JUJU_AGENT_SOCKET_ADDRESS", socket.as_str()),
                    ("JUJU_AGENT_SOCKET_NETWORK", "unix"),
                    ("JUJU_MACHINE_ID", machine.as_str()),
                    ("JUJU_AVAILABILITY_ZONE", ""),
                    ("JUJU_PRINCIPAL_UNIT", ""),
                    ("JUJU_API_ADDRESSES", "10.0.0.1:17070"),
                    ("JUJU_CHARM_HTTP_PROXY", ""),
                    ("JUJU_CHARM_HTTPS_PROXY", ""),
                    ("JUJU_CHARM_FTP_PROXY", ""),
                    ("JUJU_CHARM_NO_PROXY", ""),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                if let Some((key, endpoint, remote_app, _)) = &relation {
                    env.push(("JUJU_RELATION".into(), endpoint.clone()));
                    env.push(("JUJU_RELATION_ID".into(), key.clone()));
                    env.push(("JUJU_REMOTE_APP".into(), remote_app.clone()));
                }
                if let Some(id) = action_id {
                    env.push(("JUJU_ACTION_NAME".into(), name.to_string()));
                    env.push(("JUJU_ACTION_UUID".into(), id.to_string()));
                    env.push(("JUJU_ACTION_TAG".into(), format!("action-{id}")));
                }
                for (k, v) in extras {
                    env.retain(|(key, _)| key != k);
                    env.push((k.to_string(), v.to_string()));
                }
                let mut args = Vec::new();
                if let Some(commands) = exec {
                    env.retain(|(k, _)| k != "JUJU_DISPATCH_PATH" && k != "JUJU_HOOK_NAME");
                    args = vec!["-c".to_string(), commands.to_string()];
                }
                let timeout = *self.hook_timeout.lock().unwrap_or_else(|e| e.into_inner());
                run_process(program, &args, &unit_charm, &env, timeout)
            }
        };
        // Whatever happened, the context ends; its writes commit on exit 0.
        let context = self.lock().contexts.remove(&context_id);
        let ProcessEnd {
            code,
            output,
            timed_out,
            cpu,
            wall,
        } = outcome?;
        let context = context.context("the hook's context vanished")?;
        let committed = code == 0;
        let mut changed_bags = Vec::new();
        if code == 0 {
            let mut inner = self.lock();
            let touched: std::collections::BTreeSet<(u32, String, bool)> = context
                .pending
                .iter()
                .filter_map(|op| match op {
                    state::Op::RelationSet {
                        relation_id,
                        owner,
                        app,
                        ..
                    } => Some((*relation_id, owner.clone(), *app)),
                    _ => None,
                })
                .collect();
            let bag = |st: &ModelState, (id, owner, app): &(u32, String, bool)| {
                st.relations.get(id).and_then(|r| {
                    if *app { &r.app_data } else { &r.unit_data }
                        .get(owner)
                        .cloned()
                })
            };
            let before: Vec<_> = touched.iter().map(|t| bag(&inner.state, t)).collect();
            for op in &context.pending {
                state::apply(&mut inner.state, op);
            }
            inner.state.next_secret = inner.state.next_secret.max(context.working.next_secret);
            for (t, old) in touched.into_iter().zip(before) {
                if bag(&inner.state, &t) != old {
                    changed_bags.push(t);
                }
            }
        }
        let run = HookRun {
            unit: unit.to_string(),
            dispatch_path,
            skipped: handler.is_none(),
            code,
            output,
            committed,
            timed_out,
            status_changes: context.status_changes,
            logs: context.logs,
            changed_bags,
            writes: context.pending.len(),
            cpu,
            wall,
        };
        self.record(&run, context.pending.len());
        Ok(run)
    }

    /// How many hooks (actions, juju-exec runs) ran so far, and their CPU
    /// time ([`HookRun::cpu`]).
    pub fn hook_totals(&self) -> (usize, Duration) {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append the run to hooks.log, rewrite state.json.
    fn record(&self, run: &HookRun, writes: usize) {
        let _guard = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if !run.skipped {
            let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            t.0 += 1;
            t.1 += run.cpu;
        }
        let mut entry = format!(
            "=== {} {} exit {}{}: {}\n",
            run.unit,
            run.dispatch_path,
            run.code,
            if run.timed_out { " (timed out)" } else { "" },
            match (run.code, writes) {
                (_, 0) => "no buffered writes".to_string(),
                (0, n) => format!("{n} buffered writes committed"),
                (_, n) => format!("{n} buffered writes discarded"),
            }
        );
        for c in &run.status_changes {
            entry.push_str(&format!(
                "  status {}: {} {:?} -> {} {:?}\n",
                c.entity, c.from.status, c.from.message, c.to.status, c.to.message
            ));
        }
        for line in run.output.lines() {
            entry.push_str(&format!("  | {line}\n"));
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.hooks_log_path())
        {
            let _ = f.write_all(entry.as_bytes());
        }
        let state = self.state();
        if let Ok(json) = serde_json::to_vec_pretty(&state) {
            let _ = std::fs::write(self.dir.join("state.json"), json);
        }
    }
}

/// A unit enters a relation: its bag gets the addresses Juju puts there.
fn join(rel: &mut Relation, unit: &str, address: &str) {
    rel.units.insert(unit.to_string());
    let bag = rel.unit_data.entry(unit.to_string()).or_default();
    bag.insert("private-address".into(), address.to_string());
    bag.insert("ingress-address".into(), address.to_string());
    bag.insert("egress-subnets".into(), format!("{address}/32"));
}

/// A UUID-shaped string, stable per model directory.
fn model_uuid(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    std::process::id().hash(&mut h);
    let a = h.finish();
    a.hash(&mut h);
    let b = h.finish();
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Run the handler: own process group, stdout and stderr into one file,
/// killed (the group) after `timeout`. (exit code, output, timed out).
fn run_process(
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> anyhow::Result<ProcessEnd> {
    let out = tempfile::tempfile()?;
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    let pgid = child.id() as i32;
    let started = Instant::now();
    let mut timed_out = false;
    // wait4 rather than try_wait: the hook's CPU time (it and the children
    // it waited for: the hook tools) comes with its exit status.
    let (raw, usage) = loop {
        let mut raw = 0;
        // SAFETY: plain system call on our own child; rusage is plain data.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pgid, &mut raw, libc::WNOHANG, &mut usage) };
        if r == pgid {
            break (raw, usage);
        }
        anyhow::ensure!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > timeout && !timed_out {
            timed_out = true;
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(child);
    use std::os::unix::process::ExitStatusExt as _;
    let status = std::process::ExitStatus::from_raw(raw);
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let mut text = Vec::new();
    let mut file = out;
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    Ok(ProcessEnd {
        code,
        output: String::from_utf8_lossy(&text).into_owned(),
        timed_out,
        cpu,
        wall: started.elapsed(),
    })
}

impl ProcessEnd {
    /// No process ran.
    fn nothing(code: i32, output: &str) -> ProcessEnd {
        ProcessEnd {
            code,
            output: output.to_string(),
            timed_out: false,
            cpu: Duration::ZERO,
            wall: Duration::ZERO,
        }
    }
}

/// How a hook's process ended.
struct ProcessEnd {
    code: i32,
    output: String,
    timed_out: bool,
    /// User + system CPU of the process and the children it waited for.
    cpu: Duration,
    wall: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn charm_meta_from_charmcraft_yaml() {
        let craft: Value = serde_norway::from_str(
            "name: postgresql\npeers:\n  database-peers:\n    interface: x\nconfig:\n  options:\n    \
             profile:\n      type: string\n      default: production\n    plugin:\n      type: string\n\
             actions:\n  promote:\n    params:\n      force:\n        type: boolean\n        default: false\n      \
             scope:\n        type: string\n",
        )
        .unwrap();
        let meta = CharmMeta::from_values(&craft, &craft["config"], &craft["actions"]);
        assert_eq!(meta.name, "postgresql");
        assert_eq!(meta.peers, vec!["database-peers".to_string()]);
        assert_eq!(
            Value::Object(meta.config_defaults),
            json!({"profile": "production", "plugin": null})
        );
        assert_eq!(
            Value::Object(meta.action_defaults),
            json!({"promote": {"force": false}})
        );
    }

    #[test]
    fn the_real_charm_declares_the_peer_relation() {
        let charm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charm");
        let meta = CharmMeta::load(&charm).unwrap();
        assert_eq!(meta.peers, vec![PEER_ENDPOINT.to_string()]);
        assert!(!meta.config_defaults.is_empty());
    }

    #[test]
    fn uuid_shape() {
        let u = model_uuid(Path::new("/tmp/x"));
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
