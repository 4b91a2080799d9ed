//! The hook tools, run by the test process for the fixture's `juju-tool`
//! (src/bin/juju-tool.rs): [`run`] takes the tool's name, its argv and
//! stdin, and the hook context it was called from, and returns what the real
//! tool would print and its exit code. Argv and JSON output follow
//! charm-snap.md §2.3; errors read `ERROR <message>` on stderr, exit 1, or
//! exit 2 for a usage error (gnuflag's "option provided but not defined").

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;

use base64_decode::decode as b64;
use serde_json::{json, Map, Value};

use super::state::{
    self, app_of, parse_secret_uri, ActionState, Bag, Grant, ModelState, Op, Secret, SecretOwner,
    Status,
};

/// What a tool prints and its exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A status change made by `status-set` during a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// A unit name, or the application's name for `--application`.
    pub entity: String,
    pub from: Status,
    pub to: Status,
}

/// One running hook or action.
#[derive(Debug, Clone)]
pub struct Context {
    pub unit: String,
    /// `hooks/config-changed`, `actions/create-backup`.
    pub dispatch_path: String,
    pub relation_id: Option<u32>,
    pub remote_unit: Option<String>,
    pub storage_id: Option<String>,
    pub action_id: Option<String>,
    /// The model's state as this hook sees it: committed state plus its own
    /// buffered writes.
    pub working: ModelState,
    pub pending: Vec<Op>,
    pub status_changes: Vec<StatusChange>,
    /// `juju-log` lines (`LEVEL message`).
    pub logs: Vec<String>,
}

/// The model and the running hooks, behind the fixture's lock.
#[derive(Debug, Default)]
pub struct Inner {
    pub state: ModelState,
    pub contexts: HashMap<String, Context>,
    /// Where `juju-log` lines go at once (the model's `debug-log`).
    pub debug_log: Option<PathBuf>,
}

enum Error {
    /// exit 1
    Fail(String),
    /// exit 2
    Usage(String),
}

type Result<T> = std::result::Result<T, Error>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::Fail(message.into()))
}

/// The tools this fixture provides (symlinked to `juju-tool` per unit).
pub const TOOLS: &[&str] = &[
    "config-get",
    "is-leader",
    "relation-ids",
    "relation-list",
    "relation-get",
    "relation-set",
    "secret-add",
    "secret-get",
    "secret-set",
    "secret-grant",
    "secret-remove",
    "secret-ids",
    "secret-info-get",
    "status-get",
    "status-set",
    "application-version-set",
    "open-port",
    "close-port",
    "opened-ports",
    "action-get",
    "action-set",
    "action-fail",
    "action-log",
    "juju-log",
    "storage-get",
    "resource-get",
    "network-get",
];

/// Run `tool ARGS` for the hook whose `JUJU_CONTEXT_ID` is `context_id`.
pub fn run(
    inner: &mut Inner,
    context_id: &str,
    tool: &str,
    args: &[String],
    stdin: Option<&str>,
) -> Reply {
    let result = if !TOOLS.contains(&tool) {
        Err(Error::Fail(format!(
            "{tool:?} is not provided by the pgpilot-e2e Juju fixture (tests/src/juju)"
        )))
    } else if !inner.contexts.contains_key(context_id) {
        Err(Error::Fail(format!(
            "bad request: unknown context id {context_id:?} (not inside a running hook)"
        )))
    } else {
        dispatch(inner, context_id, tool, args, stdin)
    };
    match result {
        Ok(stdout) => Reply {
            stdout,
            ..Reply::default()
        },
        Err(Error::Fail(m)) => Reply {
            stderr: format!("ERROR {m}\n"),
            code: 1,
            ..Reply::default()
        },
        Err(Error::Usage(m)) => Reply {
            stderr: format!("ERROR {m}\n"),
            code: 2,
            ..Reply::default()
        },
    }
}

/// gnuflag-like parsing: `--name=value`, `--name value`, `-n value`, boolean
/// `--name` (or `--name=true|false`), anywhere; `--` ends the options.
struct Args {
    values: BTreeMap<String, String>,
    bools: BTreeMap<String, bool>,
    positional: Vec<String>,
}

impl Args {
    fn parse(args: &[String], valued: &[&str], booleans: &[&str]) -> Result<Args> {
        let mut parsed = Args {
            values: BTreeMap::new(),
            bools: BTreeMap::new(),
            positional: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "--" {
                parsed.positional.extend(iter.by_ref().cloned());
                break;
            }
            let Some(flag) = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-').filter(|f| !f.is_empty()))
            else {
                parsed.positional.push(arg.clone());
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| Error::Usage(format!("option needs an argument: {arg}")))?,
                };
                parsed.values.insert(name.to_string(), value);
            } else if booleans.contains(&name) {
                let value = match inline.as_deref() {
                    None => true,
                    Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                    Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                    Some(v) => {
                        return Err(Error::Usage(format!(
                            "invalid value {v:?} for flag {arg}: parse error"
                        )))
                    }
                };
                parsed.bools.insert(name.to_string(), value);
            } else {
                return Err(Error::Usage(format!(
                    "option provided but not defined: {}",
                    arg.split('=').next().unwrap_or(arg)
                )));
            }
        }
        Ok(parsed)
    }

    fn value(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|n| self.values.get(*n).map(String::as_str))
    }

    fn flag(&self, names: &[&str]) -> bool {
        names
            .iter()
            .any(|n| self.bools.get(*n).copied().unwrap_or(false))
    }

    fn json(&self) -> Result<bool> {
        match self.value(&["format"]) {
            None | Some("smart") | Some("yaml") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(Error::Usage(format!(
                "invalid value {other:?} for option --format: unknown format {other:?}"
            ))),
        }
    }

    /// No more than `max` positional arguments.
    fn at_most(&self, max: usize) -> Result<()> {
        match self.positional.get(max) {
            Some(extra) => Err(Error::Usage(format!("unrecognized args: [\"{extra}\"]"))),
            None => Ok(()),
        }
    }
}

