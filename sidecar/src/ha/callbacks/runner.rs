//! Running callback programs in the background, as Patroni's
//! `CallbackExecutor` does:
//!
//! - one callback at a time per member: a new one kills the one still
//!   running (SIGKILL to its process group, so its children go too) and
//!   then starts; of several queued at once only the newest runs;
//! - `on_reload` has a lane of its own, so a reload never kills an
//!   `on_start`/`on_stop`/`on_role_change` (say, one moving a virtual IP);
//! - a callback still running after `callback_timeout` is killed likewise
//!   (Patroni has no time limit);
//! - the program runs as pgpilot's own user with pgpilot's environment,
//!   stdin and stdout on /dev/null, in its own process group; its exit
//!   status and the end of its stderr are logged.
//!
//! [`Runner::submit`] only queues: the lanes are tasks of their own, so the
//! HA loop never waits for a callback.

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Callback;

/// How much of a callback's stderr is kept for the log.
const STDERR_TAIL: usize = 4096;
/// How long the stderr of a finished callback is still read: a child it left
/// in the background may hold the pipe open.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// One program to run: the callback and its whole command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub callback: Callback,
    pub argv: Vec<String>,
}

impl Request {
    fn display(&self) -> String {
        format!("{:?}", self.argv)
    }
}

/// A lane: its queue and its task, started at its first request.
type Lane = Mutex<Option<(UnboundedSender<Request>, JoinHandle<()>)>>;

pub struct Runner {
    /// `callback_timeout` in milliseconds; a reload may change it.
    timeout: Arc<AtomicU64>,
    /// on_start, on_stop, on_restart, on_role_change.
    main: Lane,
    /// on_reload.
    reload: Lane,
    /// Set at shutdown: later requests are dropped.
    finished: Mutex<bool>,
}

impl Runner {
    pub fn new(timeout: Duration) -> Self {
        Runner {
            timeout: Arc::new(AtomicU64::new(timeout.as_millis() as u64)),
            main: Mutex::new(None),
            reload: Mutex::new(None),
            finished: Mutex::new(false),
        }
    }

    /// Callbacks started from now on may run this long.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout.load(Ordering::Relaxed))
    }

    /// Queue `request` on its lane; never waits. Must be called from within
    /// the tokio runtime (the lane's task starts on first use).
    pub fn submit(&self, request: Request) {
        if *self.finished.lock().unwrap_or_else(|e| e.into_inner()) {
            tracing::warn!(
                callback = request.callback.as_str(),
                "not running the callback: pgpilot is shutting down"
            );
            return;
        }
        let lane = match request.callback {
            Callback::OnReload => &self.reload,
            _ => &self.main,
        };
        let mut lane = lane.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, _) = lane.get_or_insert_with(|| {
            let (tx, rx) = unbounded_channel();
            (tx, tokio::spawn(run_lane(rx, self.timeout.clone())))
        });
        if let Err(e) = tx.send(request) {
            tracing::error!(
                callback = e.0.callback.as_str(),
                "the callback lane is gone"
            );
        }
    }

    /// Take no more requests and wait for the callbacks still running, each
    /// at most until its timeout.
    pub async fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let lanes: Vec<_> = [&self.main, &self.reload]
            .into_iter()
            .filter_map(|lane| lane.lock().unwrap_or_else(|e| e.into_inner()).take())
            .collect();
        for (tx, task) in lanes {
            // Closing the queue ends the lane once its callback is done.
            drop(tx);
            let _ = tokio::time::timeout(self.timeout() + Duration::from_secs(2), task).await;
        }
    }
}

