//! The machine-side commands a unit's charm (and pgpilot's callbacks) run:
//! `snap` and `juju-exec`. Each unit's tool directory gets two small
//! scripts that run the fixture's `juju-tool --host SOCKET --unit UNIT
//! TOOL ARGS...`; the test process answers on `host.socket` (mode 0666:
//! pgpilot's callbacks run as `_daemon_`): `snap` against the unit's
//! snapd-fixture machine, `juju-exec` through the unit's agent.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::driver::{Job, ReplySlot, Shared};
use super::Model;
use crate::snapd::{self, Machine, Reply, SnapFile};
use crate::toolsock::SocketServer;

/// juju-exec's default `--timeout`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(300);

pub struct HostServer {
    _socket: SocketServer,
}

impl HostServer {
    pub(crate) fn start(shared: Arc<Shared>, path: &Path) -> anyhow::Result<HostServer> {
        let _ = std::fs::remove_file(path);
        let socket = SocketServer::start(path, 0o666, move |stream| {
            let _ = serve_one(&shared, stream);
        })?;
        Ok(HostServer { _socket: socket })
    }
}

/// Write the unit's `snap` and `juju-exec` scripts.
pub(crate) fn install_tools(model: &Model, dir: &Path, unit: &str) -> anyhow::Result<()> {
    let tool = super::juju_tool_bin()?;
    let bin = model.unit_bin_dir(unit);
    let socket = dir.join("host.socket");
    for name in ["snap", "juju-exec"] {
        let script = format!(
            "#!/bin/sh\n# The simulated machine's {name} (pgpilot-e2e's Juju fixture).\nexec '{}' --host '{}' --unit '{unit}' {name} \"$@\"\n",
            tool.display(),
            socket.display()
        );
        let path = bin.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    // The callbacks run as `_daemon_`: every directory down to the
    // scripts must be searchable.
    let mut at = bin.as_path();
    while at.starts_with(dir) {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755))?;
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    Ok(())
}

