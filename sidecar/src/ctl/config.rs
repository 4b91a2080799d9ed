//! `pgpilot ctl pause`, `resume`, `show-config` and `edit-config`: the
//! cluster-wide configuration kept in etcd's `config` key.
//!
//! show-config prints it as TOML by default (the form of the `[bootstrap]`
//! section of the member file, so it can be copied there) or as JSON (what
//! etcd holds and `GET /config` returns). edit-config shows a unified diff
//! of that TOML and applies the change with `PATCH /config` through a
//! member's REST API, conditional on the revision it showed (so a change
//! made meanwhile by someone else is never overwritten), which also checks
//! PostgreSQL parameter names and values against the running server. When
//! no member's API answers it writes to etcd directly, with the same
//! compare-and-swap.

use std::time::{Duration, Instant};

use axum::http::{header, Method};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::{Map, Value};

use super::diff::unified;
use super::rest::{self, body_text, call_first, confirm, print};
use super::{CtlError, Target};
use crate::api::config::{merge_patch, parse_config};
use crate::cluster::ClusterView;
use crate::dcs::keys;
use crate::dynamic::DynamicConfig;
use crate::status::NodeStatus;

#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// Wait until every member reports the new state.
    #[arg(long)]
    pub wait: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// TOML, as the member file's [bootstrap] section takes it.
    Toml,
    /// JSON, as stored in etcd and served by GET /config.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ShowConfigArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ConfigFormat::Toml)]
    pub format: ConfigFormat,
}

#[derive(clap::Args, Debug)]
pub struct EditConfigArgs {
    /// Set a key: KEY=VALUE, nested keys with dots (ttl=30,
    /// postgresql.use_pg_rewind=false); VALUE null removes the key (back to
    /// its default). Repeatable.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a PostgreSQL parameter: NAME=VALUE (same as -s
    /// postgresql.parameters.NAME=VALUE). Repeatable.
    #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE")]
    pub pg: Vec<String>,
    /// Do not print the diff.
    #[arg(short, long)]
    pub quiet: bool,
    /// Apply without asking for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// The configuration as show-config and the diff print it.
pub fn render(config: &DynamicConfig, format: ConfigFormat) -> String {
    match format {
        ConfigFormat::Toml => toml::to_string(config).expect("the configuration serializes"),
        ConfigFormat::Json => {
            let mut s = serde_json::to_string_pretty(config).expect("the configuration serializes");
            s.push('\n');
            s
        }
    }
}

/// A value given on the command line: null, true/false, a number, JSON
/// (`{...}`, `[...]`), a quoted string, or else the text itself.
pub fn parse_value(text: &str) -> Value {
    let t = text.trim();
    match t {
        "null" | "~" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() && t.chars().any(|c| c.is_ascii_digit()) {
            return Value::from(f);
        }
    }
    if t.starts_with('{') || t.starts_with('[') || t.starts_with('"') {
        if let Ok(v) = serde_json::from_str(t) {
            return v;
        }
    }
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        return Value::String(t[1..t.len() - 1].to_string());
    }
    Value::String(t.to_string())
}

/// The merge patch for `-s KEY=VALUE` and `-p NAME=VALUE` arguments.
pub fn build_patch(set: &[String], pg: &[String]) -> Result<Value, CtlError> {
    let mut patch = Map::new();
    let split = |arg: &str, flag: &str| -> Result<(String, Value), CtlError> {
        match arg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), parse_value(v))),
            _ => Err(CtlError::usage(format!(
                "{flag} {arg:?}: use {flag} KEY=VALUE"
            ))),
        }
    };
    let mut entries = Vec::new();
    for arg in set {
        let (key, value) = split(arg, "-s")?;
        if key.split('.').any(|part| part.trim().is_empty()) {
            return Err(CtlError::usage(format!(
                "-s {arg:?}: {key:?} is not a key (dotted names, no empty parts)"
            )));
        }
        entries.push((
            key.split('.').map(str::to_string).collect::<Vec<_>>(),
            value,
        ));
    }
    for arg in pg {
        let (name, value) = split(arg, "-p")?;
        entries.push((
            vec!["postgresql".to_string(), "parameters".to_string(), name],
            value,
        ));
    }
    for (path, value) in entries {
        set_path(&mut patch, &path, value);
    }
    Ok(Value::Object(patch))
}