/// Print a value as the tool would: JSON with `--format=json`; otherwise a
/// string raw, a boolean `True`/`False`, anything else as JSON (Juju's
/// `smart` prints maps and lists as YAML: not reproduced).
fn format(value: &Value, json: bool) -> String {
    match value {
        Value::String(s) if !json => format!("{s}\n"),
        Value::Bool(b) if !json => format!("{}\n", if *b { "True" } else { "False" }),
        _ => format!("{value}\n"),
    }
}

fn dispatch(
    inner: &mut Inner,
    id: &str,
    tool: &str,
    args: &[String],
    stdin: Option<&str>,
) -> Result<String> {
    let Inner {
        state,
        contexts,
        debug_log,
    } = inner;
    let ctx = contexts.get_mut(id).expect("checked by run");
    let unit = ctx.unit.clone();
    let leader = ctx.working.units.get(&unit).is_some_and(|u| u.leader);
    let app = app_of(&unit).to_string();
    match tool {
        "config-get" => {
            let a = Args::parse(args, &["format"], &["all", "a"])?;
            a.at_most(1)?;
            let w = &ctx.working;
            let mut all = Map::new();
            for (k, default) in &w.config_defaults {
                let v = w.config.get(k).unwrap_or(default);
                if !v.is_null() || a.flag(&["all", "a"]) {
                    all.insert(k.clone(), v.clone());
                }
            }
            match a.positional.first() {
                None => Ok(format(&Value::Object(all), a.json()?)),
                Some(key) => Ok(format(all.get(key).unwrap_or(&Value::Null), a.json()?)),
            }
        }
        "is-leader" => {
            let a = Args::parse(args, &["format"], &[])?;
            a.at_most(0)?;
            Ok(format(&json!(leader), a.json()?))
        }
        "relation-ids" => {
            let a = Args::parse(args, &["format"], &[])?;
            a.at_most(1)?;
            let endpoint = match a.positional.first() {
                Some(e) => e.clone(),
                None => match ctx.relation_id.and_then(|r| ctx.working.relations.get(&r)) {
                    Some(rel) => rel.endpoint.clone(),
                    None => return Err(Error::Usage("no endpoint name specified".into())),
                },
            };
            let ids: Vec<String> = ctx
                .working
                .relations
                .values()
                .filter(|r| r.endpoint == endpoint && r.units.contains(&unit))
                .map(|r| r.key())
                .collect();
            Ok(format(&json!(ids), a.json()?))
        }
        "relation-list" => {
            let a = Args::parse(args, &["format", "r", "relation"], &["app"])?;
            a.at_most(0)?;
            let rel = relation(ctx, &a)?;
            if a.flag(&["app"]) {
                return Ok(format(&json!(rel.remote_app), a.json()?));
            }
            let units: Vec<&String> = rel
                .units
                .iter()
                .filter(|u| **u != unit && (rel.peer || app_of(u) == rel.remote_app))
                .collect();
            Ok(format(&json!(units), a.json()?))
        }
        "relation-get" => {
            let a = Args::parse(args, &["format", "r", "relation"], &["app"])?;
            a.at_most(2)?;
            let rel = relation(ctx, &a)?;
            let key = a.positional.first().map(String::as_str).unwrap_or("-");
            let want_app = a.flag(&["app"]);
            let target = match a.positional.get(1) {
                Some(t) => t.clone(),
                None => match &ctx.remote_unit {
                    Some(u) if !want_app => u.clone(),
                    Some(u) => app_of(u).to_string(),
                    None if want_app => rel.remote_app.clone(),
                    None => return fail("no unit id specified"),
                },
            };
            let bag = if want_app {
                let target_app = app_of(&target);
                if target_app == app && !rel.peer && !leader {
                    return fail("permission denied");
                }
                if target_app != app && target_app != rel.remote_app {
                    return fail(format!("cannot read application settings: application {target_app:?} is not in relation {}", rel.key()));
                }
                rel.app_data.get(target_app).cloned().unwrap_or_default()
            } else {
                if !rel.units.contains(&target) {
                    return fail(format!("cannot read settings for unit {target:?} in relation {:?}: unit {target:?} not found", rel.key()));
                }
                rel.unit_data.get(&target).cloned().unwrap_or_default()
            };
            if key == "-" {
                Ok(format(&json!(bag), a.json()?))
            } else {
                Ok(format(&json!(bag.get(key)), a.json()?))
            }
        }
        "relation-set" => {
            let a = Args::parse(args, &["r", "relation", "file", "format"], &["app"])?;
            let rel = relation(ctx, &a)?;
            let mut data = Bag::new();
            if let Some(file) = a.value(&["file"]) {
                let text = if file == "-" {
                    stdin.unwrap_or_default().to_string()
                } else {
                    std::fs::read_to_string(file)
                        .map_err(|e| Error::Fail(format!("cannot read {file}: {e}")))?
                };
                if !text.trim().is_empty() {
                    let map: BTreeMap<String, Option<Value>> = serde_norway::from_str(&text)
                        .map_err(|e| Error::Fail(format!("cannot parse settings: {e}")))?;
                    for (k, v) in map {
                        let v = match v {
                            None => String::new(),
                            Some(Value::String(s)) => s,
                            Some(other) => other.to_string(),
                        };
                        data.insert(k, v);
                    }
                }
            }
            for kv in &a.positional {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(Error::Usage(format!("expected \"key=value\", got {kv:?}")));
                };
                data.insert(k.to_string(), v.to_string());
            }
            let app_bag = a.flag(&["app"]);
            if app_bag && !leader {
                return fail("cannot write relation settings: permission denied (not the leader)");
            }
            let op = Op::RelationSet {
                relation_id: rel.id,
                owner: if app_bag { app } else { unit },
                app: app_bag,
                data,
            };
            buffer(ctx, op);
            Ok(String::new())
        }
        "secret-add" => {
            let a = Args::parse(
                args,
                &["label", "description", "expire", "rotate", "owner", "file"],
                &[],
            )?;
            let owner = match a.value(&["owner"]).unwrap_or("application") {
                "application" => {
                    if !leader {
                        return fail("cannot create an application secret: this unit is not the leader");
                    }
                    SecretOwner::Application(app.clone())
                }
                "unit" => SecretOwner::Unit(unit.clone()),
                other => {
                    return Err(Error::Usage(format!(
                        "invalid value {other:?} for option --owner: secret owner must be \"application\" or \"unit\""
                    )))
                }
            };
            let content = secret_content(&a.positional)?;
            if content.is_empty() {
                return fail("missing secret value");
            }
            let label = a.value(&["label"]).map(str::to_string);
            if let Some(l) = &label {
                if ctx
                    .working
                    .secrets
                    .values()
                    .any(|s| s.label.as_ref() == Some(l) && s.owner == owner)
                {
                    return fail(format!("secret with label {l:?} already exists"));
                }
            }
            // From the model's counter: hooks running at once on several
            // units never get the same id.
            state.next_secret = state.next_secret.max(ctx.working.next_secret) + 1;
            ctx.working.next_secret = state.next_secret;
            let sid = state::secret_id(state.next_secret);
            let secret = Secret {
                id: sid.clone(),
                owner,
                label,
                description: a.value(&["description"]).map(str::to_string),
                revisions: BTreeMap::from([(1, content)]),
                grants: Vec::new(),
                tracked: BTreeMap::new(),
            };
            buffer(ctx, Op::SecretAdd(secret));
            Ok(format!("secret:{sid}\n"))
        }
        "secret-get" => {
            let a = Args::parse(args, &["format", "label"], &["refresh", "peek"])?;
            a.at_most(2)?;
            let secret = find_secret(
                &ctx.working,
                a.positional.first(),
                a.value(&["label"]),
                &unit,
            )?;
            let (sid, latest) = (secret.id.clone(), secret.latest());
            let revision = if secret.readable_as_owner(&unit) {
                latest
            } else {
                if !granted(&ctx.working, secret, &unit) {
                    return fail("permission denied");
                }
                let tracked = secret.tracked.get(&unit).copied();
                if a.flag(&["peek"]) {
                    latest
                } else if a.flag(&["refresh"]) || tracked.is_none() {
                    if tracked != Some(latest) {
                        buffer(
                            ctx,
                            Op::SecretTrack {
                                id: sid.clone(),
                                unit: unit.clone(),
                                revision: latest,
                            },
                        );
                    }
                    latest
                } else {
                    tracked.unwrap_or(latest)
                }
            };
            let content = ctx.working.secrets[&sid]
                .revisions
                .get(&revision)
                .cloned()
                .unwrap_or_default();
            match a.positional.get(1) {
                None => Ok(format(&json!(content), a.json()?)),
                Some(key) => match content.get(key) {
                    Some(v) => Ok(format(&json!(v), a.json()?)),
                    None => fail(format!("secret key {key:?} not found")),
                },
            }
        }
        "secret-set" => {
            let a = Args::parse(
                args,
                &["label", "description", "expire", "rotate", "owner", "file"],
                &[],
            )?;
            let Some(uri) = a.positional.first() else {
                return Err(Error::Usage("missing secret URI".into()));
            };
            let secret = find_secret(&ctx.working, Some(uri), None, &unit)?;
            if !secret.manageable_by(&unit, leader) {
                return fail("permission denied");
            }
            let content = secret_content(&a.positional[1..])?;
            let op = Op::SecretSet {
                id: secret.id.clone(),
                content: (!content.is_empty()).then_some(content),
                label: a.value(&["label"]).map(str::to_string),
                description: a.value(&["description"]).map(str::to_string),
            };
            buffer(ctx, op);
            Ok(String::new())
        }
        "secret-grant" => {
            let a = Args::parse(args, &["relation", "r", "unit"], &[])?;
            a.at_most(1)?;
            let Some(uri) = a.positional.first() else {
                return Err(Error::Usage("missing secret URI".into()));
            };
            let Some(rel_arg) = a.value(&["relation", "r"]) else {
                return Err(Error::Usage("missing relation".into()));
            };
            let rel_id = parse_relation_id(&ctx.working, rel_arg)?;
            let secret = find_secret(&ctx.working, Some(uri), None, &unit)?;
            if !secret.manageable_by(&unit, leader) {
                return fail("permission denied");
            }
            let grant_unit = a.value(&["unit"]).map(str::to_string);
            if let Some(u) = &grant_unit {
                if !ctx.working.relations[&rel_id].units.contains(u) {
                    return fail(format!(
                        "cannot grant to unit {u:?}: not in relation {rel_arg}"
                    ));
                }
            }
            let op = Op::SecretGrant {
                id: secret.id.clone(),
                grant: Grant {
                    relation_id: rel_id,
                    unit: grant_unit,
                },
            };
            buffer(ctx, op);
            Ok(String::new())
        }
        "secret-remove" => {
            let a = Args::parse(args, &["revision"], &[])?;
            a.at_most(1)?;
            let secret = find_secret(&ctx.working, a.positional.first(), None, &unit)?;
            if !secret.manageable_by(&unit, leader) {
                return fail("permission denied");
            }
            let revision = match a.value(&["revision"]) {
                None => None,
                Some(r) => Some(r.parse::<u32>().map_err(|_| {
                    Error::Usage(format!("invalid value {r:?} for option --revision"))
                })?),
            };
            if let Some(r) = revision {
                if !secret.revisions.contains_key(&r) {
                    return fail(format!("secret revision {r} not found"));
                }
            }
            let op = Op::SecretRemove {
                id: secret.id.clone(),
                revision,
            };
            buffer(ctx, op);
            Ok(String::new())
        }
        "secret-ids" => {
            let a = Args::parse(args, &["format"], &[])?;
            a.at_most(0)?;
            let ids: Vec<&String> = ctx
                .working
                .secrets
                .values()
                .filter(|s| s.manageable_by(&unit, leader))
                .map(|s| &s.id)
                .collect();
            Ok(format(&json!(ids), a.json()?))
        }
        "secret-info-get" => {
            let a = Args::parse(args, &["format", "label"], &[])?;
            a.at_most(1)?;
            let secret = find_secret(
                &ctx.working,
                a.positional.first(),
                a.value(&["label"]),
                &unit,
            )?;
            if !secret.manageable_by(&unit, leader) {
                return fail("permission denied");
            }
            let mut info = Map::new();
            info.insert("revision".into(), json!(secret.latest()));
            info.insert(
                "owner".into(),
                json!(match secret.owner {
                    SecretOwner::Application(_) => "application",
                    SecretOwner::Unit(_) => "unit",
                }),
            );
            if let Some(l) = &secret.label {
                info.insert("label".into(), json!(l));
            }
            if let Some(d) = &secret.description {
                info.insert("description".into(), json!(d));
            }
            info.insert("rotation".into(), json!("never"));
            Ok(format(&json!({ secret.id.clone(): info }), true))
        }
        "status-get" => {
            let a = Args::parse(args, &["format"], &["include-data", "application"])?;
            a.at_most(1)?;
            let json_out = a.json()?;
            let one =
                |s: &Status| json!({"status": s.status, "message": s.message, "status-data": {}});
            if a.flag(&["application"]) {
                if !leader {
                    return fail("finding application status: this unit is not the leader");
                }
                let units: Map<String, Value> = ctx
                    .working
                    .units
                    .values()
                    .map(|u| (u.name.clone(), one(&u.status)))
                    .collect();
                Ok(format(
                    &json!({"application-status": one(&ctx.working.app_status), "units": units}),
                    json_out,
                ))
            } else {
                let status = ctx.working.units[&unit].status.clone();
                Ok(format(&one(&status), json_out))
            }
        }
        "status-set" => {
            let a = Args::parse(args, &[], &["application"])?;
            a.at_most(2)?;
            let Some(kind) = a.positional.first() else {
                return Err(Error::Usage(
                    "invalid args, require <status> [message] [data]".into(),
                ));
            };
            if !["maintenance", "blocked", "waiting", "active"].contains(&kind.as_str()) {
                return fail(format!(
                    "invalid status {kind:?}, expected one of [maintenance blocked waiting active]"
                ));
            }
            let to = Status {
                status: kind.clone(),
                message: a.positional.get(1).cloned().unwrap_or_default(),
            };
            let application = a.flag(&["application"]);
            if application && !leader {
                return fail("setting application status: this unit is not the leader");
            }
            // Immediate: the model's state and the hook's view both.
            let from;
            if application {
                from = std::mem::replace(&mut state.app_status, to.clone());
                state.app_status_history.push(to.clone());
                ctx.working.app_status = to.clone();
                ctx.working.app_status_history = state.app_status_history.clone();
            } else {
                let u = state
                    .units
                    .get_mut(&unit)
                    .ok_or_else(|| Error::Fail(format!("unit {unit:?} not found")))?;
                from = std::mem::replace(&mut u.status, to.clone());
                u.status_history.push(to.clone());
                let history = u.status_history.clone();
                if let Some(w) = ctx.working.units.get_mut(&unit) {
                    w.status = to.clone();
                    w.status_history = history;
                }
            }
            ctx.status_changes.push(StatusChange {
                entity: if application { app } else { unit },
                from,
                to,
            });
            Ok(String::new())
        }
        "application-version-set" => {
            let a = Args::parse(args, &[], &[])?;
            a.at_most(1)?;
            let Some(version) = a.positional.first() else {
                return Err(Error::Usage("no version specified".into()));
            };
            // Immediate, as Juju's SetUnitWorkloadVersion.
            for s in [&mut *state, &mut ctx.working] {
                if let Some(u) = s.units.get_mut(&unit) {
                    u.workload_version = version.clone();
                }
            }
            Ok(String::new())
        }
        "open-port" | "close-port" => {
            let a = Args::parse(args, &["endpoints"], &[])?;
            a.at_most(1)?;
            let Some(port) = a.positional.first() else {
                return Err(Error::Usage("no port or range specified".into()));
            };
            let port = normalise_port(port)?;
            let op = if tool == "open-port" {
                Op::OpenPort { unit, port }
            } else {
                Op::ClosePort { unit, port }
            };
            buffer(ctx, op);
            Ok(String::new())
        }
        "opened-ports" => {
            let a = Args::parse(args, &["format"], &["endpoints"])?;
            a.at_most(0)?;
            let ports: Vec<&String> = ctx.working.units[&unit].opened_ports.iter().collect();
            Ok(format(&json!(ports), a.json()?))
        }
        "action-get" => {
            let a = Args::parse(args, &["format"], &[])?;
            a.at_most(1)?;
            let action = action(state, ctx)?;
            match a.positional.first() {
                None => Ok(format(&Value::Object(action.params.clone()), a.json()?)),
                Some(key) => {
                    let mut v = &Value::Object(action.params.clone());
                    let mut found = v.clone();
                    for part in key.split('.') {
                        found = v.get(part).cloned().unwrap_or(Value::Null);
                        v = match v.get(part) {
                            Some(next) => next,
                            None => break,
                        };
                    }
                    Ok(format(&found, a.json()?))
                }
            }
        }
        "action-set" => {
            let a = Args::parse(args, &[], &[])?;
            let mut sets = Vec::new();
            for kv in &a.positional {
                let Some((k, v)) = kv.split_once('=') else {
                    return fail(format!("argument {kv:?} must be of the form key=value"));
                };
                check_action_key(k)?;
                sets.push((k.to_string(), v.to_string()));
            }
            let action = action(state, ctx)?;
            for (k, v) in sets {
                let mut map = &mut action.results;
                let parts: Vec<&str> = k.split('.').collect();
                for part in &parts[..parts.len() - 1] {
                    let entry = map
                        .entry(part.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    map = entry.as_object_mut().expect("made an object");
                }
                map.insert(parts[parts.len() - 1].to_string(), Value::String(v));
            }
            Ok(String::new())
        }
        "action-fail" => {
            let a = Args::parse(args, &[], &[])?;
            a.at_most(1)?;
            let action = action(state, ctx)?;
            action.status = "failed".into();
            action.message = a.positional.first().cloned().unwrap_or_else(|| {
                "action failed without reason given, check action for errors".into()
            });
            Ok(String::new())
        }
        "action-log" => {
            let a = Args::parse(args, &[], &[])?;
            if a.positional.is_empty() {
                return Err(Error::Usage("no message specified".into()));
            }
            let message = a.positional.join(" ");
            action(state, ctx)?.logs.push(message);
            Ok(String::new())
        }
        "juju-log" => {
            let a = Args::parse(args, &["log-level", "l"], &["debug"])?;
            if a.positional.is_empty() {
                return Err(Error::Usage("no message specified".into()));
            }
            let level = if a.flag(&["debug"]) {
                "DEBUG".to_string()
            } else {
                a.value(&["log-level", "l"])
                    .unwrap_or("INFO")
                    .to_uppercase()
            };
            let line = format!("{level} {}", a.positional.join(" "));
            if let Some(path) = debug_log {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(
                        f,
                        "unit-{} {}: {line}",
                        unit.replace('/', "-"),
                        ctx.dispatch_path
                    );
                }
            }
            ctx.logs.push(line);
            Ok(String::new())
        }
        "storage-get" => {
            let a = Args::parse(args, &["format", "s"], &[])?;
            a.at_most(1)?;
            let Some(sid) = a
                .value(&["s"])
                .map(str::to_string)
                .or(ctx.storage_id.clone())
            else {
                return fail("no storage instance specified");
            };
            let Some(storage) = ctx.working.units[&unit].storage.get(&sid) else {
                return fail(format!(
                    "invalid value {sid:?} for option -s: storage instance {sid:?} not found"
                ));
            };
            let all = json!({"kind": storage.kind, "location": storage.location});
            match a.positional.first() {
                None => Ok(format(&all, a.json()?)),
                Some(k) => Ok(format(all.get(k).unwrap_or(&Value::Null), a.json()?)),
            }
        }
        "resource-get" => {
            let a = Args::parse(args, &[], &[])?;
            a.at_most(1)?;
            let Some(name) = a.positional.first() else {
                return Err(Error::Usage("missing required resource name".into()));
            };
            match ctx.working.resources.get(name) {
                Some(path) => Ok(format!("{}\n", path.display())),
                None => fail(format!(
                    "could not download resource: HTTP request failed: Get \
                     \"https://10.0.0.1:17070/model/{}/units/unit-{}/resources/{name}\": \
                     resource#{app}/{name} not found",
                    ctx.working.model_uuid,
                    unit.replace('/', "-")
                )),
            }
        }
        "network-get" => {
            let a = Args::parse(
                args,
                &["format", "r", "relation"],
                &[
                    "bind-address",
                    "ingress-address",
                    "egress-subnets",
                    "primary-address",
                ],
            )?;
            a.at_most(1)?;
            if a.positional.is_empty() {
                return Err(Error::Usage("no arguments specified".into()));
            }
            let address = ctx.working.units[&unit].address.clone();
            let json_out = a.json()?;
            if a.flag(&["bind-address", "primary-address"]) {
                return Ok(format(&json!(address), json_out));
            }
            if a.flag(&["ingress-address"]) {
                return Ok(format(&json!(address), json_out));
            }
            if a.flag(&["egress-subnets"]) {
                return Ok(format(&json!(format!("{address}/32")), json_out));
            }
            Ok(format(
                &json!({
                    "bind-addresses": [{
                        "mac-address": "",
                        "interface-name": "lo",
                        "addresses": [{"hostname": "", "value": address, "cidr": format!("{address}/32")}],
                    }],
                    "egress-subnets": [format!("{address}/32")],
                    "ingress-addresses": [address],
                }),
                json_out,
            ))
        }
        _ => unreachable!("checked against TOOLS"),
    }
}

