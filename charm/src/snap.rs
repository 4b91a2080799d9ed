//! The `charmed-postgresql` snap, driven only through `snap` commands
//! (docs/snap.md): install, hold, set/get, start/stop/restart, services, and
//! `snap run` of its apps (`patronictl`, `etcdctl`, `psql`).
//!
//! [`SnapDriver`] is the seam; [`SnapCli`] runs the real `snap` client with
//! the argv built in [`argv`] and parses its output with [`parse`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SNAP_NAME: &str = "charmed-postgresql";
/// The daemons this charm starts (all `install-mode: disable`).
pub const SERVICE_ETCD: &str = "etcd";
pub const SERVICE_PGPILOT: &str = "pgpilot";

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {command}: {error}")]
    Spawn { command: String, error: String },
    #[error("{command} did not finish within {seconds} s (stopped)")]
    Timeout { command: String, seconds: u64 },
    #[error("{command} printed {output:?}, which is not what was expected: {error}")]
    Parse {
        command: String,
        output: String,
        error: String,
    },
}

impl SnapError {
    pub fn stderr(&self) -> Option<&str> {
        match self {
            SnapError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// What `snap list charmed-postgresql` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    pub version: String,
    pub revision: String,
    /// Refreshes are held (`held` in Notes).
    pub held: bool,
}

/// One line of `snap services charmed-postgresql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Without the snap's prefix: `pgpilot`.
    pub name: String,
    pub enabled: bool,
    pub active: bool,
}

/// The snap commands the charm needs.
pub trait SnapDriver {
    /// `None` when the snap is not installed.
    fn info(&self) -> Result<Option<SnapInfo>, SnapError>;
    /// `snap install --dangerous FILE` (the charm's resource).
    fn install_file(&self, path: &Path) -> Result<(), SnapError>;
    /// `snap install charmed-postgresql --revision N` (the pinned store revision).
    fn install_revision(&self, revision: &str) -> Result<(), SnapError>;
    /// `snap refresh --hold charmed-postgresql`.
    fn hold(&self) -> Result<(), SnapError>;
    /// `snap set charmed-postgresql k=v ...` in one transaction.
    fn set(&self, pairs: &[(String, Value)]) -> Result<(), SnapError>;
    /// `snap get -d charmed-postgresql`: the whole configuration document.
    fn get_all(&self) -> Result<Value, SnapError>;
    fn services(&self) -> Result<Vec<ServiceState>, SnapError>;
    /// `snap start [--enable] charmed-postgresql.<service> ...`.
    fn start(&self, services: &[String], enable: bool) -> Result<(), SnapError>;
    /// `snap stop [--disable] charmed-postgresql.<service> ...`.
    fn stop(&self, services: &[String], disable: bool) -> Result<(), SnapError>;
    fn restart(&self, services: &[String]) -> Result<(), SnapError>;
    /// `snap run charmed-postgresql.<app> args...`; its stdout.
    fn run_app(&self, app: &str, args: &[String], timeout: Duration) -> Result<String, SnapError> {
        self.run_app_with(app, args, None, &[], timeout)
    }
    /// `snap run` of a long command whose whole output is wanted (a
    /// backup's log): both streams whether it succeeds or fails; `Err`
    /// only when it could not run or did not finish.
    fn run_app_captured(
        &self,
        app: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Captured, SnapError> {
        Ok(match self.run_app(app, args, timeout) {
            Ok(stdout) => Captured {
                code: 0,
                stdout,
                stderr: String::new(),
            },
            Err(SnapError::Failed { status, stderr, .. }) => Captured {
                code: exit_code(&status),
                stdout: String::new(),
                stderr,
            },
            Err(e) => return Err(e),
        })
    }
    /// The same with text on stdin and extra environment variables (values
    /// that must not be on a command line).
    fn run_app_with(
        &self,
        app: &str,
        args: &[String],
        stdin: Option<&str>,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<String, SnapError>;
}

/// The outputs of a command run to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The number in `exit status N` (-1: killed by a signal).
pub fn exit_code(status: &str) -> i32 {
    status
        .strip_prefix("exit status ")
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1)
}

/// One `snap` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapCall {
    pub args: Vec<String>,
    /// Values of `key=value` arguments are secret (snap set of passwords).
    pub redact: bool,
}

impl SnapCall {
    fn new(args: Vec<String>) -> Self {
        SnapCall {
            args,
            redact: false,
        }
    }