fn set_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let (first, rest) = path.split_first().expect("paths are not empty");
    if rest.is_empty() {
        map.insert(first.clone(), value);
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    set_path(entry.as_object_mut().expect("an object"), rest, value);
}

/// The configuration after the patch, checked as the REST API checks it.
pub fn apply_patch(current: &DynamicConfig, patch: &Value) -> Result<DynamicConfig, CtlError> {
    let mut doc = serde_json::to_value(current).expect("the configuration serializes");
    merge_patch(&mut doc, patch);
    parse_config(doc).map_err(CtlError::usage)
}

fn current_config(view: &ClusterView, scope: &str) -> Result<DynamicConfig, CtlError> {
    view.config.clone().ok_or_else(|| {
        CtlError::failure(format!(
            "cluster {scope} has no configuration in etcd yet (not bootstrapped)"
        ))
    })
}

pub async fn run_show(target: &Target, args: &ShowConfigArgs) -> Result<(), CtlError> {
    let (_, view) = super::fetch_view(target).await?;
    let config = current_config(&view, &target.scope)?;
    print(&render(&config, args.format))
}

pub async fn run_edit(target: &Target, args: &EditConfigArgs) -> Result<(), CtlError> {
    if args.set.is_empty() && args.pg.is_empty() {
        return Err(CtlError::usage(
            "nothing to change: give -s KEY=VALUE or -p NAME=VALUE (see show-config for the keys)",
        ));
    }
    let patch = build_patch(&args.set, &args.pg)?;
    async {
        let (mut etcd, view) = super::fetch_view(target).await?;
        let current = current_config(&view, &target.scope)?;
        let new = apply_patch(&current, &patch)?;
        let before = render(&current, ConfigFormat::Toml);
        let after = render(&new, ConfigFormat::Toml);
        if before == after {
            return print("Not changed\n");
        }
        if !args.quiet {
            print(&unified(&before, &after, "", "", 3))?;
        }
        confirm("Apply these changes?", args.force)?;

        let revision = view.config_revision;
        let client = rest::client(target, Duration::from_secs(30))?;
        let if_match = [(header::IF_MATCH, format!("\"{revision}\""))];
        let mut unreachable = Vec::new();
        for member in rest::leader_first(&view) {
            let url = rest::url(member, "/config");
            match client
                .request_with_headers(Method::PATCH, &url, Some(&patch), &if_match)
                .await
            {
                Ok(reply) if reply.is_success() => return print("Configuration changed\n"),
                Ok(reply) if reply.status == 400 => {
                    return Err(CtlError::usage(format!(
                        "{} refused the change: {}",
                        member.name,
                        body_text(&reply)
                    )))
                }
                Ok(reply) => {
                    return Err(CtlError::failure(format!(
                        "{} refused the change: {} (HTTP {})",
                        member.name,
                        body_text(&reply),
                        reply.status
                    )))
                }
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        eprintln!(
            "pgpilot ctl: no member's REST API answered ({}); writing to etcd directly \
             (PostgreSQL parameters are not checked against a running server)",
            if unreachable.is_empty() {
                "no members".to_string()
            } else {
                unreachable.join("; ")
            }
        );
        let key = format!("{}{}", target.prefix(), keys::CONFIG);
        let value = serde_json::to_string(&new).expect("the configuration serializes");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        let done = etcd
            .txn(txn)
            .await
            .map_err(|e| CtlError::failure(format!("cannot write the configuration to etcd: {e}")))?
            .succeeded();
        if done {
            print("Configuration changed\n")
        } else {
            Err(CtlError::failure(
                "the configuration changed in etcd meanwhile; run edit-config again",
            ))
        }
    }
    .await
}

pub async fn run_pause(target: &Target, args: &PauseArgs, pause: bool) -> Result<(), CtlError> {
    async {
        let (_, view) = super::fetch_view(target).await?;
        let current = current_config(&view, &target.scope)?;
        if current.pause == pause {
            return Err(CtlError::failure(if pause {
                "Cluster is already paused"
            } else {
                "Cluster is not paused"
            }));
        }
        let body =
            serde_json::json!({ "pause": if pause { Value::Bool(true) } else { Value::Null } });
        let client = rest::client(target, Duration::from_secs(30))?;
        let members = rest::leader_first(&view);
        let (member, reply) =
            call_first(&client, &members, Method::PATCH, "/config", Some(&body)).await?;
        if !reply.is_success() {
            return Err(CtlError::failure(format!(
                "{member} refused: {} (HTTP {})",
                body_text(&reply),
                reply.status
            )));
        }
        let what = if pause { "paused" } else { "resumed" };
        if args.wait {
            print(&format!(
                "'{}' request sent, waiting until it is recognized by all members\n",
                if pause { "pause" } else { "resume" }
            ))?;
            wait_for_pause(target, &view, pause).await?;
        }
        print(&format!("Success: cluster management is {what}\n"))
    }
    .await
}

/// Poll every member's `/patroni` until all that answer report `pause`.
async fn wait_for_pause(target: &Target, view: &ClusterView, pause: bool) -> Result<(), CtlError> {
    let client = rest::client(target, Duration::from_secs(3))?;
    let loop_wait = view.config.as_ref().map(|c| c.loop_wait).unwrap_or(10);
    let limit = Duration::from_secs(2 * loop_wait.max(10) + 30);
    let started = Instant::now();
    loop {
        let mut lagging = Vec::new();
        for member in &view.members {
            if let Ok(status) = client
                .get_json::<NodeStatus>(&rest::url(member, "/patroni"))
                .await
            {
                if status.pause != pause {
                    lagging.push(member.name.clone());
                }
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(CtlError::failure(format!(
                "members not yet {}: {} (after {}s)",
                if pause { "paused" } else { "resumed" },
                lagging.join(", "),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParamValue;
    use serde_json::json;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values() {
        assert_eq!(parse_value("30"), json!(30));
        assert_eq!(parse_value("0.9"), json!(0.9));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("null"), Value::Null);
        assert_eq!(parse_value("64MB"), json!("64MB"));
        assert_eq!(parse_value("'30'"), json!("30"));
        assert_eq!(parse_value("\"on\""), json!("on"));
        assert_eq!(parse_value("{\"a\": 1}"), json!({"a": 1}));
        assert_eq!(parse_value("inf"), json!("inf"));
        assert_eq!(parse_value("%m [%p] "), json!("%m [%p]"));
    }

    #[test]
    fn patch_from_arguments() {
        let p = build_patch(
            &strings(&["ttl=30", "postgresql.use_pg_rewind=false", "pause=null"]),
            &strings(&["work_mem=64MB", "max_connections=90"]),
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"ttl": 30, "pause": null, "postgresql": {"use_pg_rewind": false,
                   "parameters": {"work_mem": "64MB", "max_connections": 90}}})
        );
        assert_eq!(
            build_patch(&strings(&["ttl"]), &[]).unwrap_err().code,
            crate::exit::USAGE
        );
        assert_eq!(
            build_patch(&strings(&["a..b=1"]), &[]).unwrap_err().code,
            crate::exit::USAGE
        );
    }

    #[test]
    fn applying_checks_like_the_api() {
        let current = DynamicConfig::default();
        let new = apply_patch(
            &current,
            &build_patch(
                &strings(&["ttl=30", "loop_wait=5"]),
                &strings(&["work_mem=8MB"]),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!((new.ttl, new.loop_wait), (30, 5));
        assert_eq!(
            new.postgresql.parameters["work_mem"],
            ParamValue::Text("8MB".into())
        );
        let e =
            apply_patch(&current, &build_patch(&strings(&["tll=3"]), &[]).unwrap()).unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("key `tll`"), "{}", e.message);
    }

    #[test]
    fn toml_diff_of_an_edit() {
        let current = DynamicConfig::default();
        let new = apply_patch(&current, &build_patch(&strings(&["ttl=30"]), &[]).unwrap()).unwrap();
        let d = unified(
            &render(&current, ConfigFormat::Toml),
            &render(&new, ConfigFormat::Toml),
            "",
            "",
            3,
        );
        assert!(d.contains("\n-ttl = 10\n+ttl = 30\n"), "{d}");
    }

    #[test]
    fn toml_rendering_has_the_bootstrap_shape() {
        let mut c = DynamicConfig::default();
        c.postgresql
            .parameters
            .insert("work_mem".into(), ParamValue::Text("8MB".into()));
        let text = render(&c, ConfigFormat::Toml);
        assert!(text.starts_with("ttl = 10\nloop_wait = 2\n"), "{text}");
        assert!(
            text.contains("[postgresql.parameters]\nwork_mem = \"8MB\"\n"),
            "{text}"
        );
        // And it reads back as a [bootstrap] section would.
        let back: DynamicConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
