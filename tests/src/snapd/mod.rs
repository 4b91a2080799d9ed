//! A stand-in for snapd: runs a packed `.snap` file on a "machine" (a
//! directory tree) as snapd would, so the snap's hooks and wrappers are
//! tested as they are, calling the real command name `snapctl`.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use pgpilot_e2e::snapd::{Machine, SnapFile};
//! let snap = SnapFile::from_env()?; // $PGPILOT_SNAP
//! let tmp = tempfile::tempdir()?;
//! let m = Machine::install(&snap, "m1", &tmp.path().join("m1"))?;
//! m.set(&[("pgpilot.cluster.name", "m1")])?;
//! m.start(&["etcd", "pgpilot"], true)?;
//! # Ok(()) }
//! ```
//!
//! # The machine
//!
//! | path under the root | what |
//! |---|---|
//! | `snap/NAME/xN` | $SNAP: the snap file unsquashed, `chmod -R a-w`, read-only for root too (below); `current` → xN |
//! | `var/snap/NAME/xN` | $SNAP_DATA (root, 0755); `current` → xN |
//! | `var/snap/NAME/common` | $SNAP_COMMON (root, 0755) |
//! | `home-root/snap/NAME/xN`, `common` | root's $SNAP_USER_DATA (= $HOME) and $SNAP_USER_COMMON: `/root/snap/NAME/...` on a real machine |
//! | `usr/bin/snapctl` | the fixture's `snapctl` (src/bin/snapctl.rs), first on PATH |
//! | `run/snapd-snap.socket` | what that `snapctl` talks to (the test process) |
//! | `journal/APP.log` | a service's stdout and stderr, with systemd-like lines (`snap logs`) |
//! | `journal/hooks.log` | every hook's output |
//! | `var/lib/snapd/state.json` | the configuration, rewritten at each commit (post-mortem only) |
//!
//! Revisions are x1, x2, ... like snapd's unasserted local installs; a
//! refresh keeps the previous one (`refresh.retain` 2).
//!
//! # What the fixture reproduces
//!
//! - Install: `system-usernames` users (`_daemon_` 584792, `snap_daemon`
//!   584788; created under a lock), `install` hook, the services without
//!   `install-mode: disable` enabled and started, then `configure`; a
//!   failing hook fails the install (the machine is removed).
//! - Hooks run as root, cwd `/`, their own process group, stdout and stderr
//!   collected together, killed after 5 min (configure) or 10 min; each in
//!   a context of its own (`SNAP_COOKIE`/`SNAP_CONTEXT`): configuration
//!   changes commit only when it exits 0. The error of a failed hook is
//!   snapd's: `cannot perform the following tasks:\n- Run configure hook of
//!   "NAME" snap (run hook "configure": OUTPUT)`, OUTPUT being the trimmed
//!   combined output (framed by `-----` lines when it has several lines).
//! - `snap set`/`unset` ([`Machine::set`], [`Machine::unset`]): values read
//!   as JSON when they parse, else strings; option names checked; the
//!   configure hook sees the pending values; non-zero exit → nothing
//!   committed and queued service commands dropped; success → commit, then
//!   the queued service commands. No configure hook: refused.
//! - `snapctl get [-d|-t] KEY...`, `set [-s|-t] k=v... k!`, `unset`,
//!   `services [SNAP.APP...]`, `start [--enable]`, `stop [--disable]`,
//!   `restart`: snapd's output (a single string key raw, JSON otherwise,
//!   documents indented with tabs, Go's escaping; `get` without a key is
//!   "get which option?", also with `-d`), snapd's errors (`error: snapctl:
//!   ...`, exit 1), only `get` and `services` for non-root callers, service
//!   commands queued until a configure hook succeeds and carried out at once
//!   elsewhere, `restart` of an inactive service only when named or enabled.
//!   Apps and services get the apps' context: `snapctl set` there commits
//!   at once.
//! - Environment: empty plus `LANG=C.UTF-8`, then snapd's (SNAP, SNAP_DATA,
//!   SNAP_COMMON, SNAP_NAME, SNAP_INSTANCE_NAME, SNAP_INSTANCE_KEY,
//!   SNAP_VERSION, SNAP_REVISION, SNAP_ARCH, SNAP_LIBRARY_PATH, SNAP_REEXEC,
//!   SNAP_UID, SNAP_EUID, HOME, SNAP_USER_DATA, SNAP_USER_COMMON,
//!   SNAP_REAL_HOME, XDG_RUNTIME_DIR, SNAP_COOKIE, SNAP_CONTEXT, SHELL, and
//!   SNAP_APP_NAME for apps), PATH = snap-confine's
//!   (`/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games`)
//!   with the fixture's `usr/bin` first, then meta/snap.yaml's top-level
//!   `environment` and the app's or hook's, expanded in order as snap-exec
//!   does (`$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR:+w}`). snapd adds nothing
//!   to PATH: `$SNAP/usr/bin` etc. are on it only if snap.yaml says so
//!   (snapcraft writes `PATH: $SNAP/usr/sbin:$SNAP/usr/bin:$SNAP/sbin:$SNAP/bin:$PATH`).
//! - Commands: command-chain, then `$SNAP/COMMAND` with its `$VAR`
//!   arguments expanded; [`Machine::run_app`] runs an app as root.
//! - Services as snapd's systemd units: root, cwd $SNAP_DATA, own session,
//!   `INVOCATION_ID`, output appended to `journal/APP.log`; restart-condition
//!   with systemd's rules, `RestartSec` 100 ms (or `restart-delay`), 5 starts
//!   in 10 s then failed (inactive); stop = the stop-mode's signal (SIGTERM)
//!   to every process of the unit (snapd's default `KillMode=control-group`;
//!   the main process only for `stop-mode: sigterm` etc.), SIGKILL after
//!   `stop-timeout` (snapd's default 30 s); when the main process ends by
//!   itself the rest of the unit is stopped too (control-group).
//! - Refresh: pre-refresh (old), stop services, unpack xN+1, `cp -a` of
//!   $SNAP_DATA (and root's ~/snap data), `current` links moved,
//!   post-refresh (new), enabled services started, configure; undo on a
//!   hook failure; $SNAP_COMMON untouched.
//! - $SNAP is read-only: every process of the snap starts in a private
//!   mount namespace where $SNAP is a read-only bind mount (EROFS on write,
//!   as on squashfs), where the machine allows it ([`Machine::snap_read_only`]).
//!
//! # What it cannot reproduce
//!
//! - snapd's mount namespace: $SNAP is ROOT/snap/NAME/xN, not /snap/NAME/xN,
//!   the base snap's files are the host's (Debian's /usr, /bin), no
//!   `layout:`, no /snap/bin commands or aliases.
//! - Confinement: no AppArmor, no seccomp; plugs and slots are not
//!   enforced (a missing `network-bind` or `process-control` plug goes
//!   unnoticed), no `private: true` /dev/shm, no private /tmp.
//! - systemd's cgroup tracking: a unit's processes are found by pid
//!   (descendants, `INVOCATION_ID` in their environment); a process that
//!   leaves both unseen is not stopped with its unit (the machine's teardown
//!   still finds it by `SNAP_COMMON` in its environment).
//! - The journal: `snap logs` is a file per app; no journald rate limits.
//! - snapd itself: no store, assertions, channels, auto-refresh, refresh
//!   gating (`gate-auto-refresh`), `snap revert`, `snap remove` and its
//!   `remove` hook, interface hooks, health checks, `default-configure`,
//!   parallel instances (SNAP_INSTANCE_KEY is always empty), users' own
//!   homes (everything runs as root or drops privileges itself), other
//!   `snapctl` commands (`is-connected`, `set-health`, ...: an error saying so),
//!   numbers written as `1e3` (kept as given by snapd, normalised here).
//! - The fixture lives in the test process: `snapctl` needs it running, and
//!   a test process killed with SIGKILL leaves the services running (as the
//!   rest of the harness does); a normal end or a panic stops everything.

