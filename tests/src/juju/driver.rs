//! The model simulator's driver: a [`Deployment`] of one application from a
//! packed `.charm` on machines of the snapd fixture, with a unit agent per
//! unit that runs its hooks one at a time in the order Juju fires them.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
//! let tmp = tempfile::tempdir()?;
//! let d = Deployment::new(tmp.path(), "/var/tmp/c.charm".as_ref(), "/var/tmp/s.snap".as_ref(),
//!                         "127.0.2", DriverOptions::default())?;
//! d.add_units(3)?;            // juju deploy postgresql -n 3
//! d.settle(std::time::Duration::from_secs(600))?;
//! # Ok(()) }
//! ```
//!
//! # What it reproduces (on top of the model in [`super::Model`])
//!
//! - **Unit agents**: one thread per unit runs that unit's events one at a
//!   time (units run concurrently, as Juju's do); `juju-exec` waits for the
//!   unit's turn like any hook.
//! - **Deploy and add-unit** (charm-snap.md §2.4): `pgdata-storage-attached`,
//!   `install`, `database-peers-relation-created`, `leader-elected` on the
//!   leader or `leader-settings-changed` on the others, `config-changed`,
//!   `start`; then `-relation-joined` and `-relation-changed` on both sides
//!   for every pair of units. The first unit deployed is the leader.
//! - **relation-changed after a commit**: a hook whose commit changed a
//!   unit's bag fires `-relation-changed` (JUJU_REMOTE_UNIT = that unit) on
//!   every other unit of the relation; an application bag, on every other
//!   unit (no remote unit). An event already waiting in a unit's queue is
//!   not queued twice (Juju coalesces them too).
//! - **Config changes**: `config-changed` on every unit.
//! - **Secrets**: a user secret ([`Deployment::add_user_secret`], granted to
//!   the application); a new revision fires `secret-changed` on every unit
//!   that read it.
//! - **remove-unit**: the unit leaves the relation at once (`relation-list`
//!   no longer shows it); every other unit runs `-relation-departed` with
//!   JUJU_REMOTE_UNIT and JUJU_DEPARTING_UNIT set to it; the unit itself
//!   runs `-relation-departed` for each other unit, `-relation-broken`,
//!   `pgdata-storage-detaching`, `stop`, `remove`; then its machine is
//!   destroyed (every process killed) and the unit leaves the model. A
//!   leader that goes passes leadership on (`leader-elected` on the
//!   lowest-numbered unit left).
//! - **A machine that goes down** ([`Deployment::power_off`]): every
//!   process of the unit is killed at once, its agent runs nothing; events
//!   for it wait. When it was the leader, another unit is elected after the
//!   lease expires ([`DriverOptions::leadership_expiry`]). Powered on
//!   again: the enabled services start (systemd), then the agent runs
//!   `start` (Juju runs it after a reboot) and what waited.
//! - **update-status** every [`DriverOptions::update_status_interval`] on
//!   every unit whose queue is empty (Juju's default is 5 minutes).
//! - **Failed hooks are retried** as Juju retries them: the unit shows
//!   `error` (`hook failed: "NAME"`, [`super::Unit::hook_error`]), nothing
//!   else runs on it, and the same hook runs again after 5 s, then 10 s,
//!   20 s, ... up to [`DriverOptions::max_retry_delay`].
//! - **The machine's `snap` and `juju-exec`**: `snap` (install --dangerous,
//!   list, refresh --hold, set/unset/get, services, start/stop/restart,
//!   run) answered by the unit's snapd-fixture [`Machine`]; `juju-exec
//!   [-u] UNIT COMMANDS...` runs the commands in a hook context on that
//!   unit. Both are scripts in the unit's tool directory (first on the
//!   hook's PATH, so `juju-exec` is found there) calling the fixture's
//!   `juju-tool`, which any user may run (pgpilot's callbacks run as
//!   `_daemon_`).
//!
//! # What it does not reproduce
//!
//! - Leadership is decided by the driver (first unit; lowest-numbered live
//!   unit after a loss), with no lease renewal by hooks and no
//!   `leader-settings-changed` after an election.
//! - Hooks run on this host, as root, in no machine's namespace; a hook
//!   running when its machine goes down runs to its end.
//! - No `juju resolved`, `--no-retry`, hook priorities, `upgrade-charm`
//!   (refresh), `collect-metrics`, `pre-series-upgrade`, relation to other
//!   applications' units, `juju-exec` on several units or with `--timeout`,
//!   `juju-exec` strict confinement (a strictly confined snap cannot run a
//!   host program on a real machine: see docs/charm.md), `secret-remove` /
//!   `secret-expired` / `secret-rotate` hooks, consumer labels.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use super::host;
use super::state::{Grant, Secret, SecretOwner};
use super::{HookRun, Model, PEER_ENDPOINT};
use crate::snapd::Machine;

