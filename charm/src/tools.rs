//! Juju's hook tools behind one trait, [`HookTools`], and [`ProcessTools`],
//! which runs the real binaries with the argv of charm-snap.md §2.3 (the argv
//! ops' `hookcmds` uses) and parses their JSON.
//!
//! Every argv is built by a pure function in [`argv`] and every output parsed
//! by a pure function in [`parse`], so both are unit-tested without a Juju.
//! A tool that exits non-zero is a [`ToolError::Failed`] carrying its stderr.
//! Secret values never go on a command line: secret-add/secret-set get them
//! through `key#file=` files in a private temporary directory, relation-set
//! through stdin.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use crate::status::{Status, StatusKind};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line, values of secret-bearing arguments redacted.
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {tool}: {error}")]
    Spawn { tool: String, error: String },
    #[error("{tool} printed {output:?}, which is not what was expected: {error}")]
    Parse {
        tool: String,
        output: String,
        error: String,
    },
    #[error("cannot hand secret content to {tool}: {error}")]
    SecretFile { tool: String, error: String },
}

impl ToolError {
    /// The tool's stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Which databag of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bag<'a> {
    /// A unit's bag (this unit's own, or a remote unit's).
    Unit(&'a str),
    /// An application's bag (this application's own needs leadership to write).
    App(&'a str),
}

/// `juju-log --log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Owner of a new secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOwner {
    Application,
    Unit,
}

/// A secret to create with `secret-add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecret {
    pub label: Option<String>,
    pub description: Option<String>,
    pub owner: SecretOwner,
    pub content: BTreeMap<String, String>,
}

/// `storage-get` of one storage instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageInfo {
    pub kind: String,
    pub location: PathBuf,
}

/// The hook tools this charm uses. One implementation runs Juju's binaries
/// ([`ProcessTools`]); the model simulator provides the same binaries.
pub trait HookTools {
    /// `config-get --format=json --all`: every option, null when unset
    /// without a default.
    fn config_get(&self) -> Result<Map<String, Value>, ToolError>;
    fn is_leader(&self) -> Result<bool, ToolError>;
    /// Relation ids (`database-peers:3`) of an endpoint.
    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, ToolError>;
    /// Remote units of a relation (never this unit).
    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, ToolError>;
    /// The application at the other end (`relation-list --app`); `None`
    /// when Juju does not know it yet.
    fn relation_remote_app(&self, relation_id: &str) -> Result<Option<String>, ToolError>;
    fn relation_get(
        &self,
        relation_id: &str,
        bag: Bag<'_>,
    ) -> Result<BTreeMap<String, String>, ToolError>;
    /// Update keys of this unit's (or, leader only, this app's) bag; an empty
    /// value deletes the key. Committed by Juju only if the hook exits 0.
    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), ToolError>;
    /// Returns the new secret's URI.
    fn secret_add(&self, secret: &NewSecret) -> Result<String, ToolError>;
    /// `refresh`: move this unit's tracked revision to the latest.
    fn secret_get(&self, id: &str, refresh: bool) -> Result<BTreeMap<String, String>, ToolError>;
    /// A new revision with this content.
    fn secret_set(&self, id: &str, content: &BTreeMap<String, String>) -> Result<(), ToolError>;
    fn secret_grant(
        &self,
        id: &str,
        relation_id: &str,
        unit: Option<&str>,
    ) -> Result<(), ToolError>;
    fn secret_remove(&self, id: &str, revision: Option<u32>) -> Result<(), ToolError>;
    fn secret_ids(&self) -> Result<Vec<String>, ToolError>;
    fn status_get(&self, application: bool) -> Result<Status, ToolError>;
    fn status_set(&self, application: bool, status: &Status) -> Result<(), ToolError>;
    fn application_version_set(&self, version: &str) -> Result<(), ToolError>;
    /// `5432/tcp`.
    fn open_port(&self, port: &str) -> Result<(), ToolError>;
    fn opened_ports(&self) -> Result<Vec<String>, ToolError>;
    fn action_get(&self) -> Result<Map<String, Value>, ToolError>;
    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), ToolError>;
    fn action_fail(&self, message: &str) -> Result<(), ToolError>;
    fn action_log(&self, message: &str) -> Result<(), ToolError>;
    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), ToolError>;
    fn storage_get(&self, storage_id: Option<&str>) -> Result<StorageInfo, ToolError>;
    /// The first bind address of an endpoint binding (`network-get`).
    fn network_get_address(&self, binding: &str) -> Result<Option<String>, ToolError>;
    /// The local path of a resource; fails when none is attached.
    fn resource_get(&self, name: &str) -> Result<PathBuf, ToolError>;
}