    pub fn display(&self) -> String {
        let mut parts = vec!["snap".to_string()];
        for a in &self.args {
            match a.split_once('=') {
                Some((k, _)) if self.redact && !k.starts_with('-') && is_secret_key(k) => {
                    parts.push(format!("{k}=<redacted>"))
                }
                _ => parts.push(a.clone()),
            }
        }
        parts.join(" ")
    }
}

/// Keys whose values never appear in messages (and the TLS material:
/// `tls.key` is secret, the certificates are pages of PEM).
pub fn is_secret_key(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.starts_with("tls.")
        || key.starts_with("dcs-tls.")
        || key.starts_with("etcd-tls.")
}

pub mod argv {
    use super::*;

    fn full(services: &[String]) -> impl Iterator<Item = String> + '_ {
        services.iter().map(|s| format!("{SNAP_NAME}.{s}"))
    }

    pub fn list() -> SnapCall {
        SnapCall::new(vec!["list".into(), SNAP_NAME.into()])
    }

    pub fn install_file(path: &Path) -> SnapCall {
        SnapCall::new(vec![
            "install".into(),
            "--dangerous".into(),
            path.display().to_string(),
        ])
    }

    pub fn install_revision(revision: &str) -> SnapCall {
        SnapCall::new(vec![
            "install".into(),
            SNAP_NAME.into(),
            "--revision".into(),
            revision.into(),
        ])
    }

    pub fn hold() -> SnapCall {
        SnapCall::new(vec!["refresh".into(), "--hold".into(), SNAP_NAME.into()])
    }

    /// Strings are passed as they are, everything else as JSON (snapd parses
    /// a value as JSON when it can); null unsets the key (`key!`).
    pub fn set(pairs: &[(String, Value)]) -> SnapCall {
        let mut args = vec!["set".to_string(), SNAP_NAME.to_string()];
        for (k, v) in pairs {
            args.push(match v {
                // `key!` unsets.
                Value::Null => format!("{k}!"),
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            });
        }
        SnapCall { args, redact: true }
    }

    pub fn get_all() -> SnapCall {
        SnapCall::new(vec!["get".into(), "-d".into(), SNAP_NAME.into()])
    }

    pub fn services() -> SnapCall {
        SnapCall::new(vec!["services".into(), SNAP_NAME.into()])
    }

    pub fn start(services: &[String], enable: bool) -> SnapCall {
        let mut args = vec!["start".to_string()];
        if enable {
            args.push("--enable".into());
        }
        args.extend(full(services));
        SnapCall::new(args)
    }

    pub fn stop(services: &[String], disable: bool) -> SnapCall {
        let mut args = vec!["stop".to_string()];
        if disable {
            args.push("--disable".into());
        }
        args.extend(full(services));
        SnapCall::new(args)
    }

    pub fn restart(services: &[String]) -> SnapCall {
        let mut args = vec!["restart".to_string()];
        args.extend(full(services));
        SnapCall::new(args)
    }

    pub fn run_app(app: &str, app_args: &[String]) -> SnapCall {
        let mut args = vec!["run".to_string(), format!("{SNAP_NAME}.{app}")];
        args.extend(app_args.iter().cloned());
        SnapCall::new(args)
    }
}

pub mod parse {
    use super::*;

    /// `snap list NAME`: a header, then `Name Version Rev Tracking Publisher Notes`.
    pub fn list(out: &str) -> Result<Option<SnapInfo>, SnapError> {
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&SNAP_NAME) {
                if cols.len() < 3 {
                    break;
                }
                let notes = cols.get(5).copied().unwrap_or("-");
                return Ok(Some(SnapInfo {
                    version: cols[1].to_string(),
                    revision: cols[2].to_string(),
                    held: notes.split(',').any(|n| n == "held"),
                }));
            }
        }
        if out.trim().is_empty() {
            return Ok(None);
        }
        Err(SnapError::Parse {
            command: "snap list".into(),
            output: out.chars().take(300).collect(),
            error: format!("no {SNAP_NAME} line"),
        })
    }

    /// `snap services NAME`: `Service Startup Current Notes`.
    pub fn services(out: &str) -> Result<Vec<ServiceState>, SnapError> {
        let mut services = Vec::new();
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 3 {
                continue;
            }
            let name = cols[0]
                .strip_prefix(SNAP_NAME)
                .and_then(|s| s.strip_prefix('.'))
                .ok_or_else(|| SnapError::Parse {
                    command: "snap services".into(),
                    output: line.to_string(),
                    error: format!("not a {SNAP_NAME} service"),
                })?;
            services.push(ServiceState {
                name: name.to_string(),
                enabled: cols[1] == "enabled",
                active: cols[2] == "active",
            });
        }
        Ok(services)
    }

    pub fn config(out: &str) -> Result<Value, SnapError> {
        if out.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_str(out).map_err(|e| SnapError::Parse {
            command: "snap get -d".into(),
            output: out.chars().take(300).collect(),
            error: e.to_string(),
        })
    }
}

