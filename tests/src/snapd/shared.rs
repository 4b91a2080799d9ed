//! What the machine's API, its `snapctl` socket and its service
//! supervisors share: paths, the current revision, the environment snapd
//! gives a snap's processes, hooks, and service commands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::exec::{self, LaunchSpec};
use super::meta::{self, App, SnapMeta};
use super::services::Unit;
use super::state::{Action, ServiceOp, State};
use super::ChangeError;

/// snapd's configure hook time limit (configstate.ConfigureHookTimeout).
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// snapd's time limit for the other hooks (hookmgr's defaultHookTimeout).
const HOOK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// snap-confine's PATH; the fixture's bin directory (with `snapctl`) goes
/// first, standing for the base snap's /usr/bin that holds the real one.
const CONFINE_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games";

/// One installed revision.
#[derive(Debug, Clone)]
pub struct Revision {
    /// "x1", "x2", ... (snapd's numbering of unasserted local installs).
    pub rev: String,
    pub meta: Arc<SnapMeta>,
    /// $SNAP: ROOT/snap/NAME/REV.
    pub snap_dir: PathBuf,
    /// $SNAP_DATA: ROOT/var/snap/NAME/REV.
    pub data_dir: PathBuf,
}

/// A hook that succeeded.
pub struct HookDone {
    pub output: String,
    pub queued: Vec<ServiceOp>,
}