/// One tool invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub tool: &'static str,
    pub args: Vec<String>,
    pub stdin: Option<String>,
    /// The arguments carry values that must not appear in an error message.
    pub redact: bool,
}

impl ToolCall {
    fn new(tool: &'static str, args: Vec<String>) -> Self {
        ToolCall {
            tool,
            args,
            stdin: None,
            redact: false,
        }
    }

    /// The command line for messages: `key=value` arguments lose their value
    /// when the call is redacted.
    pub fn display(&self) -> String {
        let mut parts = vec![self.tool.to_string()];
        for a in &self.args {
            match a.split_once('=') {
                Some((k, _)) if self.redact && !k.starts_with('-') => {
                    parts.push(format!("{k}=<redacted>"))
                }
                _ => parts.push(a.clone()),
            }
        }
        parts.join(" ")
    }
}

/// argv of every tool, as charm-snap.md §2.3 gives them.
pub mod argv {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|x| x.to_string()).collect()
    }

    pub fn config_get() -> ToolCall {
        ToolCall::new("config-get", s(&["--format=json", "--all"]))
    }

    pub fn is_leader() -> ToolCall {
        ToolCall::new("is-leader", s(&["--format=json"]))
    }

    pub fn relation_ids(endpoint: &str) -> ToolCall {
        ToolCall::new("relation-ids", s(&[endpoint, "--format=json"]))
    }

    pub fn relation_list(relation_id: &str) -> ToolCall {
        ToolCall::new("relation-list", s(&["--format=json", "-r", relation_id]))
    }

    pub fn relation_remote_app(relation_id: &str) -> ToolCall {
        ToolCall::new(
            "relation-list",
            s(&["--format=json", "--app", "-r", relation_id]),
        )
    }

    pub fn relation_get(relation_id: &str, bag: Bag<'_>) -> ToolCall {
        let args = match bag {
            Bag::Unit(unit) => s(&["--format=json", "-r", relation_id, "-", unit]),
            Bag::App(app) => s(&["--format=json", "-r", relation_id, "--app", "-", app]),
        };
        ToolCall::new("relation-get", args)
    }

    /// The data goes to stdin as a JSON map (JSON is YAML).
    pub fn relation_set(relation_id: &str, app: bool, data: &BTreeMap<String, String>) -> ToolCall {
        let mut args = s(&["-r", relation_id]);
        if app {
            args.push("--app".into());
        }
        args.extend(s(&["--file", "-"]));
        ToolCall {
            stdin: Some(serde_json::to_string(data).expect("a string map serializes")),
            ..ToolCall::new("relation-set", args)
        }
    }

    /// `key#file=<dir>/<key>` for every key; the caller writes the files.
    pub fn secret_add(secret: &NewSecret, dir: &Path) -> ToolCall {
        let mut args = Vec::new();
        if let Some(label) = &secret.label {
            args.extend(["--label".to_string(), label.clone()]);
        }
        if let Some(d) = &secret.description {
            args.extend(["--description".to_string(), d.clone()]);
        }
        let owner = match secret.owner {
            SecretOwner::Application => "application",
            SecretOwner::Unit => "unit",
        };
        args.extend(["--owner".to_string(), owner.to_string()]);
        args.extend(file_args(secret.content.keys(), dir));
        ToolCall::new("secret-add", args)
    }

    pub fn secret_get(id: &str, refresh: bool) -> ToolCall {
        let mut args = s(&["--format=json", id]);
        if refresh {
            args.push("--refresh".into());
        }
        ToolCall::new("secret-get", args)
    }

    pub fn secret_set<'k>(
        id: &str,
        keys: impl Iterator<Item = &'k String>,
        dir: &Path,
    ) -> ToolCall {
        let mut args = vec![id.to_string()];
        args.extend(file_args(keys, dir));
        ToolCall::new("secret-set", args)
    }

    fn file_args<'k>(keys: impl Iterator<Item = &'k String>, dir: &Path) -> Vec<String> {
        keys.map(|k| format!("{k}#file={}", dir.join(k).display()))
            .collect()
    }

    /// `--relation` takes the numeric id (ops passes the integer).
    pub fn secret_grant(id: &str, relation_id: &str, unit: Option<&str>) -> ToolCall {
        let number = relation_id.rsplit(':').next().unwrap_or(relation_id);
        let mut args = s(&["--relation", number]);
        if let Some(u) = unit {
            args.extend(s(&["--unit", u]));
        }
        args.push(id.to_string());
        ToolCall::new("secret-grant", args)
    }

    pub fn secret_remove(id: &str, revision: Option<u32>) -> ToolCall {
        let mut args = vec![id.to_string()];
        if let Some(r) = revision {
            args.extend(["--revision".to_string(), r.to_string()]);
        }
        ToolCall::new("secret-remove", args)
    }

    pub fn secret_ids() -> ToolCall {
        ToolCall::new("secret-ids", s(&["--format=json"]))
    }

    pub fn status_get(application: bool) -> ToolCall {
        let app = format!("--application={application}");
        ToolCall::new(
            "status-get",
            s(&["--include-data", "--format=json", app.as_str()]),
        )
    }

    /// `status-set --application=False <status> [-- <message>]`.
    pub fn status_set(application: bool, status: &Status) -> ToolCall {
        let app = if application {
            "--application=True"
        } else {
            "--application=False"
        };
        let mut args = s(&[app, status.kind.as_str()]);
        if !status.message.is_empty() {
            args.extend(["--".to_string(), status.message.clone()]);
        }
        ToolCall::new("status-set", args)
    }

    pub fn application_version_set(version: &str) -> ToolCall {
        ToolCall::new("application-version-set", s(&["--", version]))
    }

    pub fn open_port(port: &str) -> ToolCall {
        ToolCall::new("open-port", s(&[port]))
    }

    pub fn opened_ports() -> ToolCall {
        ToolCall::new("opened-ports", s(&["--format=json"]))
    }

    pub fn action_get() -> ToolCall {
        ToolCall::new("action-get", s(&["--format=json"]))
    }

    /// `action-set key=value ...`; redacted in messages (a password result).
    pub fn action_set(results: &BTreeMap<String, String>) -> ToolCall {
        ToolCall {
            redact: true,
            ..ToolCall::new(
                "action-set",
                results.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            )
        }
    }

    pub fn action_fail(message: &str) -> ToolCall {
        ToolCall::new("action-fail", s(&["--", message]))
    }

    pub fn action_log(message: &str) -> ToolCall {
        ToolCall::new("action-log", s(&["--", message]))
    }

    pub fn juju_log(level: LogLevel, message: &str) -> ToolCall {
        ToolCall::new(
            "juju-log",
            s(&["--log-level", level.as_str(), "--", message]),
        )
    }

    pub fn storage_get(storage_id: Option<&str>) -> ToolCall {
        let mut args = s(&["--format=json"]);
        if let Some(id) = storage_id {
            args.extend(s(&["-s", id]));
        }
        ToolCall::new("storage-get", args)
    }

    pub fn network_get(binding: &str) -> ToolCall {
        ToolCall::new("network-get", s(&["--format=json", binding]))
    }

    /// No `--format` flag: it prints the path.
    pub fn resource_get(name: &str) -> ToolCall {
        ToolCall::new("resource-get", s(&[name]))
    }
}