mod change;
pub mod checks;
mod cli;
pub mod config;
mod exec;
mod lifecycle;
pub mod meta;
mod procs;
mod server;
mod services;
mod shared;
mod snapfile;
mod state;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

pub use change::{ChangeError, SetOutcome};
pub use cli::not_installed;
pub use server::Reply;
pub use snapfile::{snapctl_bin, SnapFile};
pub use state::{Action, ServiceOp};

use crate::process::Signal;

/// One installed snap on its own machine; see the module docs. Dropping it
/// stops the services, kills whatever is left of the snap's processes and
/// removes the root (kept with `PGPILOT_KEEP_TEST_DIR=1`).
pub struct Machine {
    /// The label given at install.
    pub name: String,
    pub root: PathBuf,
    shared: Arc<shared::Shared>,
    server: Option<server::Server>,
    /// `snap refresh --hold`.
    held: std::sync::atomic::AtomicBool,
}

impl Machine {
    pub fn snap_name(&self) -> &str {
        &self.shared.snap_name
    }

    /// The current revision ("x1", ...).
    pub fn revision(&self) -> String {
        self.shared.current().rev
    }

    /// The revisions on disk, oldest first, the current one last.
    pub fn revisions(&self) -> Vec<String> {
        let previous = self
            .shared
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        previous
            .iter()
            .map(|r| r.rev.clone())
            .chain([self.revision()])
            .collect()
    }