/// Runs the real `snap` client.
#[derive(Debug, Clone)]
pub struct SnapCli {
    /// `snap`, found on PATH, unless set (tests).
    pub program: PathBuf,
    /// How long a snap command may take (an install downloads).
    pub timeout: Duration,
}

impl Default for SnapCli {
    fn default() -> Self {
        SnapCli {
            program: PathBuf::from("snap"),
            timeout: Duration::from_secs(600),
        }
    }
}

impl SnapCli {
    fn run(&self, call: &SnapCall, timeout: Duration) -> Result<String, SnapError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&call.args);
        run_with_timeout(cmd, &call.display(), None, timeout)
    }

    fn run_default(&self, call: &SnapCall) -> Result<String, SnapError> {
        self.run(call, self.timeout)
    }
}

/// Run a command, kill it after `timeout`; stdout, or an error with stderr.
pub fn run_with_timeout(
    cmd: Command,
    display: &str,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, SnapError> {
    let (status, out, err) = run_capture(cmd, display, stdin, timeout)?;
    if status.success() {
        Ok(out)
    } else {
        Err(SnapError::Failed {
            command: display.to_string(),
            status: match status.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            },
            stderr: err.trim().to_string(),
        })
    }
}

/// Run a command to its end (killed after `timeout`: an error): its exit
/// status, stdout and stderr.
pub fn run_capture(
    mut cmd: Command,
    display: &str,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String, String), SnapError> {
    // A group of its own, so a timeout ends what it started too (`snap
    // run` starting psql, say), not only the command itself.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| SnapError::Spawn {
        command: display.to_string(),
        error: e.to_string(),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        // A program that exits without reading is reported by its status.
        let _ = pipe.write_all(text.as_bytes());
    }
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                return Err(SnapError::Timeout {
                    command: display.to_string(),
                    seconds: timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(SnapError::Spawn {
                    command: display.to_string(),
                    error: e.to_string(),
                })
            }
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    Ok((status, out, err))
}

