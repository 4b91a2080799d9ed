//! A snap service as the systemd unit snapd writes for it
//! (`snap.SNAP.APP.service`): `Type=simple`, `Restart=` from
//! `restart-condition`, `RestartSec` 100 ms, at most 5 starts in 10 s
//! (then the unit has failed), `TimeoutStopSec` from `stop-timeout`
//! (snapd's default 30 s), `KillMode` from `stop-mode`,
//! `WorkingDirectory=$SNAP_DATA`, output to the journal (here a file).
//!
//! A supervisor thread per running unit waits for the main process (a
//! pidfd, woken at once when it exits, and every 500 ms to note the unit's
//! new processes), cleans up after it and restarts it when systemd would.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::exec::LaunchSpec;
use super::meta::App;
use super::procs::{self, Tracked};
use crate::process::Signal;

/// systemd's DefaultStartLimitBurst and DefaultStartLimitIntervalSec.
const START_LIMIT_BURST: usize = 5;
const START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
/// How often a running unit's new processes are noted.
const TRACK_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct UnitState {
    enabled: bool,
    spec: Option<LaunchSpec>,
    main_pid: Option<i32>,
    /// The supervisor runs (active, or waiting to restart).
    running: bool,
    stop_requested: bool,
    stop_deadline: Option<Instant>,
    starts: VecDeque<Instant>,
    /// Automatic restarts since the last start by hand.
    restarts: u32,
    /// Every INVOCATION_ID this unit's processes were given.
    invocations: Vec<String>,
    tracked: Tracked,
    supervisor: Option<JoinHandle<()>>,
}

pub struct Unit {
    pub app: App,
    /// `snap.SNAP.APP.service`.
    pub unit_name: String,
    pub journal: PathBuf,
    state: Mutex<UnitState>,
    cond: Condvar,
}

