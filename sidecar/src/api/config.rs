//! `PATCH /config` (JSON merge patch) and `PUT /config` (full replace) of the
//! cluster-wide configuration, and the pure pieces `pgpilot ctl edit-config`
//! shares: merge patch, parsing with errors that name the key, parameter
//! checks against the running server's `pg_settings`.
//!
//! Nothing is written unless the whole result parses and validates; the
//! write is a compare-and-swap on the revision that was read (409 when
//! someone else changed it meanwhile). Every member applies the change at
//! its next HA cycle.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::ApiState;
use crate::cluster::ClusterView;
use crate::config::ParamValue;
use crate::dcs::Dcs;
use crate::dynamic::DynamicConfig;

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes a
/// key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A JSON document as the dynamic configuration, validated. The error
/// names the key: `invalid configuration: key `ttl`: ...`.
pub fn parse_config(value: Value) -> Result<DynamicConfig, String> {
    let config: DynamicConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let join = |field: &str| {
            if path == "." || path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            }
        };
        let (key, message) = if let Some(field) = quoted_after(&message, "unknown field `") {
            // The path already ends with the unknown key.
            let key = if path == field || path.ends_with(&format!(".{field}")) {
                path.clone()
            } else {
                join(field)
            };
            (key, format!("unknown key ({message})"))
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            (join(field), message.clone())
        } else if message.contains("untagged enum ParamValue") {
            (
                path.clone(),
                "must be a string, a number or a boolean".to_string(),
            )
        } else {
            (path.clone(), message.clone())
        };
        format!("invalid configuration: key `{key}`: {message}")
    })?;
    config
        .validate("")
        .map_err(|inv| format!("invalid configuration: key `{}`: {}", inv.key, inv.message))?;
    Ok(config)
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

pub use crate::postgres::guc::{check_value, Setting};

/// Check the parameters that `new` sets differently from `old` against the
/// settings PostgreSQL knows. `known` holds the rows found for them;
/// placeholders of extensions (names with a dot) may be unknown.
pub fn check_parameters(
    new: &DynamicConfig,
    old: Option<&DynamicConfig>,
    known: &[Setting],
) -> Result<(), String> {
    for (name, value) in changed_parameters(new, old) {
        let key = format!("postgresql.parameters.{name}");
        match known.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            Some(setting) => check_value(setting, value)
                .map_err(|m| format!("invalid configuration: key `{key}`: {m}"))?,
            None if name.contains('.') => {}
            None => {
                return Err(format!(
                    "invalid configuration: key `{key}`: PostgreSQL has no parameter {name:?}"
                ))
            }
        }
    }
    Ok(())
}

/// Parameters `new` adds or changes compared with `old`.
pub fn changed_parameters<'a>(
    new: &'a DynamicConfig,
    old: Option<&DynamicConfig>,
) -> Vec<(&'a str, &'a ParamValue)> {
    new.postgresql
        .parameters
        .iter()
        .filter(|(name, value)| {
            old.and_then(|o| o.postgresql.parameters.get(*name)) != Some(*value)
        })
        .map(|(name, value)| (name.as_str(), value))
        .collect()
}

/// Ask the local PostgreSQL what it knows about `names`; `None` when it is
/// not running or does not answer quickly (the check is then skipped).
async fn settings_of<D: Dcs>(state: &ApiState<D>, names: Vec<String>) -> Option<Vec<Setting>> {
    if names.is_empty() {
        return Some(Vec::new());
    }
    let pg = &state.shared.postgres;
    if !pg.is_running() {
        return None;
    }
    let lookup = pg.with_client(async |client| {
        let rows = client
            .query(
                "SELECT name::text, vartype::text, COALESCE(enumvals, '{}')::text[], \
                 min_val::text, max_val::text, unit::text \
                 FROM pg_settings WHERE lower(name) = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| crate::postgres::PgError::Sql(e.to_string()))?;
        Ok(rows
            .iter()
            .map(|r| Setting {
                name: r.get(0),
                vartype: r.get(1),
                enumvals: r.get(2),
                min_val: r.get(3),
                max_val: r.get(4),
                unit: r.get(5),
            })
            .collect::<Vec<_>>())
    });
    match tokio::time::timeout(Duration::from_secs(3), lookup).await {
        Ok(Ok(settings)) => Some(settings),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "cannot check parameters against pg_settings");
            None
        }
        Err(_) => None,
    }
}

async fn verify_parameters<D: Dcs>(
    state: &ApiState<D>,
    new: &DynamicConfig,
    old: Option<&DynamicConfig>,
) -> Result<(), String> {
    let names: Vec<String> = changed_parameters(new, old)
        .into_iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    match settings_of(state, names).await {
        Some(known) => check_parameters(new, old, &known),
        None => Ok(()),
    }
}

