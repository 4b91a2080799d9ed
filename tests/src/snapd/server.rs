//! The machine's stand-in for snapd's /run/snapd-snap.socket: the fixture's
//! `snapctl` (src/bin/snapctl.rs) sends its arguments and cookie, one JSON
//! line `{"cookie": "...", "args": [...]}`, and gets back one JSON line
//! `{"stdout": "...", "stderr": "...", "exit-code": N}`. The caller's uid
//! comes from the socket (SO_PEERCRED), as snapd takes it.
//!
//! The commands follow snapd's overlord/hookstate/ctlcmd: `get`, `set`,
//! `unset`, `services`, `start`, `stop`, `restart`; errors read
//! `error: snapctl: ...` with exit code 1.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Map, Value};

use super::config::{self, ValueMode};
use super::shared::Shared;
use super::state::{Action, ServiceOp};
use crate::toolsock::SocketServer;

/// The listening socket: `snapctl` requests served by [`serve_one`].
/// Like snapd-snap.socket, any uid may connect (snapd checks the uid per
/// command).
pub struct Server(SocketServer);

impl Server {
    pub fn start(shared: Arc<Shared>, path: &Path) -> anyhow::Result<Server> {
        let server = SocketServer::start(path, 0o666, move |stream| {
            let _ = serve_one(&shared, stream);
        })?;
        Ok(Server(server))
    }