impl Unit {
    pub fn new(app: App, snap: &str, journal: PathBuf, enabled: bool) -> Arc<Unit> {
        Arc::new(Unit {
            unit_name: format!("snap.{snap}.{}.service", app.name),
            app,
            journal,
            state: Mutex::new(UnitState {
                enabled,
                ..UnitState::default()
            }),
            cond: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, UnitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    /// A main process runs (systemd's "active").
    pub fn active(&self) -> bool {
        self.lock().main_pid.is_some()
    }

    pub fn main_pid(&self) -> Option<i32> {
        self.lock().main_pid
    }

    /// Every live process of the unit, sorted.
    pub fn pids(&self) -> Vec<i32> {
        Self::all_processes(&mut self.lock())
    }

    /// `systemctl start`: nothing when it runs already; an error when it
    /// was started too often lately or its program cannot be started.
    pub fn start(self: &Arc<Self>, spec: LaunchSpec) -> anyhow::Result<()> {
        let mut st = self.lock();
        if st.running {
            return Ok(());
        }
        st.spec = Some(spec);
        st.stop_requested = false;
        st.stop_deadline = None;
        st.restarts = 0;
        if !self.may_start(&mut st) {
            anyhow::bail!(
                "{}: start request repeated too quickly ({START_LIMIT_BURST} starts in {}s)",
                self.unit_name,
                START_LIMIT_INTERVAL.as_secs()
            );
        }
        let child = self.spawn(&mut st)?;
        st.running = true;
        let unit = Arc::clone(self);
        st.supervisor = Some(std::thread::spawn(move || unit.supervise(child)));
        Ok(())
    }

    /// `systemctl stop`: the stop signal (to every process of the unit, or
    /// the main one for `KillMode=process`), SIGKILL after the stop timeout.
    pub fn stop(&self) {
        let mut st = self.lock();
        if !st.running {
            return;
        }
        let deadline = Instant::now() + self.app.stop_timeout;
        self.note(&format!("Stopping {}...", self.unit_name));
        st.stop_requested = true;
        st.stop_deadline = Some(deadline);
        let targets = self.kill_targets(&mut st);
        procs::signal_all(&targets, signal_of(self.app.kill_signal));
        self.cond.notify_all();
        st = self.wait_ended(st, deadline);
        if st.running {
            self.note("State 'stop-sigterm' timed out. Killing.");
            let targets = self.kill_targets(&mut st);
            procs::signal_all(&targets, Signal::SIGKILL);
            st = self.wait_ended(st, Instant::now() + Duration::from_secs(10));
        }
        if !st.running {
            self.note(&format!("Stopped {}.", self.unit_name));
        }
        self.join_supervisor(st);
    }

    /// The machine loses power: every process of the unit SIGKILLed at
    /// once, no restart; the unit stays enabled or not as it was.
    pub fn power_off(&self) {
        let mut st = self.lock();
        if !st.running {
            return;
        }
        self.note("Power lost.");
        st.stop_requested = true;
        st.stop_deadline = Some(Instant::now());
        let targets = Self::all_processes(&mut st);
        procs::signal_all(&targets, Signal::SIGKILL);
        self.cond.notify_all();
        let st = self.wait_ended(st, Instant::now() + Duration::from_secs(10));
        self.join_supervisor(st);
    }

    /// Wait (at most until `until`) for the supervisor to see the end.
    fn wait_ended<'a>(
        &self,
        mut st: MutexGuard<'a, UnitState>,
        until: Instant,
    ) -> MutexGuard<'a, UnitState> {
        while st.running && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            st = self
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st
    }

    /// Once the unit has ended, wait for its supervisor thread.
    fn join_supervisor(&self, mut st: MutexGuard<'_, UnitState>) {
        let handle = if st.running {
            None
        } else {
            st.supervisor.take()
        };
        drop(st);
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// After the test: everything this unit ever started, SIGKILLed.
    pub fn kill_everything(&self) {
        let pids = self.pids();
        procs::signal_all(&pids, Signal::SIGKILL);
        procs::wait_all_gone(&pids, Instant::now() + Duration::from_secs(5));
    }

    /// Every live process of the unit: the main one and what carries one
    /// of its invocation ids.
    fn all_processes(st: &mut UnitState) -> Vec<i32> {
        let seeds: Vec<i32> = st.main_pid.into_iter().collect();
        let marks = invocation_marks(&st.invocations);
        st.tracked.refresh(&seeds, &marks)
    }

    fn kill_targets(&self, st: &mut UnitState) -> Vec<i32> {
        if self.app.kill_all {
            Self::all_processes(st)
        } else {
            st.main_pid.into_iter().collect()
        }
    }

    /// systemd's start rate limit: record this start, or refuse it.
    fn may_start(&self, st: &mut UnitState) -> bool {
        let now = Instant::now();
        while st
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > START_LIMIT_INTERVAL)
        {
            st.starts.pop_front();
        }
        if st.starts.len() >= START_LIMIT_BURST {
            self.note("Start request repeated too quickly.");
            self.note("Failed with result 'start-limit-hit'.");
            return false;
        }
        st.starts.push_back(now);
        true
    }

    fn spawn(&self, st: &mut UnitState) -> anyhow::Result<Child> {
        let spec = st.spec.clone().context("internal error: no launch spec")?;
        let invocation = super::state::random_token(32)?.to_ascii_lowercase();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .with_context(|| format!("opening {}", self.journal.display()))?;
        let mut cmd = spec.command();
        cmd.env("INVOCATION_ID", &invocation)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.note(&format!(
                    "Failed at step EXEC spawning {}: {e}",
                    spec.argv[0]
                ));
                anyhow::bail!(
                    "{}: cannot run {}: {e}",
                    self.unit_name,
                    spec.argv.join(" ")
                );
            }
        };
        let pid = child.id() as i32;
        self.note(&format!("Started {} (pid {pid}).", self.unit_name));
        st.invocations.push(invocation);
        st.main_pid = Some(pid);
        st.tracked.add(pid);
        Ok(child)
    }

    fn supervise(self: Arc<Self>, mut child: Child) {
        loop {
            let status = self.wait_main(&mut child);
            let (code, sig) = (status.code(), status.signal());
            self.note(&match (code, sig) {
                (Some(c), _) => format!("Main process exited, code=exited, status={c}"),
                (_, s) => format!(
                    "Main process exited, code=killed, signal={}",
                    s.unwrap_or(0)
                ),
            });
            let (stopping, deadline) = {
                let mut st = self.lock();
                st.main_pid = None;
                let deadline = st
                    .stop_deadline
                    .unwrap_or_else(|| Instant::now() + self.app.stop_timeout);
                (st.stop_requested, deadline)
            };
            if self.app.kill_all {
                // KillMode=control-group: the rest of the unit goes too.
                let rest = {
                    let mut st = self.lock();
                    let marks = invocation_marks(&st.invocations);
                    st.tracked.refresh(&[], &marks)
                };
                if stopping {
                    // They had the stop signal already.
                    if !procs::wait_all_gone(&rest, deadline) {
                        procs::signal_all(&rest, Signal::SIGKILL);
                    }
                } else {
                    procs::terminate(&rest, deadline);
                }
            }
            let mut st = self.lock();
            if st.stop_requested || !self.app.restart_condition.restarts(code, sig) {
                if !st.stop_requested && code != Some(0) {
                    self.note("Failed with result 'exit-code'.");
                }
                return self.finish(st);
            }
            let until = Instant::now() + self.app.restart_delay;
            while !st.stop_requested && Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now());
                st = self
                    .cond
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if st.stop_requested || !self.may_start(&mut st) {
                return self.finish(st);
            }
            st.restarts += 1;
            let counter = st.restarts;
            self.note(&format!(
                "Scheduled restart job, restart counter is at {counter}."
            ));
            match self.spawn(&mut st) {
                Ok(next) => child = next,
                Err(_) => return self.finish(st),
            }
        }
    }

    fn finish(&self, mut st: MutexGuard<'_, UnitState>) {
        st.running = false;
        st.main_pid = None;
        self.cond.notify_all();
    }

    /// Wait for the main process to exit, noting the unit's processes meanwhile.
    fn wait_main(&self, child: &mut Child) -> std::process::ExitStatus {
        let pid = child.id() as i32;
        // SAFETY: plain system call.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(_) => break std::process::ExitStatus::from_raw(1 << 8),
            }
            if pidfd >= 0 {
                let mut fds = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fds, 1, TRACK_EVERY.as_millis() as i32) };
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut st = self.lock();
            let seeds: Vec<i32> = st.main_pid.into_iter().collect();
            st.tracked.refresh(&seeds, &[]);
        };
        if pidfd >= 0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(pidfd) };
        }
        status
    }

    /// A line in the unit's journal, as systemd's own messages appear there.
    fn note(&self, message: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
        {
            let _ = writeln!(f, "systemd[1]: {}: {message}", self.unit_name);
        }
    }
}

fn invocation_marks(invocations: &[String]) -> Vec<String> {
    invocations
        .iter()
        .map(|id| format!("INVOCATION_ID={id}"))
        .collect()
}

fn signal_of(sig: i32) -> Signal {
    Signal::try_from(sig).unwrap_or(Signal::SIGTERM)
}