/// The charm's storage and resource names.
pub const STORAGE: &str = "pgdata";
pub const SNAP_RESOURCE: &str = "charmed-postgresql-snap";

/// Timings of the simulated controller.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// `update-status-hook-interval`; `None`: no timer.
    pub update_status_interval: Option<Duration>,
    /// How long a leader whose machine is down keeps leadership.
    pub leadership_expiry: Duration,
    /// The first retry of a failed hook, doubled up to `max_retry_delay`.
    pub first_retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            update_status_interval: Some(Duration::from_secs(300)),
            leadership_expiry: Duration::from_secs(30),
            first_retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(300),
        }
    }
}

/// One event for a unit agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Hook {
        name: String,
        env: Vec<(String, String)>,
    },
    /// `juju-exec`: the answer goes back to the waiting caller.
    Exec { commands: String, reply: ReplySlot },
    /// The unit is gone: destroy its machine, leave the model.
    Destroy,
    /// After its relation-broken: the unit is out of that relation (the
    /// relation goes once no unit of this application is left in it).
    LeaveRelation(u32),
}

/// Where a `juju-exec` answer goes (compared by identity only).
#[derive(Debug, Clone)]
pub struct ReplySlot(pub mpsc::SyncSender<HookRun>);

impl PartialEq for ReplySlot {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

#[path = "remote.rs"]
mod remote;

fn hook(name: &str, env: &[(&str, &str)]) -> Job {
    Job::Hook {
        name: name.to_string(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[derive(Default)]
struct AgentState {
    queue: VecDeque<Job>,
    running: bool,
    down: bool,
    down_since: Option<Instant>,
    gone: bool,
    /// A failed hook waits for its retry.
    failing: bool,
}

/// A unit agent: its queue and its thread.
pub struct Agent {
    pub unit: String,
    state: Mutex<AgentState>,
    cond: Condvar,
}

impl Agent {
    fn lock(&self) -> MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue an event (an event already waiting is not queued twice).
    pub fn push_job(&self, job: Job) {
        self.push(job)
    }

    fn push(&self, job: Job) {
        let mut st = self.lock();
        if st.gone {
            return;
        }
        if !matches!(job, Job::Exec { .. }) && st.queue.contains(&job) {
            return;
        }
        st.queue.push_back(job);
        self.cond.notify_all();
    }

    fn idle(&self) -> bool {
        let st = self.lock();
        st.gone || st.down || (st.queue.is_empty() && !st.running && !st.failing)
    }
}

pub(crate) struct Shared {
    pub model: Model,
    pub dir: PathBuf,
    /// First three octets of the units' addresses (`127.0.2`).
    net: String,
    opts: DriverOptions,
    agents: Mutex<BTreeMap<String, Arc<Agent>>>,
    pub machines: Mutex<BTreeMap<String, Arc<Machine>>>,
    /// Injected faults: unit → the `snap` subcommand that fails there.
    pub snap_faults: Mutex<BTreeMap<String, String>>,
    stop: AtomicBool,
}

impl Shared {
    fn agents(&self) -> Vec<Arc<Agent>> {
        lock(&self.agents).values().cloned().collect()
    }

    pub(crate) fn agent(&self, unit: &str) -> Option<Arc<Agent>> {
        lock(&self.agents).get(unit).cloned()
    }

    pub fn machine(&self, unit: &str) -> Option<Arc<Machine>> {
        lock(&self.machines).get(unit).cloned()
    }

    fn peer_relation(&self) -> anyhow::Result<(u32, String)> {
        let id = self
            .model
            .relation_id(PEER_ENDPOINT)
            .context("the charm has no peer relation")?;
        Ok((id, format!("{PEER_ENDPOINT}:{id}")))
    }

    /// After a committed hook: relation-changed on the other side.
    fn after_commit(&self, unit: &str, run: &HookRun) {
        let state = self.model.state();
        for (rid, owner, app) in &run.changed_bags {
            let Some(rel) = state.relations.get(rid) else {
                continue;
            };
            let key = rel.key();
            // Another application's relation: only that application hears
            // of it (the test reads it), not this unit's peers.
            if !rel.peer {
                continue;
            }
            for other in rel.units.iter().filter(|u| *u != unit) {
                let Some(agent) = self.agent(other) else {
                    continue;
                };
                let job = if *app {
                    hook(
                        &format!("{}-relation-changed", rel.endpoint),
                        &[("JUJU_RELATION_ID", &key), ("JUJU_REMOTE_APP", owner)],
                    )
                } else {
                    hook(
                        &format!("{}-relation-changed", rel.endpoint),
                        &[("JUJU_RELATION_ID", &key), ("JUJU_REMOTE_UNIT", owner)],
                    )
                };
                agent.push(job);
            }
        }
    }

    /// The lowest-numbered unit that is up becomes the leader.
    fn elect(&self) {
        let candidates: Vec<Arc<Agent>> = self
            .agents()
            .into_iter()
            .filter(|a| {
                let st = a.lock();
                !st.down && !st.gone
            })
            .collect();
        let Some(next) = candidates
            .iter()
            .min_by_key(|a| unit_number(&a.unit))
            .cloned()
        else {
            return;
        };
        if self.model.set_leader(&next.unit).is_ok() {
            next.push(hook("leader-elected", &[]));
        }
    }

    fn leader(&self) -> Option<String> {
        self.model
            .state()
            .units
            .values()
            .find(|u| u.leader)
            .map(|u| u.name.clone())
    }

    fn agent_loop(self: Arc<Self>, agent: Arc<Agent>) {
        loop {
            let job = {
                let mut st = agent.lock();
                loop {
                    if st.gone || self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if !st.down {
                        if let Some(job) = st.queue.pop_front() {
                            st.running = true;
                            break job;
                        }
                    }
                    st = agent
                        .cond
                        .wait_timeout(st, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            self.run_job(&agent, job);
            agent.lock().running = false;
        }
    }

    fn run_job(&self, agent: &Agent, job: Job) {
        let unit = agent.unit.clone();
        match job {
            Job::Exec { commands, reply } => {
                if let Ok(run) = self.model.run_exec(&unit, &commands) {
                    if run.code == 0 {
                        self.after_commit(&unit, &run);
                    }
                    let _ = reply.0.try_send(run);
                }
            }
            Job::Destroy => {
                if let Some(machine) = lock(&self.machines).remove(&unit) {
                    machine.power_off();
                    drop(machine);
                }
                let was_leader = self.leader().as_deref() == Some(unit.as_str());
                self.model.remove_unit(&unit);
                agent.lock().gone = true;
                lock(&self.agents).remove(&unit);
                if was_leader {
                    self.elect();
                }
            }
            Job::LeaveRelation(rid) => self.model.update(|st| {
                let Some(rel) = st.relations.get_mut(&rid) else {
                    return;
                };
                rel.units.remove(&unit);
                rel.unit_data.remove(&unit);
                let app = super::state::app_of(&unit).to_string();
                if !rel.units.iter().any(|u| super::state::app_of(u) == app) {
                    st.relations.remove(&rid);
                }
            }),
            Job::Hook { name, env } => {
                let mut delay = self.opts.first_retry_delay;
                loop {
                    let extras: Vec<(&str, &str)> =
                        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let Ok(run) = self.model.run_hook(&unit, &name, &extras) else {
                        return;
                    };
                    if run.code == 0 {
                        self.model.set_hook_error(&unit, None);
                        agent.lock().failing = false;
                        self.after_commit(&unit, &run);
                        return;
                    }
                    self.model
                        .set_hook_error(&unit, Some(format!("hook failed: {name:?}")));
                    agent.lock().failing = true;
                    // Wait for the retry; a machine that goes down or a
                    // unit that goes keeps the hook for later.
                    let until = Instant::now() + delay;
                    let mut st = agent.lock();
                    while Instant::now() < until && !st.down && !st.gone {
                        let left = until.saturating_duration_since(Instant::now());
                        st = agent
                            .cond
                            .wait_timeout(st, left.min(Duration::from_millis(200)))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        if self.stop.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    if st.gone {
                        return;
                    }
                    if st.down {
                        st.queue.push_front(Job::Hook { name, env });
                        return;
                    }
                    drop(st);
                    delay = (delay * 2).min(self.opts.max_retry_delay);
                }
            }
        }
    }

    /// The controller's timers: update-status, and leadership of a unit
    /// whose machine is down.
    fn ticker(self: Arc<Self>) {
        let mut last_update = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(250));
            if let Some(every) = self.opts.update_status_interval {
                if last_update.elapsed() >= every {
                    last_update = Instant::now();
                    for agent in self.agents() {
                        let empty = {
                            let st = agent.lock();
                            st.queue.is_empty() && !st.running && !st.down
                        };
                        if empty {
                            agent.push(hook("update-status", &[]));
                        }
                    }
                }
            }
            if let Some(leader) = self.leader() {
                let expired = self.agent(&leader).is_some_and(|a| {
                    a.lock()
                        .down_since
                        .is_some_and(|t| t.elapsed() >= self.opts.leadership_expiry)
                });
                if expired {
                    self.elect();
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unit_number(unit: &str) -> u32 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// One application deployed on simulated machines; see the module docs.
/// Dropping it destroys every machine.
pub struct Deployment {
    shared: Arc<Shared>,
    _host: host::HostServer,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Deployment {
    /// A model in `dir` (made readable by every user: the snap's daemons
    /// run as `_daemon_` and call `juju-exec` from there) for the charm in
    /// the `.charm` file, with the `.snap` attached as its resource. Units
    /// get the addresses `NET.1`, `NET.2`, ... (`net` is e.g. `127.0.2`).
    pub fn new(
        dir: &Path,
        charm_file: &Path,
        snap_file: &Path,
        net: &str,
        opts: DriverOptions,
    ) -> anyhow::Result<Deployment> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let dir = dir.canonicalize()?;
        let charm_dir = dir.join("charm");
        unzip(charm_file, &charm_dir)?;
        let model = Model::new(&dir.join("model"), &charm_dir, "postgresql")?;
        model.attach_resource(SNAP_RESOURCE, snap_file);
        std::fs::create_dir_all(dir.join("machines"))?;
        let shared = Arc::new(Shared {
            model,
            dir: dir.clone(),
            net: net.to_string(),
            opts,
            agents: Default::default(),
            machines: Default::default(),
            snap_faults: Default::default(),
            stop: AtomicBool::new(false),
        });
        let host = host::HostServer::start(Arc::clone(&shared), &dir.join("host.socket"))?;
        let ticker = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.ticker())
        };
        Ok(Deployment {
            shared,
            _host: host,
            threads: Mutex::new(vec![ticker]),
        })
    }

    pub fn model(&self) -> &Model {
        &self.shared.model
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The unit's machine, once the charm installed the snap there.
    pub fn machine(&self, unit: &str) -> Option<Arc<Machine>> {
        self.shared.machine(unit)
    }

    /// The units (sorted by number).
    pub fn units(&self) -> Vec<String> {
        let mut units: Vec<String> = self.shared.model.state().units.into_keys().collect();
        units.sort_by_key(|u| unit_number(u));
        units
    }

    pub fn leader(&self) -> Option<String> {
        self.shared.leader()
    }

    pub fn address(&self, unit: &str) -> String {
        format!("{}.{}", self.shared.net, unit_number(unit) + 1)
    }

    /// `juju deploy` (the first call) / `juju add-unit -n N`: the new
    /// units' names. Their events are queued; see [`Deployment::settle`].
    pub fn add_units(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let sh = &self.shared;
        let (rid, key) = sh.peer_relation()?;
        let mut added = Vec::new();
        for _ in 0..n {
            let next = sh
                .model
                .state()
                .units
                .keys()
                .map(|u| unit_number(u) + 1)
                .max()
                .unwrap_or(0);
            let address = format!("{}.{}", sh.net, next + 1);
            let existing: Vec<String> = sh.model.state().relations[&rid]
                .units
                .iter()
                .cloned()
                .collect();
            let unit = sh.model.add_unit(&address)?;
            anyhow::ensure!(
                unit_number(&unit) == next,
                "unit numbering: got {unit}, expected /{next}"
            );
            host::install_tools(&sh.model, &sh.dir, &unit)?;
            let storage_dir = sh.dir.join("storage").join(unit.replace('/', "-"));
            std::fs::create_dir_all(&storage_dir)?;
            sh.model.add_storage(
                &unit,
                &format!("{STORAGE}/{next}"),
                "filesystem",
                &storage_dir,
            );
            let first = sh.leader().is_none();
            if first {
                sh.model.set_leader(&unit)?;
            }
            let agent = Arc::new(Agent {
                unit: unit.clone(),
                state: Mutex::default(),
                cond: Condvar::new(),
            });
            let storage_id = format!("{STORAGE}/{next}");
            let location = storage_dir.display().to_string();
            for job in [
                hook(
                    &format!("{STORAGE}-storage-attached"),
                    &[
                        ("JUJU_STORAGE_ID", &storage_id),
                        ("JUJU_STORAGE_LOCATION", &location),
                        ("JUJU_STORAGE_KIND", "filesystem"),
                    ],
                ),
                hook("install", &[]),
                hook(
                    &format!("{PEER_ENDPOINT}-relation-created"),
                    &[("JUJU_RELATION_ID", &key)],
                ),
            ] {
                agent.push(job);
            }
            for job in remote::joining_jobs(sh, &unit) {
                agent.push(job);
            }
            for job in [
                hook(
                    if first {
                        "leader-elected"
                    } else {
                        "leader-settings-changed"
                    },
                    &[],
                ),
                hook("config-changed", &[]),
                hook("start", &[]),
            ] {
                agent.push(job);
            }
            for other in &existing {
                for side in ["joined", "changed"] {
                    let name = format!("{PEER_ENDPOINT}-relation-{side}");
                    agent.push(hook(
                        &name,
                        &[("JUJU_RELATION_ID", &key), ("JUJU_REMOTE_UNIT", other)],
                    ));
                    if let Some(o) = sh.agent(other) {
                        o.push(hook(
                            &name,
                            &[("JUJU_RELATION_ID", &key), ("JUJU_REMOTE_UNIT", &unit)],
                        ));
                    }
                }
            }
            lock(&sh.agents).insert(unit.clone(), Arc::clone(&agent));
            let shared = Arc::clone(sh);
            lock(&self.threads).push(std::thread::spawn(move || shared.agent_loop(agent)));
            added.push(unit);
        }
        Ok(added)
    }

    /// `juju remove-unit UNIT` (its machine goes too).
    pub fn remove_unit(&self, unit: &str) -> anyhow::Result<()> {
        let sh = &self.shared;
        let (rid, key) = sh.peer_relation()?;
        let agent = sh.agent(unit).with_context(|| format!("no unit {unit}"))?;
        let others: Vec<String> = sh.model.update(|st| {
            let rel = st.relations.get_mut(&rid).expect("peer relation");
            rel.units.remove(unit);
            rel.units.iter().cloned().collect()
        });
        let departed = format!("{PEER_ENDPOINT}-relation-departed");
        for other in &others {
            if let Some(o) = sh.agent(other) {
                o.push(hook(
                    &departed,
                    &[
                        ("JUJU_RELATION_ID", &key),
                        ("JUJU_REMOTE_UNIT", unit),
                        ("JUJU_DEPARTING_UNIT", unit),
                    ],
                ));
            }
            agent.push(hook(
                &departed,
                &[
                    ("JUJU_RELATION_ID", &key),
                    ("JUJU_REMOTE_UNIT", other),
                    ("JUJU_DEPARTING_UNIT", unit),
                ],
            ));
        }
        let storage_id = format!("{STORAGE}/{}", unit_number(unit));
        for job in [
            hook(
                &format!("{PEER_ENDPOINT}-relation-broken"),
                &[("JUJU_RELATION_ID", &key)],
            ),
            hook(
                &format!("{STORAGE}-storage-detaching"),
                &[("JUJU_STORAGE_ID", &storage_id)],
            ),
            hook("stop", &[]),
            hook("remove", &[]),
            Job::Destroy,
        ] {
            agent.push(job);
        }
        Ok(())
    }

    /// Wait until the unit is gone from the model.
    pub fn wait_gone(&self, unit: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.shared.agent(unit).is_some() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{unit} still not removed after {timeout:?}\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// `juju config postgresql k=v ...` (null: `--reset k`).
    pub fn config(&self, values: Value) -> anyhow::Result<()> {
        let map: Map<String, Value> = serde_json::from_value(values)?;
        self.shared.model.set_config(&map)?;
        self.fire_all("config-changed");
        Ok(())
    }

    /// Queue `hook` (no relation) on every unit.
    pub fn fire_all(&self, hook_name: &str) {
        for agent in self.shared.agents() {
            agent.push(hook(hook_name, &[]));
        }
    }

    /// Queue a hook on one unit.
    pub fn fire(&self, unit: &str, hook_name: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let agent = self
            .shared
            .agent(unit)
            .with_context(|| format!("no unit {unit}"))?;
        agent.push(hook(hook_name, env));
        Ok(())
    }

    /// `juju add-secret NAME k=v...` then `juju grant-secret NAME
    /// postgresql`: the secret's URI.
    pub fn add_user_secret(&self, content: &[(&str, &str)]) -> anyhow::Result<String> {
        let (rid, _) = self.shared.peer_relation()?;
        let bag: BTreeMap<String, String> = content
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let id = self.shared.model.update(|st| {
            st.next_secret += 1;
            let id = super::state::secret_id(st.next_secret);
            st.secrets.insert(
                id.clone(),
                Secret {
                    id: id.clone(),
                    owner: SecretOwner::Application("admin".to_string()),
                    label: None,
                    description: Some("a user secret".to_string()),
                    revisions: BTreeMap::from([(1, bag)]),
                    grants: vec![Grant {
                        relation_id: rid,
                        unit: None,
                    }],
                    tracked: BTreeMap::new(),
                },
            );
            id
        });
        Ok(format!("secret:{id}"))
    }

    /// `juju update-secret NAME k=v...`: a new revision; `secret-changed`
    /// on every unit that read the secret.
    pub fn update_user_secret(&self, uri: &str, content: &[(&str, &str)]) -> anyhow::Result<()> {
        let id = super::state::parse_secret_uri(uri).to_string();
        let bag: BTreeMap<String, String> = content
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let readers = self.shared.model.update(|st| {
            let secret = st.secrets.get_mut(&id).context("no such secret")?;
            let next = secret.latest() + 1;
            secret.revisions.insert(next, bag);
            anyhow::Ok(secret.tracked.keys().cloned().collect::<Vec<_>>())
        })?;
        let full = format!("secret:{id}");
        for unit in readers {
            self.fire(&unit, "secret-changed", &[("JUJU_SECRET_ID", &full)])?;
        }
        Ok(())
    }

    /// The machine of `unit` goes down: see the module docs.
    pub fn power_off(&self, unit: &str) -> anyhow::Result<()> {
        let agent = self
            .shared
            .agent(unit)
            .with_context(|| format!("no unit {unit}"))?;
        {
            let mut st = agent.lock();
            st.down = true;
            st.down_since = Some(Instant::now());
        }
        if let Some(machine) = self.shared.machine(unit) {
            machine.power_off();
        }
        Ok(())
    }

    /// The machine of `unit` starts again.
    pub fn power_on(&self, unit: &str) -> anyhow::Result<()> {
        let agent = self
            .shared
            .agent(unit)
            .with_context(|| format!("no unit {unit}"))?;
        if let Some(machine) = self.shared.machine(unit) {
            machine.boot()?;
        }
        let mut st = agent.lock();
        st.down = false;
        st.down_since = None;
        st.queue.push_front(hook("start", &[]));
        agent.cond.notify_all();
        Ok(())
    }

    /// Wait for the unit's turn (nothing running on it), hold it while
    /// `f` runs.
    fn with_turn<T>(&self, unit: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let agent = self
            .shared
            .agent(unit)
            .with_context(|| format!("no unit {unit}"))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            {
                let mut st = agent.lock();
                if !st.running && !st.down {
                    st.running = true;
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "{unit} stayed busy");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = f();
        agent.lock().running = false;
        agent.cond.notify_all();
        out
    }

    /// Run an action on a unit now (as `juju run UNIT NAME k=v`), in the
    /// unit's turn.
    pub fn run_action(
        &self,
        unit: &str,
        name: &str,
        params: Value,
    ) -> anyhow::Result<super::ActionRun> {
        let params: Map<String, Value> = serde_json::from_value(params)?;
        self.with_turn(unit, || self.shared.model.run_action(unit, name, &params))
    }

    /// Run a hook on a unit now, in the unit's turn, and say how it went
    /// (relation-changed still follows its commit).
    pub fn run_hook_now(
        &self,
        unit: &str,
        hook_name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<HookRun> {
        self.with_turn(unit, || {
            let run = self.shared.model.run_hook(unit, hook_name, env)?;
            if run.code == 0 {
                self.shared.after_commit(unit, &run);
            }
            Ok(run)
        })
    }

    /// Make `snap SUBCOMMAND` fail on the unit's machine (`None`: heal):
    /// `error: injected fault`, exit 1.
    pub fn fail_snap(&self, unit: &str, subcommand: Option<&str>) {
        let mut faults = lock(&self.shared.snap_faults);
        match subcommand {
            Some(c) => faults.insert(unit.to_string(), c.to_string()),
            None => faults.remove(unit),
        };
    }

    /// Wait until every unit that is up has run everything queued for it
    /// and no hook waits for a retry.
    pub fn settle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut quiet_since: Option<Instant> = None;
        loop {
            let idle = self.shared.agents().iter().all(|a| a.idle());
            if idle {
                // Callbacks through juju-exec may still be on their way.
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(500) {
                    return Ok(());
                }
            } else {
                quiet_since = None;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the model did not settle within {timeout:?}\n{}",
                self.log_tail(80)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll `check` (given the model's state) until it returns `Ok`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Deployment) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => {
                    anyhow::bail!(
                        "{what}: not within {timeout:?}: {e:#}\n{}",
                        self.log_tail(80)
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// `(status, message)` of every unit, as `juju status` shows them.
    pub fn statuses(&self) -> BTreeMap<String, (String, String)> {
        self.shared
            .model
            .state()
            .units
            .into_values()
            .map(|u| {
                let shown = match &u.hook_error {
                    Some(e) => ("error".to_string(), e.clone()),
                    None => (u.status.status, u.status.message),
                };
                (u.name, shown)
            })
            .collect()
    }

    /// The last `lines` lines of the hook log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.shared.model.hooks_log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- statuses ---\n{}\n--- hooks.log (last {lines} lines) ---\n{}",
            serde_json::to_string_pretty(&json!(self.statuses())).unwrap_or_default(),
            all[start..].join("\n")
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for agent in self.shared.agents() {
            agent.cond.notify_all();
        }
        let machines: Vec<Arc<Machine>> = std::mem::take(&mut *lock(&self.shared.machines))
            .into_values()
            .collect();
        std::thread::scope(|s| {
            for m in &machines {
                s.spawn(move || m.power_off());
            }
        });
        drop(machines);
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

/// Unpack a `.charm` (a zip) as Juju does, keeping the files' modes
/// (`dispatch` must stay executable).
fn unzip(charm: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let script = "import os, sys, zipfile\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  for info in z.infolist():\n\
                  \x20   path = z.extract(info, sys.argv[2])\n\
                  \x20   mode = (info.external_attr >> 16) & 0o7777\n\
                  \x20   if mode and not info.is_dir():\n\
                  \x20       os.chmod(path, mode)\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(charm)
        .arg(into)
        .output()
        .context("running python3 to unzip the charm")?;
    anyhow::ensure!(
        out.status.success(),
        "unpacking {}: {}",
        charm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
