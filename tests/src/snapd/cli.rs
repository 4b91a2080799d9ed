//! The `snap` command line a machine's root runs (what a charm calls), for
//! a snap already installed: `list`, `refresh --hold`/`--unhold`, `set`,
//! `unset`, `get`, `services`, `start`, `stop`, `restart`, `run`, with
//! snapd's output and its `error: ...` messages (exit 1). `snap install`
//! makes the machine, so it is the caller's ([`Machine::install`]); so is
//! the case of a snap that is not installed ([`not_installed`]).
//!
//! Not reproduced: the store (`install NAME`, `refresh` to a channel or
//! revision, `info`, `find`), `remove`, `revert`, `connect`, `logs` (read
//! [`Machine::journal`]), aliases, `--no-wait` and change ids.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use super::config::{self, ValueMode};
use super::server::Reply;
use super::{ChangeError, Machine};

fn ok(stdout: impl Into<String>) -> Reply {
    Reply {
        stdout: stdout.into(),
        ..Reply::default()
    }
}

fn error(message: impl std::fmt::Display) -> Reply {
    Reply {
        stderr: format!("error: {message}\n"),
        code: 1,
        ..Reply::default()
    }
}

/// What `snap list NAME`, `snap services NAME` and the like print when the
/// snap is not installed on the machine.
pub fn not_installed(args: &[String]) -> Reply {
    let name = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.split('.').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("list") => error("no matching snaps installed"),
        _ => error(format!("snap {name:?} is not installed")),
    }
}

/// The `name  version  rev` table's columns, padded as tabwriter does.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 2);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

impl Machine {
    /// Refreshes of the snap are held (`snap refresh --hold`).
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Run `snap ARGS` (without the leading `snap`) against this machine.
    /// `stdin` and `env` are the caller's, for `snap run`.
    pub fn cli(&self, args: &[String], stdin: Option<&str>, env: &[(String, String)]) -> Reply {
        let Some(command) = args.first().map(String::as_str) else {
            return error("the required argument `<command>` was not provided");
        };
        let rest = &args[1..];
        let name = self.snap_name().to_string();
        // Every command but `run` names the snap or its apps.
        let names_other = |wanted: &[String]| {
            wanted
                .iter()
                .filter(|a| !a.starts_with('-'))
                .find(|a| a.split('.').next() != Some(name.as_str()))
                .cloned()
        };
        if command != "run" && command != "get" && command != "set" && command != "unset" {
            if let Some(other) = names_other(rest) {
                return not_installed(&[command.to_string(), other]);
            }
        }
        match command {
            "list" => self.cli_list(),
            "refresh" => self.cli_refresh(rest),
            "set" | "unset" => self.cli_set(command, rest),
            "get" => self.cli_get(rest),
            "services" => ok(config::services_table(&self.shared.service_rows(&[]))),
            "start" | "stop" | "restart" => self.cli_service(command, rest),
            "run" => self.cli_run(rest, stdin, env),
            "install" => error(format!(
                "snap {name:?} is already installed (this machine installs once; \
                 a refresh from a file is Machine::refresh)"
            )),
            other => error(format!(
                "unknown command {other:?}: not provided by this fixture"
            )),
        }
    }

    fn cli_list(&self) -> Reply {
        let notes = if self.held() { "held" } else { "-" };
        ok(table(&[
            ["Name", "Version", "Rev", "Tracking", "Publisher", "Notes"]
                .map(String::from)
                .to_vec(),
            vec![
                self.snap_name().to_string(),
                self.version(),
                self.revision(),
                "-".into(),
                "-".into(),
                notes.into(),
            ],
        ]))
    }

    fn cli_refresh(&self, args: &[String]) -> Reply {
        let hold = args
            .iter()
            .any(|a| a == "--hold" || a.starts_with("--hold="));
        let unhold = args.iter().any(|a| a == "--unhold");
        let name = self.snap_name();
        if hold {
            self.held.store(true, Ordering::SeqCst);
            ok(format!("General refreshes of {name:?} held indefinitely\n"))
        } else if unhold {
            self.held.store(false, Ordering::SeqCst);
            ok(format!("Removed general holds on {name:?}\n"))
        } else {
            error("refreshing from the store is not provided by this fixture")
        }
    }

    fn cli_set(&self, command: &str, args: &[String]) -> Reply {
        let mut mode = ValueMode::JsonOrString;
        let mut words = Vec::new();
        for a in args {
            match a.as_str() {
                "-t" => mode = ValueMode::Typed,
                "-s" => mode = ValueMode::String,
                _ => words.push(a.clone()),
            }
        }
        let Some((snap, assignments)) = words.split_first() else {
            return error("the required argument `<snap>` was not provided");
        };
        if snap != self.snap_name() {
            return not_installed(&[command.to_string(), snap.clone()]);
        }
        let patch = if command == "unset" {
            Ok(assignments
                .iter()
                .map(|k| (k.clone(), Value::Null))
                .collect())
        } else {
            config::parse_assignments(assignments, mode)
        };
        let patch = match patch {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return error("the required argument `<conf value>` was not provided"),
            Err(e) => return error(e),
        };
        match self.change_config(&patch) {
            Ok(_) => ok(""),
            Err(e) => match ChangeError::of(&e) {
                Some(change) => Reply {
                    stderr: format!("{}\n", change.cli_message()),
                    code: 1,
                    ..Reply::default()
                },
                None => error(e),
            },
        }
    }