/// Parsers of the tools' JSON output (charm-snap.md §2.3 samples).
pub mod parse {
    use super::*;

    pub fn json<T: serde::de::DeserializeOwned>(tool: &str, out: &str) -> Result<T, ToolError> {
        serde_json::from_str(out.trim()).map_err(|e| ToolError::Parse {
            tool: tool.to_string(),
            output: out.chars().take(300).collect(),
            error: e.to_string(),
        })
    }

    pub fn config(out: &str) -> Result<Map<String, Value>, ToolError> {
        json("config-get", out)
    }

    pub fn is_leader(out: &str) -> Result<bool, ToolError> {
        json("is-leader", out)
    }

    /// A JSON list of strings; `null` (seen from some tools when empty) is [].
    pub fn string_list(tool: &str, out: &str) -> Result<Vec<String>, ToolError> {
        let v: Option<Vec<String>> = json(tool, out)?;
        Ok(v.unwrap_or_default())
    }

    /// A databag: values are strings; `null` when the bag is empty.
    pub fn databag(out: &str) -> Result<BTreeMap<String, String>, ToolError> {
        let v: Option<BTreeMap<String, String>> = json("relation-get", out)?;
        Ok(v.unwrap_or_default())
    }

    pub fn secret_content(out: &str) -> Result<BTreeMap<String, String>, ToolError> {
        json("secret-get", out)
    }