fn serve_one(shared: &Arc<Shared>, stream: UnixStream) -> anyhow::Result<()> {
    let request = crate::toolsock::read_request(&stream)?;
    let unit = request["unit"].as_str().unwrap_or_default().to_string();
    let tool = request["tool"].as_str().unwrap_or_default();
    let args = crate::toolsock::strings(&request["args"]);
    let env: Vec<(String, String)> = request["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let stdin = request["stdin"].as_str();
    let reply = match tool {
        "snap" => snap(shared, &unit, &args, stdin, &env),
        "juju-exec" => juju_exec(shared, &args),
        other => Reply {
            stderr: format!("{other}: not a machine command of this fixture\n"),
            code: 1,
            ..Reply::default()
        },
    };
    log(shared, &unit, tool, &args, &reply);
    crate::toolsock::answer(&stream, &reply.stdout, &reply.stderr, reply.code)?;
    Ok(())
}

/// One line per machine command in `host.log` (post-mortem): the unit,
/// the command (values of `snap set` keys holding secrets or TLS material
/// — `tls.*`, `etcd-tls.*`, `dcs-tls.*`, `s3-tls.*` — hidden), the exit code and the first line of its error.
fn log(shared: &Shared, unit: &str, tool: &str, args: &[String], reply: &Reply) {
    let shown: Vec<String> = args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, _))
                if k.contains("password")
                    || k.contains("secret")
                    || k.starts_with("tls.")
                    || k.contains("-tls.") =>
            {
                format!("{k}=<redacted>")
            }
            _ => a.clone(),
        })
        .collect();
    let line = format!(
        "{} {unit}: {tool} {} -> exit {}{}\n",
        chrono_now(),
        shown.join(" "),
        reply.code,
        reply
            .stderr
            .lines()
            .next()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shared.dir.join("host.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Seconds since the epoch with milliseconds, for log lines.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn error(message: impl std::fmt::Display) -> Reply {
    Reply {
        stderr: format!("error: {message}\n"),
        code: 1,
        ..Reply::default()
    }
}

fn snap(
    shared: &Arc<Shared>,
    unit: &str,
    args: &[String],
    stdin: Option<&str>,
    env: &[(String, String)],
) -> Reply {
    let fault = shared
        .snap_faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(unit)
        .cloned();
    if fault.is_some() && args.first() == fault.as_ref() {
        return error("injected fault (pgpilot-e2e's Deployment::fail_snap)");
    }
    if args.first().map(String::as_str) == Some("install") {
        return install(shared, unit, &args[1..]);
    }
    match shared.machine(unit) {
        Some(machine) => machine.cli(args, stdin, env),
        None => snapd::not_installed(args),
    }
}

/// `snap install --dangerous FILE` (a new machine, or a refresh from the
/// file when the snap is there); a store name fails: no store here.
fn install(shared: &Arc<Shared>, unit: &str, args: &[String]) -> Reply {
    let dangerous = args.iter().any(|a| a == "--dangerous");
    let words: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let Some(target) = words.first() else {
        return error("the required argument `<snap>` was not provided");
    };
    let path = Path::new(target.as_str());
    if !target.contains('/') && !target.ends_with(".snap") {
        return error(format!(
            "cannot install {target:?}: this fixture has no store (attach the snap as a resource)"
        ));
    }
    if !dangerous {
        return error(format!(
            "cannot find signatures with metadata for snap {target:?}"
        ));
    }
    let file = match SnapFile::new(path) {
        Ok(f) => f,
        Err(e) => return error(format!("cannot open snap file {target:?}: {e:#}")),
    };
    if let Some(machine) = shared.machine(unit) {
        return match machine.refresh(&file) {
            Ok(()) => Reply {
                stdout: format!("{} {} installed\n", machine.snap_name(), machine.version()),
                ..Reply::default()
            },
            Err(e) => error(e),
        };
    }
    let root = shared.dir.join("machines").join(unit.replace('/', "-"));
    // A failed install leaves nothing behind on a real machine.
    if root.exists() {
        let _ = std::fs::remove_dir_all(&root);
    }
    match Machine::install(&file, unit, &root) {
        Ok(machine) => {
            let out = format!("{} {} installed\n", machine.snap_name(), machine.version());
            shared
                .machines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(unit.to_string(), Arc::new(machine));
            Reply {
                stdout: out,
                ..Reply::default()
            }
        }
        Err(e) => match snapd::ChangeError::of(&e) {
            Some(change) => Reply {
                stderr: format!("{}\n", change.cli_message()),
                code: 1,
                ..Reply::default()
            },
            None => error(format!("cannot install snap file: {e:#}")),
        },
    }
}

/// `juju-exec [-u] UNIT COMMANDS...`: the words after the unit, joined by
/// spaces, run by `sh -c` in a hook context on the unit, in its turn.
fn juju_exec(shared: &Arc<Shared>, args: &[String]) -> Reply {
    let fail = |m: String| Reply {
        stderr: format!("ERROR {m}\n"),
        code: 1,
        ..Reply::default()
    };
    let mut unit = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-u" | "--unit" if unit.is_none() => unit = it.next().cloned(),
            "--timeout" => {
                it.next();
            }
            _ if unit.is_none() && !a.starts_with('-') => unit = Some(a.clone()),
            _ => rest.push(a.clone()),
        }
    }
    let Some(unit) = unit else {
        return fail("missing unit name".into());
    };
    if rest.is_empty() {
        return fail("missing commands".into());
    }
    let Some(agent) = shared.agent(&unit) else {
        return fail(format!("unit {unit:?} not found on this machine"));
    };
    let (tx, rx) = mpsc::sync_channel(1);
    agent.push_job(Job::Exec {
        commands: rest.join(" "),
        reply: ReplySlot(tx),
    });
    match rx.recv_timeout(EXEC_TIMEOUT) {
        Ok(run) => Reply {
            stdout: run.output,
            stderr: String::new(),
            code: run.code,
        },
        Err(_) => fail(format!(
            "timed out waiting for the hook lock of {unit} ({EXEC_TIMEOUT:?})"
        )),
    }
}
