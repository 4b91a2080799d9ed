//! Starting a snap's processes the way `snap run` does: the command line
//! (command-chain, then the command with its `$VAR`s expanded), a clean
//! environment, and $SNAP read-only.
//!
//! $SNAP is read-only for root too: each process starts in a private mount
//! namespace of its own in which $SNAP is a read-only bind mount, so a
//! write fails with EROFS, as on snapd's squashfs mount. Where that is not
//! permitted (no CAP_SYS_ADMIN) only the `chmod -R a-w` remains, which root
//! ignores; `Machine::snap_read_only` says which.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

/// How one process of the snap is started.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// $SNAP, made read-only in the process's mount namespace.
    pub ro_snap: Option<PathBuf>,
    /// setsid (a service: its own session, as systemd starts it); else
    /// only its own process group (as snapd runs hooks).
    pub session: bool,
}

impl LaunchSpec {
    /// The command, ready to spawn (stdio still to be set).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        let ro = self
            .ro_snap
            .as_deref()
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        let session = self.session;
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if session {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::setpgid(0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(path) = &ro {
                    read_only_snap(path);
                }
                Ok(())
            });
        }
        cmd
    }
}

/// In a new mount namespace, make `path` a read-only bind mount of itself.
/// Best effort: without the privilege, nothing changes.
///
/// # Safety
/// Only async-signal-safe calls: this runs between fork and exec.
unsafe fn read_only_snap(path: &CString) {
    let none = std::ptr::null();
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        return;
    }
    let root = c"/";
    if libc::mount(
        none,
        root.as_ptr(),
        none,
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        return;
    }
    if libc::mount(
        path.as_ptr(),
        path.as_ptr(),
        none,
        libc::MS_BIND | libc::MS_REC,
        std::ptr::null(),
    ) != 0
    {
        return;
    }
    libc::mount(
        none,
        path.as_ptr(),
        none,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        std::ptr::null(),
    );
}

/// The command line of an app or hook: command-chain entries (relative to
/// $SNAP), then the command and its arguments expanded against `env`
/// (snap-exec drops arguments that expand to nothing), then `args`.
pub fn command_line(
    snap_dir: &Path,
    chain: &[String],
    command: &str,
    env: &BTreeMap<String, String>,
    args: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = chain
        .iter()
        .map(|c| snap_dir.join(c).to_string_lossy().into_owned())
        .collect();
    let mut words = command.split(' ');
    let program = words.next().unwrap_or_default();
    argv.push(snap_dir.join(program).to_string_lossy().into_owned());
    argv.extend(
        words
            .map(|w| super::meta::expand(w, env))
            .filter(|w| !w.is_empty()),
    );
    argv.extend(args.iter().cloned());
    argv
}

/// How a hook ended.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub success: bool,
    /// stdout and stderr together, as snapd collects them (its buffer
    /// keeps the last 100 lines / 10 KiB).
    pub output: String,
    /// snapd's error text when it failed (osutil.OutputErr).
    pub error: String,
}

/// Run a hook to its end (snapd's osutil.RunAndWait): output collected,
/// the process group killed after `timeout`.
pub fn run_hook(spec: &LaunchSpec, timeout: Duration) -> anyhow::Result<HookRun> {
    let (mut reader, writer) = std::io::pipe().context("creating a pipe")?;
    let mut cmd = spec.command();
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let child: Child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", spec.argv.join(" ")))?;
    drop(cmd); // closes our copies of the pipe's write end
    let pid = child.id() as i32;
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        let _ = out_tx.send(buf);
    });
    let (done_tx, done_rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let (status, timed_out) = match done_rx.recv_timeout(timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            // SAFETY: plain system call; -pid is the hook's own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            (
                done_rx.recv().context("waiting for the killed hook")??,
                true,
            )
        }
    };
    // A background process the hook left may hold the pipe: do not wait for it.
    let raw = out_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let output = limited_tail(&String::from_utf8_lossy(&raw));
    let mut error = output_err(&output, &go_exit_error(&status));
    if timed_out {
        error = format!(
            "{}\n<exceeded maximum runtime of {}>",
            error.trim_end(),
            go_duration(timeout)
        );
    }
    Ok(HookRun {
        success: status.success() && !timed_out,
        output,
        error,
    })
}

/// snapd's LimitedBuffer(100 lines, 10 KiB): the tail.
fn limited_tail(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut tail: String = lines[lines.len().saturating_sub(100)..].concat();
    if tail.len() > 10 * 1024 {
        let mut cut = tail.len() - 10 * 1024;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

/// osutil.OutputErr: the trimmed output (framed by "-----" when it has
/// several lines), else the exec error.
pub fn output_err(output: &str, exec_error: &str) -> String {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        exec_error.to_string()
    } else if trimmed.contains('\n') {
        format!("\n-----\n{trimmed}\n-----")
    } else {
        trimmed.to_string()
    }
}

/// Go's exec.ExitError text: "exit status N" or "signal: NAME".
fn go_exit_error(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let sig = status.signal().unwrap_or(0);
    let name = match sig {
        libc::SIGHUP => "hangup".to_string(),
        libc::SIGINT => "interrupt".to_string(),
        libc::SIGQUIT => "quit".to_string(),
        libc::SIGABRT => "aborted".to_string(),
        libc::SIGKILL => "killed".to_string(),
        libc::SIGSEGV => "segmentation fault".to_string(),
        libc::SIGPIPE => "broken pipe".to_string(),
        libc::SIGTERM => "terminated".to_string(),
        other => format!("signal {other}"),
    };
    format!("signal: {name}")
}

/// Go's Duration.String for whole seconds ("5m0s", "10m0s", "30s").
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapd_hook_error_text() {
        assert_eq!(output_err("  bad value\n", "exit status 1"), "bad value");
        assert_eq!(output_err("", "exit status 1"), "exit status 1");
        assert_eq!(
            output_err("a\nb\n", "exit status 1"),
            "\n-----\na\nb\n-----"
        );
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        let many: String = (0..150).map(|i| format!("line {i}\n")).collect();
        let tail = limited_tail(&many);
        assert!(tail.starts_with("line 50\n") && tail.ends_with("line 149\n"));
    }

    #[test]
    fn command_lines_follow_snap_exec() {
        let env: BTreeMap<String, String> =
            [("SNAP_DATA".to_string(), "/var/snap/s/x1".to_string())]
                .into_iter()
                .collect();
        assert_eq!(
            command_line(
                Path::new("/snap/s/x1"),
                &["bin/chain".to_string()],
                "bin/run --data $SNAP_DATA $EMPTY",
                &env,
                &["extra".to_string()],
            ),
            vec![
                "/snap/s/x1/bin/chain",
                "/snap/s/x1/bin/run",
                "--data",
                "/var/snap/s/x1",
                "extra"
            ]
        );
    }
}