/// One lane: run its requests one after the other, the newest first.
async fn run_lane(mut queue: UnboundedReceiver<Request>, timeout: Arc<AtomicU64>) {
    let mut next = None;
    loop {
        let mut request = match next.take() {
            Some(r) => r,
            None => match queue.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        // Of several queued at once only the newest runs (Patroni keeps
        // only the last command given while one ran).
        while let Ok(newer) = queue.try_recv() {
            tracing::info!(
                callback = request.callback.as_str(),
                "skipping callback {}: {} came after it",
                request.callback.as_str(),
                newer.callback.as_str()
            );
            request = newer;
        }
        let limit = Duration::from_millis(timeout.load(Ordering::Relaxed));
        next = run_one(&request, &mut queue, limit).await;
    }
}

/// How a callback ended.
#[derive(Debug)]
enum End {
    Exited(ExitStatus),
    TimedOut,
    /// A newer callback came while it ran.
    Superseded(Request),
    WaitFailed(std::io::Error),
}

/// Run one callback to its end, its timeout or the arrival of a newer one,
/// which is returned to run next.
async fn run_one(
    request: &Request,
    queue: &mut UnboundedReceiver<Request>,
    timeout: Duration,
) -> Option<Request> {
    let name = request.callback.as_str();
    let mut cmd = tokio::process::Command::new(&request.argv[0]);
    cmd.args(&request.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: it can be killed with its children, and a Ctrl-C
        // meant for pgpilot does not reach it.
        .process_group(0);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(
                callback = name,
                "cannot run callback {}: {e}",
                request.display()
            );
            return None;
        }
    };
    let pid = child.id().map(|p| p as i32);
    tracing::info!(
        callback = name,
        pid,
        "running callback {}",
        request.display()
    );
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut open = true;
    let end = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(status) => End::Exited(status),
                Err(e) => End::WaitFailed(e),
            },
            _ = &mut deadline => break End::TimedOut,
            newer = queue.recv(), if open => match newer {
                Some(newer) => break End::Superseded(newer),
                // Shutting down: let this one finish (or time out).
                None => open = false,
            },
        }
    };
    if matches!(end, End::TimedOut | End::Superseded(_)) {
        if let Some(pid) = pid {
            kill_group(pid, name);
        }
        // Reap it; if it could not be killed (a program that became another
        // user, say through sudo), wait for it, as Patroni does.
        let _ = child.wait().await;
    }
    let tail = match stderr {
        Some(reader) => {
            let abort = reader.abort_handle();
            match tokio::time::timeout(STDERR_GRACE, reader).await {
                Ok(Ok(bytes)) => crate::postgres::process::last_lines(
                    String::from_utf8_lossy(&bytes).as_ref(),
                    5,
                ),
                _ => {
                    abort.abort();
                    String::new()
                }
            }
        }
        None => String::new(),
    };
    let seconds = started.elapsed().as_secs_f64();
    // Logged only when there is some.
    let tail = Some(tail).filter(|t| !t.is_empty());
    let tail = tail.as_deref();
    match end {
        End::Exited(status) if status.success() => {
            tracing::info!(
                callback = name,
                seconds,
                stderr = tail,
                "callback {name} exited with status 0"
            );
            None
        }
        End::Exited(status) => {
            tracing::warn!(
                callback = name,
                seconds,
                stderr = tail,
                "callback {name} failed: {status}"
            );
            None
        }
        End::TimedOut => {
            tracing::warn!(
                callback = name,
                seconds,
                stderr = tail,
                "callback {name} still ran after callback_timeout ({}s): killed it and its process group",
                timeout.as_secs()
            );
            None
        }
        End::Superseded(newer) => {
            tracing::warn!(
                callback = name,
                seconds,
                stderr = tail,
                "killed callback {name} because it was still running when {} was due",
                newer.callback.as_str()
            );
            Some(newer)
        }
        End::WaitFailed(e) => {
            tracing::warn!(callback = name, "cannot wait for callback {name}: {e}");
            None
        }
    }
}

/// SIGKILL the callback's process group: the program and what it started.
fn kill_group(pid: i32, name: &str) {
    if let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(
                callback = name,
                pid,
                "cannot kill callback {name}: {e}; waiting for it to end"
            );
        }
    }
}