/// Apply a buffered write to the hook's view and keep it for the commit.
fn buffer(ctx: &mut Context, op: Op) {
    state::apply(&mut ctx.working, &op);
    ctx.pending.push(op);
}

fn parse_relation_id(state: &ModelState, arg: &str) -> Result<u32> {
    let number = arg.rsplit(':').next().unwrap_or(arg);
    let found = number.parse::<u32>().ok().and_then(|n| {
        let rel = state.relations.get(&n)?;
        (!arg.contains(':') || arg.split(':').next() == Some(rel.endpoint.as_str())).then_some(n)
    });
    found.ok_or_else(|| {
        Error::Fail(format!(
            "invalid value {arg:?} for option -r: relation not found"
        ))
    })
}

/// The relation of `-r` (or the hook's own relation).
fn relation<'c>(ctx: &'c Context, a: &Args) -> Result<&'c state::Relation> {
    let id = match a.value(&["r", "relation"]) {
        Some(arg) => parse_relation_id(&ctx.working, arg)?,
        None => ctx
            .relation_id
            .ok_or_else(|| Error::Fail("no relation id specified".into()))?,
    };
    let rel = &ctx.working.relations[&id];
    if !rel.units.contains(&ctx.unit) {
        return fail(format!(
            "permission denied: unit {:?} is not in relation {}",
            ctx.unit,
            rel.key()
        ));
    }
    Ok(rel)
}