/// The request body as a non-empty JSON object.
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request needs a JSON object as its body".into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    match &value {
        Value::Object(map) if !map.is_empty() => Ok(value),
        Value::Object(_) => Err("the body is an empty JSON object".into()),
        _ => Err("the body must be a JSON object".into()),
    }
}

/// A fresh read of the store, or a message for a 503.
pub async fn load_fresh<D: Dcs>(state: &ApiState<D>) -> Result<ClusterView, String> {
    match tokio::time::timeout(Duration::from_secs(5), state.dcs.load()).await {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(e)) => Err(format!("cannot read the cluster from etcd: {e}")),
        Err(_) => Err("cannot read the cluster from etcd: no answer within 5s".into()),
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn json_config(config: &DynamicConfig) -> Response {
    axum::Json(config).into_response()
}

/// `If-Match: "<revision>"` (an extension `pgpilot ctl edit-config` uses):
/// change the configuration only if it still is at that etcd revision.
pub(crate) fn expected_revision(headers: &HeaderMap) -> Result<Option<i64>, String> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| "If-Match must hold the configuration's revision, e.g. \"42\"".to_string())
}

fn stale(expected: Option<i64>, view: &ClusterView) -> Option<Response> {
    let expected = expected?;
    (view.config_revision != expected).then(|| {
        text(
            StatusCode::CONFLICT,
            format!(
                "the configuration changed in etcd since revision {expected} (now {}); read it again and retry",
                view.config_revision
            ),
        )
    })
}

pub async fn patch<D: Dcs>(
    State(state): State<ApiState<D>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = match expected_revision(&headers) {
        Ok(e) => e,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let patch = match parse_body(&body) {
        Ok(p) => p,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let view = match load_fresh(&state).await {
        Ok(v) => v,
        Err(m) => return text(StatusCode::SERVICE_UNAVAILABLE, m),
    };
    if let Some(conflict) = stale(expected, &view) {
        return conflict;
    }
    let Some(current) = &view.config else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster has no configuration in etcd yet (not bootstrapped)",
        );
    };
    let mut value = serde_json::to_value(current).expect("the configuration serializes");
    merge_patch(&mut value, &patch);
    let new = match parse_config(value) {
        Ok(c) => c,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    if &new == current {
        return json_config(&new);
    }
    if let Err(m) = verify_parameters(&state, &new, Some(current)).await {
        return text(StatusCode::BAD_REQUEST, m);
    }
    match state
        .dcs
        .write_config(&new, Some(view.config_revision))
        .await
    {
        Ok(true) => {
            tracing::info!(patch = %patch, "cluster configuration changed through PATCH /config");
            state.shared.wake.notify_one();
            json_config(&new)
        }
        Ok(false) => text(
            StatusCode::CONFLICT,
            "the configuration changed in etcd meanwhile; read it again and retry",
        ),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot write the configuration to etcd: {e}"),
        ),
    }
}