    /// The snap's `version`.
    pub fn version(&self) -> String {
        self.shared.current().meta.version.clone()
    }

    /// $SNAP of the current revision.
    pub fn snap_dir(&self) -> PathBuf {
        self.shared.current().snap_dir
    }

    /// $SNAP_DATA of the current revision.
    pub fn data_dir(&self) -> PathBuf {
        self.shared.current().data_dir
    }

    /// $SNAP_DATA of revision `rev`.
    pub fn data_dir_of(&self, rev: &str) -> PathBuf {
        self.root.join("var/snap").join(self.snap_name()).join(rev)
    }

    /// $SNAP_COMMON.
    pub fn common_dir(&self) -> PathBuf {
        self.shared.common_dir.clone()
    }

    /// Is $SNAP read-only for the snap's root processes too?
    pub fn snap_read_only(&self) -> bool {
        self.shared.ro_snap.load(Ordering::Relaxed)
    }

    /// The journal file of a service (`snap logs NAME.APP`).
    pub fn journal_path(&self, app: &str) -> PathBuf {
        self.shared
            .journal_dir
            .join(format!("{}.log", self.app_name(app)))
    }

    /// The journal of a service (empty when it never ran).
    pub fn journal(&self, app: &str) -> String {
        std::fs::read_to_string(self.journal_path(app)).unwrap_or_default()
    }

    /// Every hook's output so far.
    pub fn hooks_log(&self) -> String {
        std::fs::read_to_string(self.shared.journal_dir.join("hooks.log")).unwrap_or_default()
    }