/// `key=value`, `key#file=PATH`, `key#base64=VALUE`.
fn secret_content(args: &[String]) -> Result<Bag> {
    let mut content = Bag::new();
    for kv in args {
        let Some((k, v)) = kv.split_once('=') else {
            return fail(format!("invalid key value {kv:?}"));
        };
        let (key, value) = if let Some(key) = k.strip_suffix("#file") {
            let text = std::fs::read_to_string(v)
                .map_err(|e| Error::Fail(format!("reading secret content from {v}: {e}")))?;
            (key, text)
        } else if let Some(key) = k.strip_suffix("#base64") {
            let bytes = b64(v).ok_or_else(|| Error::Fail(format!("invalid base64 for {key:?}")))?;
            (key, String::from_utf8_lossy(&bytes).into_owned())
        } else {
            (k, v.to_string())
        };
        let valid = key.len() >= 3
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !key.starts_with('-')
            && !key.ends_with('-');
        if !valid {
            return fail(format!("key {key:?} not valid"));
        }
        content.insert(key.to_string(), value);
    }
    Ok(content)
}

fn find_secret<'s>(
    state: &'s ModelState,
    uri: Option<&String>,
    label: Option<&str>,
    unit: &str,
) -> Result<&'s Secret> {
    match (uri, label) {
        (Some(uri), _) => {
            let id = parse_secret_uri(uri);
            state
                .secrets
                .get(id)
                .ok_or_else(|| Error::Fail(format!("secret {id:?} not found")))
        }
        (None, Some(label)) => state
            .secrets
            .values()
            .find(|s| s.label.as_deref() == Some(label) && s.readable_as_owner(unit))
            .ok_or_else(|| Error::Fail(format!("secret with label {label:?} not found"))),
        (None, None) => Err(Error::Usage("require either a secret URI or label".into())),
    }
}