pub async fn put<D: Dcs>(
    State(state): State<ApiState<D>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = match expected_revision(&headers) {
        Ok(e) => e,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let value = match parse_body(&body) {
        Ok(v) => v,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let new = match parse_config(value) {
        Ok(c) => c,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let view = match load_fresh(&state).await {
        Ok(v) => v,
        Err(m) => return text(StatusCode::SERVICE_UNAVAILABLE, m),
    };
    if let Some(conflict) = stale(expected, &view) {
        return conflict;
    }
    if view.config.as_ref() == Some(&new) {
        return json_config(&new);
    }
    if let Err(m) = verify_parameters(&state, &new, view.config.as_ref()).await {
        return text(StatusCode::BAD_REQUEST, m);
    }
    let expected = view.config.as_ref().map(|_| view.config_revision);
    match state.dcs.write_config(&new, expected).await {
        Ok(true) => {
            tracing::info!("cluster configuration replaced through PUT /config");
            state.shared.wake.notify_one();
            json_config(&new)
        }
        Ok(false) => text(
            StatusCode::CONFLICT,
            "the configuration changed in etcd meanwhile; read it again and retry",
        ),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("cannot write the configuration to etcd: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3], "b": {"x": null, "y": 1}}));
        assert_eq!(doc, json!({"a": [3], "b": {"y": 1}}));
        let mut doc = json!("scalar");
        merge_patch(&mut doc, &json!({"k": 1}));
        assert_eq!(doc, json!({"k": 1}));
    }

    fn current() -> Value {
        serde_json::to_value(DynamicConfig::default()).unwrap()
    }

    fn patched(patch: Value) -> Result<DynamicConfig, String> {
        let mut doc = current();
        merge_patch(&mut doc, &patch);
        parse_config(doc)
    }

    #[test]
    fn patch_sets_and_deletes() {
        let c = patched(json!({"ttl": 20, "loop_wait": 3, "pause": true,
            "postgresql": {"parameters": {"work_mem": "12MB"}}}))
        .unwrap();
        assert_eq!((c.ttl, c.loop_wait, c.pause), (20, 3, true));
        assert_eq!(
            c.postgresql.parameters["work_mem"],
            ParamValue::Text("12MB".into())
        );
        let mut doc = serde_json::to_value(&c).unwrap();
        merge_patch(&mut doc, &json!({"pause": null, "ttl": null}));
        let c = parse_config(doc).unwrap();
        assert!(!c.pause);
        assert_eq!(c.ttl, DynamicConfig::default().ttl);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = patched(json!({"tll": 20})).unwrap_err();
        assert!(
            e.starts_with("invalid configuration: key `tll`: unknown key"),
            "{e}"
        );
        let e = patched(json!({"postgresql": {"paramters": {}}})).unwrap_err();
        assert!(e.contains("key `postgresql.paramters`"), "{e}");
    }

    #[test]
    fn wrong_types_and_invalid_values_are_named() {
        let e = patched(json!({"ttl": "soon"})).unwrap_err();
        assert!(e.contains("key `ttl`"), "{e}");
        let e = patched(json!({"postgresql": {"parameters": {"work_mem": {"x": 1}}}})).unwrap_err();
        assert!(
            e.contains("key `postgresql.parameters.work_mem`: must be a string"),
            "{e}"
        );
        let e = patched(json!({"ttl": 5, "loop_wait": 2, "retry_timeout": 3})).unwrap_err();
        assert!(e.contains("key `ttl`") && e.contains("exceeds ttl"), "{e}");
        let e = patched(json!({"postgresql": {"parameters": {"port": 5433}}})).unwrap_err();
        assert!(e.contains("key `postgresql.parameters.port`"), "{e}");
    }

    #[test]
    fn bodies_must_be_non_empty_objects() {
        assert!(parse_body(b"").is_err());
        assert!(parse_body(b"{}").is_err());
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(b"{\"ttl\":").is_err());
        assert!(parse_body(b"{\"ttl\": 30}").is_ok());
    }

    fn setting(name: &str, vartype: &str, enumvals: &[&str]) -> Setting {
        Setting {
            name: name.into(),
            vartype: vartype.into(),
            enumvals: enumvals.iter().map(|s| s.to_string()).collect(),
            unit: (vartype == "integer").then(|| "kB".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn values_are_checked_by_type() {
        let int = setting("work_mem", "integer", &[]);
        assert!(check_value(&int, &ParamValue::Text("64MB".into())).is_ok());
        assert!(check_value(&int, &ParamValue::Int(4096)).is_ok());
        assert!(check_value(&int, &ParamValue::Text("lots".into())).is_err());
        assert!(check_value(&int, &ParamValue::Text("64 XB".into())).is_err());
        let b = setting("hot_standby", "bool", &[]);
        assert!(check_value(&b, &ParamValue::Bool(false)).is_ok());
        assert!(check_value(&b, &ParamValue::Text("On".into())).is_ok());
        assert!(check_value(&b, &ParamValue::Text("maybe".into())).is_err());
        let e = setting("wal_level", "enum", &["minimal", "replica", "logical"]);
        assert!(check_value(&e, &ParamValue::Text("logical".into())).is_ok());
        let err = check_value(&e, &ParamValue::Text("archive".into())).unwrap_err();
        assert!(err.contains("minimal, replica, logical"), "{err}");
        let r = setting("checkpoint_completion_target", "real", &[]);
        assert!(check_value(&r, &ParamValue::Float(0.9)).is_ok());
    }

    #[test]
    fn unknown_parameters_are_refused_unless_placeholders() {
        let mut new = DynamicConfig::default();
        new.postgresql
            .parameters
            .insert("wrok_mem".into(), ParamValue::Text("1MB".into()));
        let e = check_parameters(&new, None, &[]).unwrap_err();
        assert!(e.contains("key `postgresql.parameters.wrok_mem`"), "{e}");
        let mut new = DynamicConfig::default();
        new.postgresql
            .parameters
            .insert("pg_stat_statements.max".into(), ParamValue::Int(1000));
        assert!(check_parameters(&new, None, &[]).is_ok());
        // Unchanged parameters are not checked again.
        let mut old = DynamicConfig::default();
        old.postgresql
            .parameters
            .insert("legacy_thing".into(), ParamValue::Int(1));
        let new = old.clone();
        assert!(check_parameters(&new, Some(&old), &[]).is_ok());
    }
}