    fn cli_get(&self, args: &[String]) -> Reply {
        let document = args.iter().any(|a| a == "-d");
        let typed = args.iter().any(|a| a == "-t");
        let words: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let Some((snap, keys)) = words.split_first() else {
            return error("the required argument `<snap>` was not provided");
        };
        if *snap != self.snap_name() {
            return not_installed(&["get".to_string(), snap.to_string()]);
        }
        let state = self.config();
        let all = if state.is_object() {
            state.clone()
        } else {
            Value::Object(Map::new())
        };
        if keys.is_empty() {
            // `snap get NAME` / `-d`: the whole document.
            return if document {
                ok(format!("{}\n", config::go_json_indent(&all)))
            } else {
                let mut rows = vec![vec!["Key".to_string(), "Value".to_string()]];
                if let Value::Object(map) = &all {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    for k in keys {
                        let v = &map[k];
                        rows.push(vec![
                            k.clone(),
                            if v.is_object() {
                                "{...}".into()
                            } else {
                                v.as_str().map_or_else(|| v.to_string(), str::to_string)
                            },
                        ]);
                    }
                }
                ok(table(&rows))
            };
        }
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let mut found = Map::new();
        for k in &keys {
            match config::lookup(&state, self.snap_name(), k) {
                Ok(Some(v)) => {
                    found.insert(k.clone(), v.clone());
                }
                Ok(None) => {
                    if keys.len() == 1 && !document {
                        return error(format!(
                            "snap {:?} has no {k:?} configuration option",
                            self.snap_name()
                        ));
                    }
                }
                Err(e) => return error(e),
            }
        }
        ok(config::format_get(&keys, &found, document, typed))
    }

    fn cli_service(&self, command: &str, args: &[String]) -> Reply {
        let enable = args.iter().any(|a| a == "--enable");
        let disable = args.iter().any(|a| a == "--disable");
        let apps: Vec<&str> = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .map(String::as_str)
            .collect();
        if apps.is_empty() {
            return error("the required argument `<service>` was not provided");
        }
        let done = match command {
            "start" => self.start(&apps, enable),
            "stop" => self.stop(&apps, disable),
            _ => self.restart(&apps),
        };
        let past = match command {
            "start" => "Started",
            "stop" => "Stopped",
            _ => "Restarted",
        };
        match done {
            Ok(()) => ok(format!("{past}.\n")),
            Err(e) => error(e),
        }
    }

    fn cli_run(&self, args: &[String], stdin: Option<&str>, env: &[(String, String)]) -> Reply {
        let Some((target, app_args)) = args.split_first() else {
            return error("need the application to run as argument");
        };
        let Some((snap, app)) = target.split_once('.') else {
            return error(format!("cannot find app {target:?} in {target:?}"));
        };
        if snap != self.snap_name() {
            return not_installed(&["run".to_string(), snap.to_string()]);
        }
        let app_args: Vec<&str> = app_args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match self.run_app_input(app, &app_args, &env, stdin) {
            Ok(out) => Reply {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                code: out.status.code().unwrap_or(1),
            },
            Err(e) => error(e),
        }
    }

    /// [`Machine::run_app`] with `stdin` written to the app.
    pub fn run_app_input(
        &self,
        app: &str,
        args: &[&str],
        caller_env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> anyhow::Result<std::process::Output> {
        let Some(input) = stdin else {
            return self.run_app(app, args, caller_env);
        };
        let mut cmd = self.app_command(app, args, caller_env)?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut pipe) = child.stdin.take() {
            // The app may exit without reading everything: not an error here.
            let _ = pipe.write_all(input.as_bytes());
        }
        Ok(child.wait_with_output()?)
    }

    /// The machine loses power: every process of every service is killed
    /// at once (SIGKILL, no stop signal, no restart), as a machine that
    /// goes down takes its processes with it. Enabled services stay
    /// enabled; [`Machine::boot`] starts them again.
    pub fn power_off(&self) {
        let units = self.shared.units();
        std::thread::scope(|s| {
            for unit in &units {
                s.spawn(move || unit.power_off());
            }
        });
    }

    /// The machine starts again: systemd starts the enabled services.
    pub fn boot(&self) -> anyhow::Result<()> {
        super::lifecycle::start_enabled(&self.shared)
    }
}