/// Has `unit` been granted `secret` (through a relation it is in)?
fn granted(state: &ModelState, secret: &Secret, unit: &str) -> bool {
    secret.grants.iter().any(|g| {
        let Some(rel) = state.relations.get(&g.relation_id) else {
            return false;
        };
        // Granted to the relation: the side that does not own it reads it
        // (our units, for a secret the remote application owns).
        let remote_owned =
            matches!(&secret.owner, SecretOwner::Application(a) if *a == rel.remote_app);
        rel.units.contains(unit)
            && match &g.unit {
                Some(u) => u == unit,
                None => app_of(unit) == rel.remote_app || remote_owned,
            }
    })
}

fn action<'s>(state: &'s mut ModelState, ctx: &Context) -> Result<&'s mut ActionState> {
    ctx.action_id
        .as_ref()
        .and_then(|id| state.actions.get_mut(id))
        .ok_or_else(|| Error::Fail("not running an action".into()))
}

/// Juju's action result keys: lowercase alphanumerics and `-`, nested with
/// `.`; `stdout`, `stderr` and their `-encoding` are reserved.
fn check_action_key(key: &str) -> Result<()> {
    for part in key.split('.') {
        let ok = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return fail(format!(
                "key {key:?} must start and end with lowercase alphanumeric, and contain only \
                 lowercase alphanumeric, hyphens and periods"
            ));
        }
    }
    if ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(&key) {
        return fail(format!("cannot set reserved action key {key:?}"));
    }
    Ok(())
}