/// Read a pipe to its end, keeping the last [`STDERR_TAIL`] bytes.
async fn read_tail(mut pipe: tokio::process::ChildStderr) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// A script that logs `<action> start` to `out`, sleeps `$SLEEP` (its
    /// first argument), then logs `<action> end`; its pid goes to `out.pid`.
    fn script(dir: &Path) -> PathBuf {
        let path = dir.join("cb.sh");
        std::fs::write(
            &path,
            "#!/bin/sh\nout=\"$1\"; pause=\"$2\"; action=\"$3\"\n\
             echo \"$action start $4 $5\" >> \"$out\"\n\
             echo \"about to sleep\" >&2\n\
             sleep \"$pause\" &\necho $! > \"$out.$action.pid\"\nwait\n\
             echo \"$action end\" >> \"$out\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn request(script: &Path, out: &Path, pause: &str, callback: Callback) -> Request {
        Request {
            callback,
            argv: vec![
                script.display().to_string(),
                out.display().to_string(),
                pause.to_string(),
                callback.as_str().to_string(),
                "primary".into(),
                "demo".into(),
            ],
        }
    }

    fn lines(out: &Path) -> Vec<String> {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(pid_file: &Path) -> bool {
        let Ok(pid) = std::fs::read_to_string(pid_file) else {
            return false;
        };
        let pid: i32 = pid.trim().parse().unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_with_arguments_and_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(10));
        let before = Instant::now();
        runner.submit(request(&script, &out, "0", Callback::OnStart));
        assert!(before.elapsed() < Duration::from_millis(100));
        wait_for("the callback to end", || lines(&out).len() == 2).await;
        assert_eq!(lines(&out), ["on_start start primary demo", "on_start end"]);
        runner.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_callback_kills_the_running_one_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(30));
        runner.submit(request(&script, &out, "20", Callback::OnStop));
        let sleeper = dir.path().join("out.on_stop.pid");
        wait_for("on_stop to start its sleep", || alive(&sleeper)).await;
        runner.submit(request(&script, &out, "0", Callback::OnRoleChange));
        wait_for("on_role_change to end", || lines(&out).len() == 3).await;
        assert_eq!(
            lines(&out),
            [
                "on_stop start primary demo",
                "on_role_change start primary demo",
                "on_role_change end"
            ]
        );
        assert!(!alive(&sleeper), "the killed callback's child survived");
        runner.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_reload_does_not_kill_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(30));
        runner.submit(request(&script, &out, "1", Callback::OnRoleChange));
        wait_for("on_role_change to start", || lines(&out).len() == 1).await;
        runner.submit(request(&script, &out, "0", Callback::OnReload));
        wait_for("both to end", || lines(&out).len() == 4).await;
        let all = lines(&out);
        assert!(all.contains(&"on_role_change end".to_string()), "{all:?}");
        assert!(all.contains(&"on_reload end".to_string()), "{all:?}");
        runner.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callback_is_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(1));
        let started = Instant::now();
        runner.submit(request(&script, &out, "30", Callback::OnRoleChange));
        let sleeper = dir.path().join("out.on_role_change.pid");
        wait_for("the sleep to start", || alive(&sleeper)).await;
        wait_for("the timeout to kill it", || !alive(&sleeper)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(lines(&out), ["on_role_change start primary demo"]);
        // The lane goes on with the next one.
        runner.submit(request(&script, &out, "0", Callback::OnStart));
        wait_for("on_start to end", || lines(&out).len() == 3).await;
        runner.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finish_waits_for_the_running_callback_within_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(10));
        runner.submit(request(&script, &out, "1", Callback::OnStop));
        wait_for("on_stop to start", || lines(&out).len() == 1).await;
        runner.finish().await;
        assert_eq!(lines(&out), ["on_stop start primary demo", "on_stop end"]);
        // Nothing runs after the shutdown.
        runner.submit(request(&script, &out, "0", Callback::OnStart));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lines(&out).len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_program_is_logged_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (script, out) = (script(dir.path()), dir.path().join("out"));
        let runner = Runner::new(Duration::from_secs(10));
        runner.submit(Request {
            callback: Callback::OnStart,
            argv: vec!["/nonexistent/callback".into()],
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        runner.submit(request(&script, &out, "0", Callback::OnStop));
        wait_for("the next callback to run", || lines(&out).len() == 2).await;
        runner.finish().await;
    }
}