    fn app_name<'a>(&self, app: &'a str) -> &'a str {
        app.strip_prefix(self.snap_name())
            .and_then(|a| a.strip_prefix('.'))
            .unwrap_or(app)
    }

    /// `snap set NAME k=v...`: see the module docs. A failing configure hook
    /// is a [`ChangeError`] (see [`ChangeError::of`]).
    pub fn set(&self, pairs: &[(&str, &str)]) -> anyhow::Result<SetOutcome> {
        let patch: Vec<(String, Value)> = pairs
            .iter()
            .map(|(k, v)| {
                let value = config::parse_value(v, config::ValueMode::JsonOrString)
                    .unwrap_or_else(|_| Value::String(v.to_string()));
                (k.to_string(), value)
            })
            .collect();
        self.change_config(&patch)
    }

    /// `snap unset NAME k...`.
    pub fn unset(&self, keys: &[&str]) -> anyhow::Result<SetOutcome> {
        let patch: Vec<(String, Value)> =
            keys.iter().map(|k| (k.to_string(), Value::Null)).collect();
        self.change_config(&patch)
    }

    fn change_config(&self, patch: &[(String, Value)]) -> anyhow::Result<SetOutcome> {
        let rev = self.shared.current();
        anyhow::ensure!(
            self.shared.hook_exists(&rev, "configure"),
            "snap {:?} has no \"configure\" hook",
            self.snap_name()
        );
        let summary = format!("Run configure hook of {:?} snap", self.snap_name());
        self.configure(patch, &summary)
    }

    /// Run the configure hook with `patch` pending; commit and carry out the
    /// service commands it queued when it succeeds.
    fn configure(&self, patch: &[(String, Value)], summary: &str) -> anyhow::Result<SetOutcome> {
        let rev = self.shared.current();
        let done = self.shared.run_hook(&rev, "configure", summary, patch)?;
        for op in &done.queued {
            self.shared.control(op)?;
        }
        Ok(SetOutcome {
            hook_output: done.output,
            services: done.queued.iter().map(ToString::to_string).collect(),
        })
    }

    /// `snap get NAME KEY`: the committed value, `Null` when not set.
    pub fn get(&self, key: &str) -> anyhow::Result<Value> {
        let state = self.shared.state();
        let found =
            config::lookup(&state.config, self.snap_name(), key).map_err(anyhow::Error::msg)?;
        Ok(found.cloned().unwrap_or(Value::Null))
    }

    /// The whole committed configuration (a JSON object).
    pub fn config(&self) -> Value {
        self.shared.state().config.clone()
    }

    fn service_op(&self, action: Action, apps: &[&str]) -> anyhow::Result<ServiceOp> {
        let names: Vec<String> = apps
            .iter()
            .map(|a| format!("{}.{}", self.snap_name(), self.app_name(a)))
            .collect();
        let (apps, explicit) = self
            .shared
            .service_names(&names)
            .map_err(anyhow::Error::msg)?;
        Ok(ServiceOp {
            action,
            apps,
            explicit,
        })
    }

    /// `snap start [--enable] NAME.APP...` (apps as `APP` or `NAME.APP`).
    pub fn start(&self, apps: &[&str], enable: bool) -> anyhow::Result<()> {
        self.shared
            .control(&self.service_op(Action::Start { enable }, apps)?)
    }

    /// `snap stop [--disable] NAME.APP...`.
    pub fn stop(&self, apps: &[&str], disable: bool) -> anyhow::Result<()> {
        self.shared
            .control(&self.service_op(Action::Stop { disable }, apps)?)
    }

    /// `snap restart NAME.APP...` (an inactive service named here starts).
    pub fn restart(&self, apps: &[&str]) -> anyhow::Result<()> {
        self.shared
            .control(&self.service_op(Action::Restart, apps)?)
    }

    /// `(app, enabled, active)` of every service, by app name.
    pub fn services(&self) -> Vec<(String, bool, bool)> {
        self.shared
            .units()
            .iter()
            .map(|u| (u.app.name.clone(), u.enabled(), u.active()))
            .collect()
    }

    /// Every live process of a service's unit (see the `procs` module for
    /// how they are found), sorted.
    pub fn pids(&self, app: &str) -> Vec<i32> {
        self.shared
            .unit(self.app_name(app))
            .map(|u| u.pids())
            .unwrap_or_default()
    }

    /// The main process of an active service.
    pub fn main_pid(&self, app: &str) -> Option<i32> {
        self.shared
            .unit(self.app_name(app))
            .and_then(|u| u.main_pid())
    }

    /// Wait until `app`'s main process is `want_active` (or not).
    pub fn wait_active(
        &self,
        app: &str,
        want_active: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.main_pid(app).is_some() != want_active {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{app} did not become {} within {timeout:?}\n--- journal ---\n{}",
                if want_active { "active" } else { "inactive" },
                crate::file_tail(&self.journal_path(app), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `/snap/bin/NAME.APP ARGS` (or `snap run NAME.APP`) as root, to its
    /// end; `caller_env` is the caller's environment (snapd's variables
    /// and snap.yaml's override it; PATH is always snap-confine's).
    pub fn run_app(
        &self,
        app: &str,
        args: &[&str],
        caller_env: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        let mut cmd = self.app_command(app, args, caller_env)?;
        cmd.output()
            .with_context(|| format!("cannot run {}.{app}", self.snap_name()))
    }

    /// The command [`Machine::run_app`] runs.
    fn app_command(
        &self,
        app: &str,
        args: &[&str],
        caller_env: &[(&str, &str)],
    ) -> anyhow::Result<Command> {
        let rev = self.shared.current();
        let name = self.app_name(app);
        let app_meta = rev
            .meta
            .apps
            .get(name)
            .with_context(|| format!("snap {:?} has no app {name:?}", self.snap_name()))?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = caller_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut spec = self.shared.app_spec(&rev, app_meta, &args, &env);
        spec.cwd = PathBuf::from("/");
        spec.session = false;
        Ok(spec.command())
    }

    /// The fixture's `snapctl ARGS` as one of the snap's apps running as
    /// root would call it (the apps' context).
    pub fn snapctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let rev = self.shared.current();
        let env = self.shared.base_env(&rev, &self.shared.app_cookie(), None);
        Command::new(self.shared.bin_dir.join("snapctl"))
            .args(args)
            .env_clear()
            .envs(&env)
            .output()
            .context("running snapctl")
    }

    /// Processes left of this machine: any whose environment names its
    /// $SNAP_COMMON, and their descendants.
    pub fn leftover_pids(&self) -> Vec<i32> {
        let mark = format!("SNAP_COMMON={}", self.shared.common_dir.display());
        procs::Tracked::default().refresh(&[], &[mark])
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        lifecycle::stop_all(&self.shared);
        for unit in self.shared.units() {
            unit.kill_everything();
        }
        let left = self.leftover_pids();
        procs::signal_all(&left, Signal::SIGKILL);
        procs::wait_all_gone(&left, Instant::now() + Duration::from_secs(5));
        if let Some(mut server) = self.server.take() {
            server.shutdown();
        }
        let snaps = self.root.join("snap");
        if snaps.exists() {
            let _ = lifecycle::make_writable(&snaps, true);
        }
        if crate::keep_test_dir() {
            eprintln!(
                "keeping the snapd fixture's machine {} at {}",
                self.name,
                self.root.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