/// `5432`, `5432/tcp`, `8000-8100/udp`, `icmp`.
fn normalise_port(arg: &str) -> Result<String> {
    if arg == "icmp" {
        return Ok(arg.to_string());
    }
    let (range, proto) = arg.split_once('/').unwrap_or((arg, "tcp"));
    let proto = proto.to_lowercase();
    let valid_number = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
    let valid = ["tcp", "udp"].contains(&proto.as_str())
        && match range.split_once('-') {
            Some((a, b)) => valid_number(a) && valid_number(b),
            None => valid_number(range),
        };
    if !valid {
        return Err(Error::Usage(format!(
            "expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp; got {arg:?}"
        )));
    }
    Ok(format!("{range}/{proto}"))
}

/// A tiny standard base64 decoder (no dependency for one flag).
mod base64_decode {
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in text.trim_end_matches('=').bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                _ => return None,
            } as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::state::{Relation, Unit};
    use std::collections::BTreeSet;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// pg/0 (leader) and pg/1 in `database-peers:0`, a hook context for each.
    fn inner() -> Inner {
        let mut state = ModelState {
            application: "pg".into(),
            config_defaults: serde_json::from_value(
                json!({"profile": "production", "n": 3, "unset": null}),
            )
            .unwrap(),
            ..ModelState::default()
        };
        for (i, leader) in [(0, true), (1, false)] {
            let name = format!("pg/{i}");
            state.units.insert(
                name.clone(),
                Unit {
                    name,
                    leader,
                    address: format!("10.0.0.{}", i + 1),
                    ..Unit::default()
                },
            );
        }
        state.relations.insert(
            0,
            Relation {
                id: 0,
                endpoint: "database-peers".into(),
                remote_app: "pg".into(),
                peer: true,
                units: BTreeSet::from(["pg/0".to_string(), "pg/1".to_string()]),
                ..Relation::default()
            },
        );
        let mut inner = Inner {
            state: state.clone(),
            ..Inner::default()
        };
        for u in ["pg/0", "pg/1"] {
            inner.contexts.insert(
                u.to_string(),
                Context {
                    unit: u.into(),
                    dispatch_path: "hooks/config-changed".into(),
                    relation_id: None,
                    remote_unit: None,
                    storage_id: None,
                    action_id: None,
                    working: state.clone(),
                    pending: vec![],
                    status_changes: vec![],
                    logs: vec![],
                },
            );
        }
        inner
    }

    fn call(inner: &mut Inner, ctx: &str, tool: &str, args: &[&str]) -> Reply {
        run(inner, ctx, tool, &strings(args), None)
    }

    fn commit(inner: &mut Inner, ctx: &str) {
        let ops = std::mem::take(&mut inner.contexts.get_mut(ctx).unwrap().pending);
        for op in &ops {
            state::apply(&mut inner.state, op);
        }
        for c in inner.contexts.values_mut() {
            c.working = inner.state.clone();
        }
    }

    #[test]
    fn config_get_all_includes_nulls() {
        let mut i = inner();
        i.state.config.insert("n".into(), json!(5));
        i.contexts.get_mut("pg/0").unwrap().working = i.state.clone();
        let all = call(&mut i, "pg/0", "config-get", &["--format=json", "--all"]);
        assert_eq!(
            all.stdout,
            "{\"n\":5,\"profile\":\"production\",\"unset\":null}\n"
        );
        let some = call(&mut i, "pg/0", "config-get", &["--format=json"]);
        assert_eq!(some.stdout, "{\"n\":5,\"profile\":\"production\"}\n");
        assert_eq!(
            call(&mut i, "pg/0", "config-get", &["profile"]).stdout,
            "production\n"
        );
        let bad = call(&mut i, "pg/0", "config-get", &["--nope"]);
        assert_eq!(
            (bad.code, bad.stderr.as_str()),
            (2, "ERROR option provided but not defined: --nope\n")
        );
    }

    #[test]
    fn relation_data_is_buffered_and_permissioned() {
        let mut i = inner();
        assert_eq!(
            call(
                &mut i,
                "pg/0",
                "relation-ids",
                &["database-peers", "--format=json"]
            )
            .stdout,
            "[\"database-peers:0\"]\n"
        );
        assert_eq!(
            call(
                &mut i,
                "pg/0",
                "relation-list",
                &["--format=json", "-r", "database-peers:0"]
            )
            .stdout,
            "[\"pg/1\"]\n"
        );
        let set = run(
            &mut i,
            "pg/0",
            "relation-set",
            &strings(&["-r", "database-peers:0", "--app", "--file", "-"]),
            Some("{\"k\": \"v\"}"),
        );
        assert_eq!(set.code, 0, "{set:?}");
        // The writer sees it at once, the other unit only after the commit.
        let get = [
            "--format=json",
            "-r",
            "database-peers:0",
            "--app",
            "-",
            "pg",
        ];
        assert_eq!(
            call(&mut i, "pg/0", "relation-get", &get).stdout,
            "{\"k\":\"v\"}\n"
        );
        assert_eq!(call(&mut i, "pg/1", "relation-get", &get).stdout, "{}\n");
        commit(&mut i, "pg/0");
        assert_eq!(
            call(&mut i, "pg/1", "relation-get", &get).stdout,
            "{\"k\":\"v\"}\n"
        );
        let denied = call(&mut i, "pg/1", "relation-set", &["-r", "0", "--app", "k=w"]);
        assert_eq!(denied.code, 1);
        assert!(denied.stderr.starts_with("ERROR "), "{denied:?}");
        assert_eq!(
            call(&mut i, "pg/1", "relation-set", &["-r", "0", "mine=1"]).code,
            0
        );
        assert_eq!(
            call(&mut i, "pg/1", "relation-get", &["-r", "0", "mine", "pg/1"]).stdout,
            "1\n"
        );
        assert_eq!(
            call(&mut i, "pg/0", "relation-get", &["-r", "9", "-", "pg/1"]).code,
            1
        );
    }

    #[test]
    fn secrets_need_a_grant_and_pin_revisions() {
        let mut i = inner();
        let add = call(
            &mut i,
            "pg/0",
            "secret-add",
            &["--owner", "unit", "password=one"],
        );
        assert_eq!(add.code, 0, "{add:?}");
        let uri = add.stdout.trim().to_string();
        assert!(uri.starts_with("secret:"));
        commit(&mut i, "pg/0");
        let get = ["--format=json", uri.as_str()];
        let denied = call(&mut i, "pg/1", "secret-get", &get);
        assert_eq!(
            (denied.code, denied.stderr.as_str()),
            (1, "ERROR permission denied\n")
        );
        assert_eq!(
            call(
                &mut i,
                "pg/1",
                "secret-grant",
                &["--relation", "0", "--unit", "pg/1", &uri]
            )
            .code,
            1
        );
        assert_eq!(
            call(
                &mut i,
                "pg/0",
                "secret-grant",
                &["--relation", "0", "--unit", "pg/1", &uri]
            )
            .code,
            0
        );
        commit(&mut i, "pg/0");
        assert_eq!(
            call(&mut i, "pg/1", "secret-get", &get).stdout,
            "{\"password\":\"one\"}\n"
        );
        commit(&mut i, "pg/1");
        assert_eq!(
            call(&mut i, "pg/0", "secret-set", &[&uri, "password=two"]).code,
            0
        );
        commit(&mut i, "pg/0");
        assert_eq!(
            call(&mut i, "pg/1", "secret-get", &get).stdout,
            "{\"password\":\"one\"}\n"
        );
        assert_eq!(
            call(
                &mut i,
                "pg/1",
                "secret-get",
                &["--format=json", &uri, "--refresh"]
            )
            .stdout,
            "{\"password\":\"two\"}\n"
        );
        let info = call(&mut i, "pg/0", "secret-info-get", &["--format=json", &uri]);
        let v: Value = serde_json::from_str(&info.stdout).unwrap();
        assert_eq!(v[parse_secret_uri(&uri)]["revision"], 2);
        // Application secrets: the leader only.
        assert_eq!(call(&mut i, "pg/1", "secret-add", &["password=x"]).code, 1);
    }

    #[test]
    fn status_is_immediate_and_checked() {
        let mut i = inner();
        let r = call(
            &mut i,
            "pg/1",
            "status-set",
            &["--application=False", "blocked", "--", "no"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(i.state.units["pg/1"].status.status, "blocked");
        assert_eq!(i.state.units["pg/1"].status.message, "no");
        assert_eq!(
            call(
                &mut i,
                "pg/1",
                "status-get",
                &["--include-data", "--format=json", "--application=false"]
            )
            .stdout,
            "{\"message\":\"no\",\"status\":\"blocked\",\"status-data\":{}}\n"
        );
        assert_eq!(
            call(
                &mut i,
                "pg/1",
                "status-set",
                &["--application=True", "active"]
            )
            .code,
            1
        );
        let bad = call(&mut i, "pg/0", "status-set", &["fine"]);
        assert_eq!(
            bad.stderr,
            "ERROR invalid status \"fine\", expected one of [maintenance blocked waiting active]\n"
        );
        let changes = &i.contexts["pg/1"].status_changes;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].from.status, "unknown");
    }

    #[test]
    fn ports_actions_and_misc() {
        let mut i = inner();
        assert_eq!(call(&mut i, "pg/0", "open-port", &["5432/tcp"]).code, 0);
        assert_eq!(call(&mut i, "pg/0", "open-port", &["8008"]).code, 0);
        assert_eq!(call(&mut i, "pg/0", "open-port", &["x/tcp"]).code, 2);
        assert_eq!(
            call(&mut i, "pg/0", "opened-ports", &["--format=json"]).stdout,
            "[\"5432/tcp\",\"8008/tcp\"]\n"
        );
        assert!(i.state.units["pg/0"].opened_ports.is_empty());
        assert_eq!(
            call(&mut i, "pg/0", "action-get", &["--format=json"]).stderr,
            "ERROR not running an action\n"
        );
        i.state.actions.insert(
            "1".into(),
            ActionState {
                params: serde_json::from_value(json!({"type": "full"})).unwrap(),
                status: "running".into(),
                ..ActionState::default()
            },
        );
        i.contexts.get_mut("pg/0").unwrap().action_id = Some("1".into());
        assert_eq!(
            call(&mut i, "pg/0", "action-get", &["--format=json"]).stdout,
            "{\"type\":\"full\"}\n"
        );
        assert_eq!(
            call(&mut i, "pg/0", "action-set", &["a.b=1", "c=x y"]).code,
            0
        );
        assert_eq!(call(&mut i, "pg/0", "action-set", &["stdout=1"]).code, 1);
        assert_eq!(call(&mut i, "pg/0", "action-set", &["Bad=1"]).code, 1);
        assert_eq!(
            i.state.actions["1"].results,
            serde_json::from_value::<Map<String, Value>>(json!({"a": {"b": "1"}, "c": "x y"}))
                .unwrap()
        );
        let missing = call(&mut i, "pg/0", "resource-get", &["snap"]);
        assert_eq!(missing.code, 1);
        assert!(
            missing.stderr.contains("resource#pg/snap not found"),
            "{missing:?}"
        );
        let net = call(
            &mut i,
            "pg/1",
            "network-get",
            &["--format=json", "database-peers"],
        );
        let v: Value = serde_json::from_str(&net.stdout).unwrap();
        assert_eq!(v["bind-addresses"][0]["addresses"][0]["value"], "10.0.0.2");
        assert_eq!(
            call(&mut i, "pg/0", "storage-get", &["--format=json"]).code,
            1
        );
        assert_eq!(call(&mut i, "nope", "is-leader", &[]).code, 1);
        assert_eq!(call(&mut i, "pg/0", "is-leader", &[]).stdout, "True\n");
        assert_eq!(
            call(&mut i, "pg/1", "is-leader", &["--format=json"]).stdout,
            "false\n"
        );
        assert_eq!(base64_decode::decode("aGk="), Some(b"hi".to_vec()));
    }
}