impl SnapDriver for SnapCli {
    fn info(&self) -> Result<Option<SnapInfo>, SnapError> {
        match self.run(&argv::list(), Duration::from_secs(60)) {
            Ok(out) => parse::list(&out),
            Err(SnapError::Failed { stderr, .. }) if stderr.contains("no matching snaps") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn install_file(&self, path: &Path) -> Result<(), SnapError> {
        self.run_default(&argv::install_file(path)).map(drop)
    }

    fn install_revision(&self, revision: &str) -> Result<(), SnapError> {
        self.run_default(&argv::install_revision(revision))
            .map(drop)
    }

    fn hold(&self) -> Result<(), SnapError> {
        self.run_default(&argv::hold()).map(drop)
    }

    fn set(&self, pairs: &[(String, Value)]) -> Result<(), SnapError> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.run_default(&argv::set(pairs)).map(drop)
    }

    fn get_all(&self) -> Result<Value, SnapError> {
        parse::config(&self.run(&argv::get_all(), Duration::from_secs(60))?)
    }

    fn services(&self) -> Result<Vec<ServiceState>, SnapError> {
        parse::services(&self.run(&argv::services(), Duration::from_secs(60))?)
    }

    fn start(&self, services: &[String], enable: bool) -> Result<(), SnapError> {
        self.run_default(&argv::start(services, enable)).map(drop)
    }

    fn stop(&self, services: &[String], disable: bool) -> Result<(), SnapError> {
        self.run_default(&argv::stop(services, disable)).map(drop)
    }

    fn restart(&self, services: &[String]) -> Result<(), SnapError> {
        self.run_default(&argv::restart(services)).map(drop)
    }

    fn run_app_captured(
        &self,
        app: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Captured, SnapError> {
        let call = argv::run_app(app, args);
        let mut cmd = Command::new(&self.program);
        cmd.args(&call.args);
        let (status, stdout, stderr) = run_capture(cmd, &call.display(), None, timeout)?;
        Ok(Captured {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }

    fn run_app_with(
        &self,
        app: &str,
        args: &[String],
        stdin: Option<&str>,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<String, SnapError> {
        let call = argv::run_app(app, args);
        let mut cmd = Command::new(&self.program);
        cmd.args(&call.args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(cmd, &call.display(), stdin, timeout)
    }
}

/// The value at a dotted snap key in a `snap get -d` document.
pub fn lookup<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(doc, |node, part| node.as_object()?.get(part))
}

/// A key's text, when it is set and not blank.
pub fn text<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    lookup(doc, key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Does the snap hold `desired` at a key? snapd stores `5432` as a number and
/// `"12345"` given on the command line as a number too, so a string and a
/// number with the same text are the same value.
pub fn same_value(desired: &Value, observed: Option<&Value>) -> bool {
    let Some(observed) = observed else {
        return desired.is_null();
    };
    match (desired, observed) {
        (Value::String(d), Value::Number(o)) => d == &o.to_string(),
        (Value::String(d), Value::Bool(o)) => d == &o.to_string(),
        (Value::Number(d), Value::String(o)) => o == &d.to_string(),
        (Value::Array(d), Value::String(o)) => {
            serde_json::from_str::<Value>(o).ok() == Some(Value::Array(d.clone()))
        }
        _ => desired == observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(call: &SnapCall) -> String {
        let mut v = vec!["snap".to_string()];
        v.extend(call.args.iter().cloned());
        v.join(" ")
    }

    #[test]
    fn argv_of_every_command() {
        let svc = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let rows = [
            (argv::list(), "snap list charmed-postgresql"),
            (
                argv::install_file(Path::new("/var/lib/juju/resources/charmed-postgresql.snap")),
                "snap install --dangerous /var/lib/juju/resources/charmed-postgresql.snap",
            ),
            (
                argv::install_revision("393"),
                "snap install charmed-postgresql --revision 393",
            ),
            (argv::hold(), "snap refresh --hold charmed-postgresql"),
            (argv::get_all(), "snap get -d charmed-postgresql"),
            (argv::services(), "snap services charmed-postgresql"),
            (
                argv::start(&svc(&["etcd", "pgpilot"]), true),
                "snap start --enable charmed-postgresql.etcd charmed-postgresql.pgpilot",
            ),
            (
                argv::stop(&svc(&["pgpilot"]), false),
                "snap stop charmed-postgresql.pgpilot",
            ),
            (
                argv::stop(&svc(&["etcd"]), true),
                "snap stop --disable charmed-postgresql.etcd",
            ),
            (
                argv::restart(&svc(&["pgpilot"])),
                "snap restart charmed-postgresql.pgpilot",
            ),
            (
                argv::run_app("patronictl", &svc(&["list", "-f", "json"])),
                "snap run charmed-postgresql.patronictl list -f json",
            ),
        ];
        for (call, expected) in rows {
            assert_eq!(line(&call), expected);
        }
    }

    #[test]
    fn set_passes_strings_raw_and_the_rest_as_json() {
        let call = argv::set(&[
            ("pgpilot.cluster.name".into(), json!("postgresql-0")),
            ("pgpilot.postgresql.port".into(), json!(5432)),
            (
                "pgpilot.dcs.endpoints".into(),
                json!(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]),
            ),
            (
                "pgpilot.postgresql.authentication.superuser.password".into(),
                json!("s3cret"),
            ),
            (
                "pgpilot.postgresql.parameters.shared-buffers".into(),
                Value::Null,
            ),
        ]);
        assert_eq!(
            call.args,
            vec![
                "set",
                "charmed-postgresql",
                "pgpilot.cluster.name=postgresql-0",
                "pgpilot.postgresql.port=5432",
                r#"pgpilot.dcs.endpoints=["http://10.0.0.1:2379","http://10.0.0.2:2379"]"#,
                "pgpilot.postgresql.authentication.superuser.password=s3cret",
                "pgpilot.postgresql.parameters.shared-buffers!",
            ]
        );
        let shown = call.display();
        assert!(shown.contains("superuser.password=<redacted>"), "{shown}");
        assert!(
            shown.contains("pgpilot.cluster.name=postgresql-0"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn parse_list() {
        let out = "Name                Version  Rev  Tracking  Publisher  Notes\n\
                   charmed-postgresql  16.4     x1   -         -          held\n";
        assert_eq!(
            parse::list(out).unwrap(),
            Some(SnapInfo {
                version: "16.4".into(),
                revision: "x1".into(),
                held: true
            })
        );
        let out = "Name                Version  Rev  Tracking       Publisher   Notes\n\
                   charmed-postgresql  16.4     393  latest/stable  canonical✓  -\n";
        assert!(!parse::list(out).unwrap().unwrap().held);
        assert!(parse::list("Name Version\nother 1 2 - - -\n").is_err());
    }

    #[test]
    fn parse_services() {
        let out = "Service                       Startup   Current   Notes\n\
                   charmed-postgresql.etcd       enabled   active    -\n\
                   charmed-postgresql.pgbouncer  disabled  inactive  -\n\
                   charmed-postgresql.pgpilot    enabled   inactive  -\n";
        assert_eq!(
            parse::services(out).unwrap(),
            vec![
                ServiceState {
                    name: "etcd".into(),
                    enabled: true,
                    active: true
                },
                ServiceState {
                    name: "pgbouncer".into(),
                    enabled: false,
                    active: false
                },
                ServiceState {
                    name: "pgpilot".into(),
                    enabled: true,
                    active: false
                },
            ]
        );
    }

    #[test]
    fn lookup_and_compare() {
        let doc = json!({"pgpilot": {"postgresql": {"port": 5432,
            "authentication": {"superuser": {"password": 12345}}},
            "dcs": {"endpoints": ["http://a:2379"]}}});
        assert_eq!(lookup(&doc, "pgpilot.postgresql.port"), Some(&json!(5432)));
        assert_eq!(lookup(&doc, "pgpilot.nothing.here"), None);
        assert!(same_value(
            &json!(5432),
            lookup(&doc, "pgpilot.postgresql.port")
        ));
        assert!(same_value(
            &json!("12345"),
            lookup(&doc, "pgpilot.postgresql.authentication.superuser.password")
        ));
        assert!(same_value(
            &json!(["http://a:2379"]),
            lookup(&doc, "pgpilot.dcs.endpoints")
        ));
        assert!(!same_value(
            &json!(["http://a:2379", "http://b:2379"]),
            lookup(&doc, "pgpilot.dcs.endpoints")
        ));
        assert!(!same_value(&json!("x"), None));
    }

    #[test]
    fn the_cli_reports_stderr_and_timeouts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("snap");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$1\" in\n list) echo 'error: no matching snaps installed' >&2; exit 1;;\n services) printf 'Service Startup Current Notes\\ncharmed-postgresql.etcd enabled active -\\n';;\n get) echo '{\"etcd\":{\"name\":\"postgresql-0\"}}';;\n set) echo 'error: cannot perform the following tasks: invalid pgpilot.postgresql.port' >&2; exit 1;;\n run) sleep 30 & echo $! > \"$(dirname \"$0\")/child\"; wait;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = SnapCli {
            program: fake,
            timeout: Duration::from_secs(10),
        };
        assert_eq!(cli.info().unwrap(), None);
        assert_eq!(cli.services().unwrap().len(), 1);
        assert_eq!(
            lookup(&cli.get_all().unwrap(), "etcd.name"),
            Some(&json!("postgresql-0"))
        );
        let err = cli
            .set(&[("pgpilot.postgresql.port".into(), json!("abc"))])
            .unwrap_err();
        assert!(err
            .stderr()
            .unwrap()
            .contains("invalid pgpilot.postgresql.port"));
        let err = cli
            .run_app("patronictl", &[], Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, SnapError::Timeout { .. }), "{err}");
        // What the command started went with it.
        let child = std::fs::read_to_string(dir.path().join("child")).unwrap();
        let child = nix::unistd::Pid::from_raw(child.trim().parse().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(child, None).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the command's child outlived its timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