    pub fn secret_uri(out: &str) -> Result<String, ToolError> {
        let uri = out.trim();
        if uri.starts_with("secret:") || (!uri.is_empty() && !uri.contains(char::is_whitespace)) {
            Ok(uri.to_string())
        } else {
            Err(ToolError::Parse {
                tool: "secret-add".into(),
                output: uri.to_string(),
                error: "expected a secret URI".into(),
            })
        }
    }

    /// Unit: `{"status":..,"message":..,"status-data":{}}`; application:
    /// `{"application-status":{..},"units":{..}}`.
    pub fn status(out: &str, application: bool) -> Result<Status, ToolError> {
        let v: Value = json("status-get", out)?;
        let s = if application {
            v.get("application-status").cloned().unwrap_or(Value::Null)
        } else {
            v
        };
        let kind = s
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError::Parse {
                tool: "status-get".into(),
                output: out.chars().take(300).collect(),
                error: "no status field".into(),
            })?;
        Ok(Status {
            kind: StatusKind::parse(kind),
            message: s
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    pub fn action_params(out: &str) -> Result<Map<String, Value>, ToolError> {
        let v: Option<Map<String, Value>> = json("action-get", out)?;
        Ok(v.unwrap_or_default())
    }

    pub fn storage(out: &str) -> Result<StorageInfo, ToolError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            kind: String,
            location: PathBuf,
        }
        let raw: Raw = json("storage-get", out)?;
        Ok(StorageInfo {
            kind: raw.kind,
            location: raw.location,
        })
    }