    pub fn shutdown(&mut self) {
        self.0.shutdown();
    }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve_one(shared: &Shared, stream: UnixStream) -> anyhow::Result<()> {
    let uid = peer_uid(&stream).context("no peer credentials")?;
    let request = crate::toolsock::read_request(&stream)?;
    let cookie = request["cookie"].as_str().unwrap_or_default().to_string();
    let args = crate::toolsock::strings(&request["args"]);
    let reply = run(shared, &cookie, &args, uid);
    crate::toolsock::answer(&stream, &reply.stdout, &reply.stderr, reply.code)?;
    Ok(())
}

/// What `snapctl` prints and its exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

fn ok(stdout: String) -> Reply {
    Reply {
        stdout,
        ..Reply::default()
    }
}

/// snapd's non-root commands (ctlcmd.nonRootAllowed).
const NON_ROOT: &[&str] = &[
    "get",
    "services",
    "set-health",
    "is-connected",
    "system-mode",
    "refresh",
    "model",
    "version",
    "is-ready",
    "tasks",
    "change",
];
/// Real snapctl commands this fixture does not provide.
const NOT_PROVIDED: &[&str] = &[
    "set-health",
    "is-connected",
    "system-mode",
    "refresh",
    "model",
    "version",
    "is-ready",
    "tasks",
    "change",
    "reboot",
    "mount",
    "umount",
    "kmod",
    "install",
    "remove",
    "fde-setup-request",
    "fde-setup-result",
];

/// Run one `snapctl ARGS` from `uid` in the context of `cookie`.
pub fn run(shared: &Shared, cookie: &str, args: &[String], uid: u32) -> Reply {
    let Some(command) = args.first() else {
        return Reply {
            stderr: "error: snapctl cannot run without args\n".to_string(),
            code: 1,
            ..Reply::default()
        };
    };
    let help = args.iter().any(|a| a == "-h" || a == "--help");
    if uid != 0 && !help && !NON_ROOT.contains(&command.as_str()) {
        return Reply {
            stderr: format!("error: cannot use {command:?} with uid {uid}, try with sudo\n"),
            code: 1,
            ..Reply::default()
        };
    }
    match dispatch(shared, cookie, command, &args[1..], help) {
        Ok(reply) => reply,
        Err(message) => Reply {
            stderr: format!("error: snapctl: {message}\n"),
            code: 1,
            ..Reply::default()
        },
    }
}

fn dispatch(
    shared: &Shared,
    cookie: &str,
    command: &str,
    rest: &[String],
    help: bool,
) -> Result<Reply, String> {
    if help || command == "help" {
        return Ok(ok(
            "Usage:\n  snapctl [OPTIONS] <command>\n\n(the pgpilot-e2e snapd fixture's \
             snapctl: get, set, unset, services, start, stop, restart)\n"
                .to_string(),
        ));
    }
    let known = [
        "get", "set", "unset", "services", "start", "stop", "restart",
    ];
    if NOT_PROVIDED.contains(&command) {
        return Err(format!(
            "\"snapctl {command}\" is not provided by the pgpilot-e2e snapd fixture (tests/src/snapd)"
        ));
    }
    if !known.contains(&command) {
        return Err(format!(
            "Unknown command `{command}'. Please specify one command of: change, get, install, \
             is-connected, kmod, model, mount, reboot, refresh, remove, restart, services, set, \
             set-health, start, stop, system-mode, tasks, umount, unset or version"
        ));
    }
    let missing_context = || {
        format!(
            "cannot invoke snapctl operation commands (here {command:?}) from outside of a snap"
        )
    };
    match command {
        "get" => {
            let (flags, keys) = parse_flags(rest, &['d', 't'], &[])?;
            if keys.is_empty() {
                return Err("get which option?".to_string());
            }
            let (document, typed) = (has(&flags, "d"), has(&flags, "t"));
            if document && typed {
                return Err("cannot use -d and -t together".to_string());
            }
            if keys[0].starts_with(':') {
                return Err(
                    "interface attributes can only be read during the execution of interface hooks"
                        .to_string(),
                );
            }
            let view = shared.state().view(cookie).ok_or_else(missing_context)?;
            let mut found = Map::new();
            for key in &keys {
                if let Some(value) = config::lookup(&view, &shared.snap_name, key)? {
                    found.insert(key.clone(), value.clone());
                }
            }
            Ok(ok(config::format_get(&keys, &found, document, typed)))
        }
        "set" | "unset" => {
            let (pairs, strict) = if command == "set" {
                let (flags, values) = parse_flags(rest, &['s', 't'], &[])?;
                if values.is_empty() {
                    return Err("set which option?".to_string());
                }
                if has(&flags, "s") && has(&flags, "t") {
                    return Err("cannot use -t and -s together".to_string());
                }
                if values[0].starts_with(':') && !values[0].contains('=') {
                    return Err("interface attributes can only be set during the execution of prepare hooks".to_string());
                }
                let mode = if has(&flags, "s") {
                    ValueMode::String
                } else if has(&flags, "t") {
                    ValueMode::Typed
                } else {
                    ValueMode::JsonOrString
                };
                (
                    config::parse_assignments(&values, mode)?,
                    shared.current().meta.strict_option_names(),
                )
            } else {
                let (_, keys) = parse_flags(rest, &[], &[])?;
                if keys.is_empty() {
                    return Err("unset which option?".to_string());
                }
                (keys.into_iter().map(|k| (k, Value::Null)).collect(), false)
            };
            let mut state = shared.state();
            if !state.contexts.contains_key(cookie) {
                return Err(missing_context());
            }
            state.set(cookie, &pairs, strict)?;
            Ok(ok(String::new()))
        }
        "services" => {
            let (_, names) = parse_flags(rest, &['g', 'u'], &["global", "user"])?;
            if shared.state().view(cookie).is_none() {
                return Err(missing_context());
            }
            let (apps, _) = shared.service_names(&names)?;
            let rows = shared.service_rows(if names.is_empty() { &[] } else { &apps });
            Ok(ok(config::services_table(&rows)))
        }
        _ => {
            let flag = match command {
                "start" => "enable",
                "stop" => "disable",
                _ => "reload",
            };
            let (flags, names) = parse_flags(rest, &[], &[flag])?;
            if names.is_empty() {
                return Err(
                    "the required argument `<service> (at least 1 argument)` was not provided"
                        .to_string(),
                );
            }
            let set = has(&flags, flag);
            let action = match command {
                "start" => Action::Start { enable: set },
                "stop" => Action::Stop { disable: set },
                _ => Action::Restart,
            };
            let (apps, explicit) = shared.service_names(&names)?;
            let op = ServiceOp {
                action,
                apps,
                explicit,
            };
            {
                let mut state = shared.state();
                let context = state.contexts.get_mut(cookie).ok_or_else(missing_context)?;
                // In the configure hook the command waits for the hook's success.
                if matches!(
                    context.hook.as_deref(),
                    Some("configure" | "default-configure")
                ) {
                    context.queued.push(op);
                    return Ok(ok(String::new()));
                }
            }
            shared.control(&op).map_err(|e| format!("{e:#}"))?;
            Ok(ok(String::new()))
        }
    }
}

fn has(flags: &[String], name: &str) -> bool {
    flags.iter().any(|f| f == name)
}

/// go-flags' parsing as snapctl uses it: `-x` and `--long` options anywhere
/// (several short ones together too), `--` ends them. None of these
/// options takes a value. Returns the options seen (by the name used) and
/// the other arguments.
fn parse_flags(
    args: &[String],
    shorts: &[char],
    longs: &[&str],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            positional.extend(iter.by_ref().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if !longs.contains(&long) {
                return Err(format!("unknown flag `{long}'"));
            }
            flags.push(long.to_string());
        } else if arg.len() > 1 && arg.starts_with('-') {
            for c in arg[1..].chars() {
                if !shorts.contains(&c) {
                    return Err(format!("unknown flag `{c}'"));
                }
                flags.push(c.to_string());
            }
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((flags, positional))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_anywhere_like_go_flags() {
        let shorts = ['d', 't'];
        assert_eq!(
            parse_flags(&strings(&["a", "-d", "b"]), &shorts, &[]).unwrap(),
            (strings(&["d"]), strings(&["a", "b"]))
        );
        assert_eq!(
            parse_flags(&strings(&["-dt", "--", "-x"]), &shorts, &[]).unwrap(),
            (strings(&["d", "t"]), strings(&["-x"]))
        );
        assert_eq!(
            parse_flags(&strings(&["-x"]), &shorts, &[]).unwrap_err(),
            "unknown flag `x'"
        );
        assert_eq!(
            parse_flags(&strings(&["--enable", "s.a"]), &[], &["enable"]).unwrap(),
            (strings(&["enable"]), strings(&["s.a"]))
        );
        // --enable has no short form in snapctl.
        assert!(parse_flags(&strings(&["-e"]), &[], &["enable"]).is_err());
        assert_eq!(
            parse_flags(&strings(&["--nope"]), &[], &["enable"]).unwrap_err(),
            "unknown flag `nope'"
        );
        // A value that looks like a negative number is still a value when it
        // is part of key=value.
        assert_eq!(
            parse_flags(&strings(&["k=-1"]), &['s', 't'], &[])
                .unwrap()
                .1,
            strings(&["k=-1"])
        );
    }
}