pub struct Shared {
    pub root: PathBuf,
    pub snap_name: String,
    /// Holds `snapctl` (ROOT/usr/bin).
    pub bin_dir: PathBuf,
    pub journal_dir: PathBuf,
    /// Stands for root's home directory (/root): ROOT/home-root.
    pub home: PathBuf,
    /// $SNAP_COMMON.
    pub common_dir: PathBuf,
    pub current: Mutex<Revision>,
    /// Older revisions still on disk, oldest first.
    pub previous: Mutex<Vec<Revision>>,
    pub state: Mutex<State>,
    pub units: Mutex<BTreeMap<String, Arc<Unit>>>,
    pub ro_snap: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn current(&self) -> Revision {
        locked(&self.current).clone()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    pub fn unit(&self, app: &str) -> Option<Arc<Unit>> {
        locked(&self.units).get(app).cloned()
    }

    pub fn units(&self) -> Vec<Arc<Unit>> {
        locked(&self.units).values().cloned().collect()
    }

    pub fn app_cookie(&self) -> String {
        self.state().app_cookie.clone()
    }

    /// The environment snapd gives a hook or app of `rev` as root (snapenv,
    /// snap-confine, snap run), before meta/snap.yaml's `environment`.
    pub fn base_env(
        &self,
        rev: &Revision,
        cookie: &str,
        app: Option<&str>,
    ) -> BTreeMap<String, String> {
        let name = &self.snap_name;
        let user_snap = self.home.join("snap").join(name);
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut env: BTreeMap<String, String> = [
            ("LANG", "C.UTF-8".to_string()),
            ("SHELL", "/bin/bash".to_string()),
            ("PATH", format!("{}:{CONFINE_PATH}", path(&self.bin_dir))),
            ("SNAP", path(&rev.snap_dir)),
            ("SNAP_COMMON", path(&self.common_dir)),
            ("SNAP_DATA", path(&rev.data_dir)),
            ("SNAP_NAME", name.clone()),
            ("SNAP_INSTANCE_NAME", name.clone()),
            ("SNAP_INSTANCE_KEY", String::new()),
            ("SNAP_VERSION", rev.meta.version.clone()),
            ("SNAP_REVISION", rev.rev.clone()),
            ("SNAP_ARCH", arch.to_string()),
            (
                "SNAP_LIBRARY_PATH",
                "/var/lib/snapd/lib/gl:/var/lib/snapd/lib/gl32".to_string(),
            ),
            ("SNAP_REEXEC", String::new()),
            ("SNAP_UID", "0".to_string()),
            ("SNAP_EUID", "0".to_string()),
            ("SNAP_REAL_HOME", path(&self.home)),
            ("HOME", path(&user_snap.join(&rev.rev))),
            ("SNAP_USER_DATA", path(&user_snap.join(&rev.rev))),
            ("SNAP_USER_COMMON", path(&user_snap.join("common"))),
            (
                "XDG_RUNTIME_DIR",
                path(&self.root.join(format!("run/user/0/snap.{name}"))),
            ),
            ("SNAP_COOKIE", cookie.to_string()),
            ("SNAP_CONTEXT", cookie.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(app) = app {
            env.insert("SNAP_APP_NAME".to_string(), app.to_string());
        }
        env
    }

    /// How `snap run SNAP.APP ARGS` starts an app of the current revision:
    /// as a service (own session, cwd $SNAP_DATA) or a command (cwd "/").
    pub fn app_spec(
        &self,
        rev: &Revision,
        app: &App,
        args: &[String],
        caller_env: &[(String, String)],
    ) -> LaunchSpec {
        let mut env: BTreeMap<String, String> = caller_env.iter().cloned().collect();
        env.extend(self.base_env(rev, &self.app_cookie(), Some(&app.name)));
        meta::extend_with_expanded(&mut env, &rev.meta.environment);
        meta::extend_with_expanded(&mut env, &app.environment);
        LaunchSpec {
            argv: exec::command_line(&rev.snap_dir, &app.command_chain, &app.command, &env, args),
            env,
            cwd: if app.is_service() {
                rev.data_dir.clone()
            } else {
                PathBuf::from("/")
            },
            ro_snap: self
                .ro_snap
                .load(Ordering::Relaxed)
                .then(|| rev.snap_dir.clone()),
            session: app.is_service(),
        }
    }

    pub fn hook_exists(&self, rev: &Revision, hook: &str) -> bool {
        rev.snap_dir.join("meta/hooks").join(hook).is_file()
    }

    /// Run `hook` of `rev` in a new context that sees the configuration
    /// plus `patch`; commit its configuration changes if it succeeds.
    /// `summary` names the task in snapd's error.
    pub fn run_hook(
        &self,
        rev: &Revision,
        hook: &str,
        summary: &str,
        patch: &[(String, Value)],
    ) -> Result<HookDone, ChangeError> {
        let failed = |reason: String, output: Option<String>| ChangeError {
            task: summary.to_string(),
            reason,
            hook_output: output,
        };
        let strict = rev.meta.strict_option_names();
        let cookie = self
            .state()
            .begin_hook(hook, patch, strict)
            .map_err(|reason| failed(reason, None))?;
        let hook_meta = rev.meta.hooks.get(hook).cloned().unwrap_or_default();
        let mut env = self.base_env(rev, &cookie, None);
        meta::extend_with_expanded(&mut env, &rev.meta.environment);
        meta::extend_with_expanded(&mut env, &hook_meta.environment);
        let mut argv: Vec<String> = hook_meta
            .command_chain
            .iter()
            .map(|c| rev.snap_dir.join(c).to_string_lossy().into_owned())
            .collect();
        argv.push(
            rev.snap_dir
                .join("meta/hooks")
                .join(hook)
                .to_string_lossy()
                .into_owned(),
        );
        let spec = LaunchSpec {
            argv,
            env,
            cwd: PathBuf::from("/"),
            ro_snap: self
                .ro_snap
                .load(Ordering::Relaxed)
                .then(|| rev.snap_dir.clone()),
            session: false,
        };
        let timeout = if hook == "configure" {
            CONFIGURE_TIMEOUT
        } else {
            HOOK_TIMEOUT
        };
        let run = exec::run_hook(&spec, timeout);
        let success = matches!(&run, Ok(r) if r.success);
        let queued = self.state().end_hook(&cookie, success);
        self.log_hook(rev, hook, &run);
        match run {
            Err(e) => Err(failed(format!("run hook {hook:?}: {e:#}"), None)),
            Ok(r) if !r.success => Err(failed(
                format!("run hook {hook:?}: {}", r.error),
                Some(r.output),
            )),
            Ok(r) => Ok(HookDone {
                output: r.output,
                queued: queued.map_err(|e| failed(format!("{e:#}"), None))?,
            }),
        }
    }

    fn log_hook(&self, rev: &Revision, hook: &str, run: &anyhow::Result<exec::HookRun>) {
        let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.journal_dir.join("hooks.log"))
        else {
            return;
        };
        let _ = match run {
            Ok(r) => writeln!(
                log,
                "=== {hook} hook of {} ({}): {} ===\n{}",
                self.snap_name,
                rev.rev,
                if r.success { "ok" } else { "failed" },
                r.output
            ),
            Err(e) => writeln!(log, "=== {hook} hook of {}: cannot run: {e:#} ===", rev.rev),
        };
    }

    /// snapctl's service names: `SNAP.APP` (explicit), or `SNAP` for all
    /// services. Returns (apps, explicit apps), sorted.
    pub fn service_names(&self, names: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
        let rev = self.current();
        let mut apps = Vec::new();
        let mut explicit = Vec::new();
        for name in names {
            if *name == self.snap_name {
                apps.extend(rev.meta.services().map(|a| a.name.clone()));
                continue;
            }
            let app = name
                .strip_prefix(&format!("{}.", self.snap_name))
                .filter(|app| rev.meta.apps.get(*app).is_some_and(App::is_service))
                .ok_or_else(|| format!("unknown service: {name:?}"))?;
            apps.push(app.to_string());
            explicit.push(app.to_string());
        }
        apps.sort();
        apps.dedup();
        explicit.sort();
        explicit.dedup();
        Ok((apps, explicit))
    }

    /// `(SNAP.APP, enabled, active)` for `apps` (all services when empty).
    pub fn service_rows(&self, apps: &[String]) -> Vec<(String, bool, bool)> {
        self.units()
            .iter()
            .filter(|u| apps.is_empty() || apps.contains(&u.app.name))
            .map(|u| {
                (
                    format!("{}.{}", self.snap_name, u.app.name),
                    u.enabled(),
                    u.active(),
                )
            })
            .collect()
    }

    /// Carry out a service command. Every app is tried; the first error is returned.
    pub fn control(&self, op: &ServiceOp) -> anyhow::Result<()> {
        let rev = self.current();
        let mut first_error = None;
        for app in &op.apps {
            let result = (|| -> anyhow::Result<()> {
                let unit = self
                    .unit(app)
                    .with_context(|| format!("unknown service: \"{}.{app}\"", self.snap_name))?;
                let spec = || self.app_spec(&rev, &unit.app, &[], &[]);
                match op.action {
                    Action::Start { enable } => {
                        if enable {
                            unit.set_enabled(true);
                        }
                        unit.start(spec())
                    }
                    Action::Stop { disable } => {
                        if disable {
                            unit.set_enabled(false);
                        }
                        unit.stop();
                        Ok(())
                    }
                    Action::Restart => {
                        // An inactive service is restarted only when named
                        // explicitly or enabled (snapd's restartServicesByStatus).
                        if !op.explicit.contains(app) && !unit.active() && !unit.enabled() {
                            return Ok(());
                        }
                        unit.stop();
                        unit.start(spec())
                    }
                }
            })();
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.context(format!(
                "service command \"{op}\" of snap {:?}",
                self.snap_name
            ))),
            None => Ok(()),
        }
    }
}