    /// `bind-addresses[0].addresses[0].value`, else the first ingress address.
    pub fn network_address(out: &str) -> Result<Option<String>, ToolError> {
        let v: Value = json("network-get", out)?;
        let bound = v
            .get("bind-addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("addresses").and_then(Value::as_array))
            .flatten()
            .find_map(|a| a.get("value").and_then(Value::as_str).map(str::to_string));
        Ok(bound.or_else(|| {
            v.get("ingress-addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_string)
        }))
    }
}

/// Runs Juju's hook tools as processes.
#[derive(Debug, Clone, Default)]
pub struct ProcessTools {
    /// Where the tools are; `None`: found on PATH, as Juju arranges.
    pub tool_dir: Option<PathBuf>,
}

impl ProcessTools {
    pub fn new() -> Self {
        ProcessTools::default()
    }

    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        ProcessTools {
            tool_dir: Some(dir.into()),
        }
    }

    /// Run one call; its stdout, or an error carrying its stderr.
    pub fn run(&self, call: &ToolCall) -> Result<String, ToolError> {
        let program = match &self.tool_dir {
            Some(dir) => dir.join(call.tool),
            None => PathBuf::from(call.tool),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&call.args)
            .stdin(if call.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| ToolError::Spawn {
            tool: call.tool.to_string(),
            error: e.to_string(),
        })?;
        if let Some(input) = &call.stdin {
            if let Some(mut stdin) = child.stdin.take() {
                // A tool that exits without reading is reported by its status.
                let _ = stdin.write_all(input.as_bytes());
            }
        }
        let out = child.wait_with_output().map_err(|e| ToolError::Spawn {
            tool: call.tool.to_string(),
            error: e.to_string(),
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ToolError::Failed {
                command: call.display(),
                status: match out.status.code() {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".to_string(),
                },
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Write secret values to files in a fresh 0700 directory, run the call
    /// built for that directory, remove the directory.
    fn with_secret_files(
        &self,
        tool: &'static str,
        content: &BTreeMap<String, String>,
        build: impl FnOnce(&Path) -> ToolCall,
    ) -> Result<String, ToolError> {
        let dir = SecretDir::create().map_err(|e| ToolError::SecretFile {
            tool: tool.to_string(),
            error: e.to_string(),
        })?;
        for (k, v) in content {
            dir.write(k, v).map_err(|e| ToolError::SecretFile {
                tool: tool.to_string(),
                error: e.to_string(),
            })?;
        }
        self.run(&build(dir.path()))
    }
}

/// A private temporary directory, removed on drop.
struct SecretDir(PathBuf);

impl SecretDir {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "pgpilot-charm-secret-{}-{nanos}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(SecretDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, key: &str, value: &str) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.0.join(key))?;
        f.write_all(value.as_bytes())
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl HookTools for ProcessTools {
    fn config_get(&self) -> Result<Map<String, Value>, ToolError> {
        parse::config(&self.run(&argv::config_get())?)
    }

    fn is_leader(&self) -> Result<bool, ToolError> {
        parse::is_leader(&self.run(&argv::is_leader())?)
    }

    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, ToolError> {
        parse::string_list("relation-ids", &self.run(&argv::relation_ids(endpoint))?)
    }

    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, ToolError> {
        parse::string_list(
            "relation-list",
            &self.run(&argv::relation_list(relation_id))?,
        )
    }

    fn relation_remote_app(&self, relation_id: &str) -> Result<Option<String>, ToolError> {
        let app: Option<String> = parse::json(
            "relation-list",
            &self.run(&argv::relation_remote_app(relation_id))?,
        )?;
        Ok(app.filter(|a| !a.is_empty()))
    }

    fn relation_get(
        &self,
        relation_id: &str,
        bag: Bag<'_>,
    ) -> Result<BTreeMap<String, String>, ToolError> {
        parse::databag(&self.run(&argv::relation_get(relation_id, bag))?)
    }

    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), ToolError> {
        self.run(&argv::relation_set(relation_id, app, data))
            .map(drop)
    }

    fn secret_add(&self, secret: &NewSecret) -> Result<String, ToolError> {
        let out = self.with_secret_files("secret-add", &secret.content, |dir| {
            argv::secret_add(secret, dir)
        })?;
        parse::secret_uri(&out)
    }

    fn secret_get(&self, id: &str, refresh: bool) -> Result<BTreeMap<String, String>, ToolError> {
        parse::secret_content(&self.run(&argv::secret_get(id, refresh))?)
    }

    fn secret_set(&self, id: &str, content: &BTreeMap<String, String>) -> Result<(), ToolError> {
        self.with_secret_files("secret-set", content, |dir| {
            argv::secret_set(id, content.keys(), dir)
        })
        .map(drop)
    }

    fn secret_grant(
        &self,
        id: &str,
        relation_id: &str,
        unit: Option<&str>,
    ) -> Result<(), ToolError> {
        self.run(&argv::secret_grant(id, relation_id, unit))
            .map(drop)
    }

    fn secret_remove(&self, id: &str, revision: Option<u32>) -> Result<(), ToolError> {
        self.run(&argv::secret_remove(id, revision)).map(drop)
    }

    fn secret_ids(&self) -> Result<Vec<String>, ToolError> {
        parse::string_list("secret-ids", &self.run(&argv::secret_ids())?)
    }

    fn status_get(&self, application: bool) -> Result<Status, ToolError> {
        parse::status(&self.run(&argv::status_get(application))?, application)
    }

    fn status_set(&self, application: bool, status: &Status) -> Result<(), ToolError> {
        self.run(&argv::status_set(application, status)).map(drop)
    }

    fn application_version_set(&self, version: &str) -> Result<(), ToolError> {
        self.run(&argv::application_version_set(version)).map(drop)
    }

    fn open_port(&self, port: &str) -> Result<(), ToolError> {
        self.run(&argv::open_port(port)).map(drop)
    }

    fn opened_ports(&self) -> Result<Vec<String>, ToolError> {
        parse::string_list("opened-ports", &self.run(&argv::opened_ports())?)
    }

    fn action_get(&self) -> Result<Map<String, Value>, ToolError> {
        parse::action_params(&self.run(&argv::action_get())?)
    }

    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), ToolError> {
        self.run(&argv::action_set(results)).map(drop)
    }

    fn action_fail(&self, message: &str) -> Result<(), ToolError> {
        self.run(&argv::action_fail(message)).map(drop)
    }

    fn action_log(&self, message: &str) -> Result<(), ToolError> {
        self.run(&argv::action_log(message)).map(drop)
    }

    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), ToolError> {
        self.run(&argv::juju_log(level, message)).map(drop)
    }

    fn storage_get(&self, storage_id: Option<&str>) -> Result<StorageInfo, ToolError> {
        parse::storage(&self.run(&argv::storage_get(storage_id))?)
    }

    fn network_get_address(&self, binding: &str) -> Result<Option<String>, ToolError> {
        parse::network_address(&self.run(&argv::network_get(binding))?)
    }

    fn resource_get(&self, name: &str) -> Result<PathBuf, ToolError> {
        let out = self.run(&argv::resource_get(name))?;
        Ok(PathBuf::from(out.trim()))
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
