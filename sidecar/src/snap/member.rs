//! The `pgpilot.*` snap keys → the member file, checked by the same code
//! `pgpilot run` uses. Pure: no I/O but what `Config::validate` reads (TLS
//! files named by the configuration).
//!
//! The rule is one: a snap key is the member-file key with `-` for `_`
//! (snapd allows no underscores), under `pgpilot.` — `pgpilot.bootstrap.loop-wait`
//! is `[bootstrap] loop_wait`, `pgpilot.postgresql.parameters.shared-buffers`
//! is `[postgresql.parameters] shared_buffers`.

use serde_json::{Map, Value};

use super::{Outcome, SnapError, SnapPaths};
use crate::config::{Config, ConfigError};

/// `postgresql.authentication.superuser.password` → `pgpilot.postgresql.authentication.superuser.password`,
/// `bootstrap.loop_wait` → `pgpilot.bootstrap.loop-wait`.
pub fn snap_key(file_key: &str) -> String {
    format!("pgpilot.{}", file_key.replace('_', "-"))
}

/// Snap keys (dashes) → file keys (underscores), checking each name has
/// snapd's syntax: lower-case letters, digits and dashes.
fn to_file_keys(value: &Value, at: &str) -> Result<Value, SnapError> {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let valid = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !k.starts_with('-')
                    && !k.ends_with('-');
                if !valid {
                    return Err(SnapError::new(
                        format!("pgpilot.{here}"),
                        "snap keys are lower-case letters, digits and dashes \
                         (write `-` where the member file has `_`)",
                    ));
                }
                out.insert(k.replace('-', "_"), to_file_keys(v, &here)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Set `path` (dotted, file keys) to `value` unless something is there.
fn default_at(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut map = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            map.entry(part.to_string()).or_insert(value);
            return;
        }
        let entry = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(m) => map = m,
            // A scalar where a table belongs: leave it for the parser to name.
            _ => return,
        }
    }
}

fn get_at<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = root.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn get_at_mut<'a>(root: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut value = root.get_mut(parts.next()?)?;
    for part in parts {
        value = value.as_object_mut()?.get_mut(part)?;
    }
    Some(value)
}

/// The paths the snap decides, filled in where the operator set nothing.
fn apply_snap_defaults(root: &mut Map<String, Value>, paths: &SnapPaths) {
    let s = |p: std::path::PathBuf| Value::String(p.to_string_lossy().into_owned());
    default_at(root, "postgresql.bin_dir", s(paths.pg_bin_dir.clone()));
    default_at(root, "postgresql.data_dir", s(paths.pg_data_dir()));
    default_at(root, "postgresql.socket_dir", s(paths.pg_socket_dir()));
    default_at(root, "postgresql.log_file", s(paths.pg_log_file()));
    default_at(
        root,
        "postgresql.os_user",
        Value::String(super::DAEMON_USER.into()),
    );
    default_at(root, "log.file", s(paths.pgpilot_log_file()));
    let posix = get_at(root, "backup.repository").and_then(Value::as_str) == Some("posix");
    if posix {
        default_at(root, "backup.posix.path", s(paths.backup_repo()));
    }
}

/// JSON (as snapd stores values) → TOML. `null` means "not set", and so
/// does a tree left empty by `snap unset` of all its keys (an empty
/// `[backup.s3]` would ask for an S3 bucket).
fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Object(map) => {
            let table: toml::map::Map<String, toml::Value> = map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect();
            if table.is_empty() {
                return None;
            }
            toml::Value::Table(table)
        }
    })
}

/// snapd guesses types: `snap set k=5` stores the number 5, `k=true` a
/// boolean. Where the member file wants a string, take the text back.
fn expects_string(message: &str) -> bool {
    message.starts_with("invalid type:") && message.ends_with("expected a string")
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

const HEADER: &str = "# Written by the charmed-postgresql snap's configure hook from\n\
# `snap get charmed-postgresql pgpilot`. Do not edit: change it with `snap set`.\n\n";

/// The member file for the `pgpilot` tree, or the first setting it lacks.
/// `tls`: the unit's certificate files (`tls.*` set): `[postgresql.tls]`
/// and `[api.tls]` name them, unless the tree sets those sections itself.
/// The files themselves were checked in memory ([`super::tls::render`]);
/// they are written before this file.
pub fn render(
    tree: &Value,
    paths: &SnapPaths,
    tls: Option<&super::tls::TlsPaths>,
) -> Result<Outcome<String>, SnapError> {
    let mut root = match tree {
        Value::Null => Map::new(),
        Value::String(s) if s.is_empty() => Map::new(),
        Value::Object(_) => match to_file_keys(tree, "")? {
            Value::Object(m) => m,
            _ => unreachable!("an object stays an object"),
        },
        _ => {
            return Err(SnapError::new(
                "pgpilot",
                "must be a tree of settings (set keys below it, such as pgpilot.cluster.name)",
            ))
        }
    };
    apply_snap_defaults(&mut root, paths);
    let path = paths.member_file();
    // Each round fixes one value snapd stored as a number or boolean where
    // the file wants text; a handful of rounds covers any real tree.
    for _ in 0..64 {
        let toml_value = to_toml(&Value::Object(root.clone()))
            .ok_or_else(|| SnapError::new("pgpilot", "is empty"))?;
        let body = toml::to_string(&toml_value)
            .map_err(|e| SnapError::new("pgpilot", format!("cannot be written as TOML: {e}")))?;
        let text = format!("{HEADER}{body}");
        match Config::parse(&text, &path) {
            Ok(_) => return with_tls(root, tls).map(Outcome::Ready),
            Err(ConfigError::Invalid { key, message, .. }) => {
                if message.starts_with("missing field") {
                    return Ok(Outcome::Missing(vec![snap_key(&key)]));
                }
                if expects_string(&message) {
                    if let Some(leaf) = get_at_mut(&mut root, &key) {
                        if let Some(text) = scalar_text(leaf) {
                            *leaf = Value::String(text);
                            continue;
                        }
                    }
                }
                let message = if crate::config::is_secret_key(&key) {
                    "is not valid (value not shown: it is a secret)".to_string()
                } else {
                    message
                };
                return Err(SnapError::new(snap_key(&key), message));
            }
            Err(other) => {
                return Err(SnapError::new(
                    "pgpilot",
                    format!("the rendered member file is not valid: {other}"),
                ))
            }
        }
    }
    Err(SnapError::new(
        "pgpilot",
        "too many values of the wrong type; quote text values",
    ))
}

/// The checked tree with TLS's sections added, as the member file's text.
fn with_tls(
    mut root: Map<String, Value>,
    tls: Option<&super::tls::TlsPaths>,
) -> Result<String, SnapError> {
    if let Some(tls) = tls {
        super::tls::check_parameters(&root)?;
        for (at, section) in super::tls::member_sections(tls) {
            default_at(&mut root, at, section);
        }
    }
    let toml_value =
        to_toml(&Value::Object(root)).ok_or_else(|| SnapError::new("pgpilot", "is empty"))?;
    let body = toml::to_string(&toml_value)
        .map_err(|e| SnapError::new("pgpilot", format!("cannot be written as TOML: {e}")))?;
    Ok(format!("{HEADER}{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn paths() -> SnapPaths {
        crate::snap::test_paths()
    }

    fn tree() -> Value {
        json!({
            "cluster": {"scope": "main", "name": "m1"},
            "dcs": {"endpoints": ["http://127.0.0.1:2379"]},
            "postgresql": {
                "connect-address": "127.0.0.11:5432",
                "authentication": {
                    "superuser": {"username": "operator", "password": "pw1"},
                    "replication": {"username": "replication", "password": "pw2"}
                },
                "parameters": {"shared-buffers": "256MB"}
            },
            "api": {"listen": "127.0.0.11:8008"},
            "bootstrap": {"loop-wait": 2},
            "backup": {"repository": "posix"}
        })
    }

    fn ready(t: &Value) -> Config {
        match render(t, &paths(), None).unwrap() {
            Outcome::Ready(text) => Config::parse(&text, std::path::Path::new("x")).unwrap(),
            Outcome::Missing(m) => panic!("missing {m:?}"),
        }
    }

    #[test]
    fn dashes_become_underscores_and_snap_paths_fill_in() {
        let c = ready(&tree());
        assert_eq!(c.bootstrap.loop_wait, 2);
        assert!(c.postgresql.parameters.contains_key("shared_buffers"));
        assert_eq!(
            c.postgresql.data_dir,
            PathBuf::from("/var/snap/charmed-postgresql/common/var/lib/postgresql/data")
        );
        assert_eq!(c.postgresql.bin_dir, paths().pg_bin_dir);
        assert_eq!(c.postgresql.os_user, "_daemon_");
        let repo = c.backup.unwrap().posix.unwrap().path;
        assert_eq!(
            repo,
            PathBuf::from("/var/snap/charmed-postgresql/common/var/lib/pgpilot/repo")
        );
    }

    #[test]
    fn a_tree_emptied_by_unset_is_not_set() {
        // `snap unset` of every pgpilot.backup.s3.* key leaves `s3: {}`:
        // back on the posix repository, no S3 bucket asked for.
        let mut t = tree();
        t["backup"] = json!({"repository": "posix", "s3": {}});
        let c = ready(&t);
        let backup = c.backup.unwrap();
        assert!(backup.s3.is_none());
        assert!(backup.posix.is_some());
    }

    #[test]
    fn numbers_snapd_guessed_become_text_where_text_is_wanted() {
        let mut t = tree();
        t["cluster"]["name"] = json!(7);
        t["postgresql"]["authentication"]["superuser"]["password"] = json!(12345);
        let c = ready(&t);
        assert_eq!(c.cluster.name, "7");
        assert_eq!(c.postgresql.authentication.superuser.password, "12345");
    }

    #[test]
    fn bad_values_name_the_snap_key() {
        let mut t = tree();
        t["postgresql"]["port"] = json!("abc");
        let e = render(&t, &paths(), None).unwrap_err();
        assert_eq!(e.key, "pgpilot.postgresql.port");

        let mut t = tree();
        t["bootstrap"]["loop-wait"] = json!(30);
        let e = render(&t, &paths(), None).unwrap_err();
        assert_eq!(e.key, "pgpilot.bootstrap.ttl", "{e}");

        let mut t = tree();
        t["cluster"]["colour"] = json!("blue");
        let e = render(&t, &paths(), None).unwrap_err();
        assert_eq!(e.key, "pgpilot.cluster.colour");

        let mut t = tree();
        t["cluster"]["bad_key"] = json!("x");
        let e = render(&t, &paths(), None).unwrap_err();
        assert_eq!(e.key, "pgpilot.cluster.bad_key");
    }

    #[test]
    fn a_password_with_a_newline_is_refused_without_showing_it() {
        let mut t = tree();
        t["postgresql"]["authentication"]["replication"]["password"] = json!("abc\ndef");
        let e = render(&t, &paths(), None).unwrap_err();
        assert_eq!(
            e.key,
            "pgpilot.postgresql.authentication.replication.password"
        );
        assert!(!e.to_string().contains("abc"), "{e}");
    }

    #[test]
    fn tls_names_the_unit_files_unless_the_tree_sets_its_own() {
        let tls = super::super::tls::TlsPaths::new(&paths());
        let text = match render(&tree(), &paths(), Some(&tls)).unwrap() {
            Outcome::Ready(text) => text,
            Outcome::Missing(m) => panic!("missing {m:?}"),
        };
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let cert = "/var/snap/charmed-postgresql/x1/etc/tls/cert.pem";
        assert_eq!(doc["postgresql"]["tls"]["cert_file"].as_str(), Some(cert));
        assert_eq!(doc["api"]["tls"]["cert_file"].as_str(), Some(cert));
        assert_eq!(
            doc["api"]["tls"]["ca_file"].as_str(),
            Some("/var/snap/charmed-postgresql/x1/etc/tls/ca.pem")
        );
        // The same tree without TLS has neither section.
        let Outcome::Ready(plain) = render(&tree(), &paths(), None).unwrap() else {
            panic!("not ready")
        };
        assert!(!plain.contains("tls"), "{plain}");
        // A TLS parameter of the operator's is refused while TLS is on.
        let mut t = tree();
        t["postgresql"]["parameters"]["ssl"] = json!("on");
        let e = render(&t, &paths(), Some(&tls)).unwrap_err();
        assert_eq!(e.key, "pgpilot.postgresql.parameters.ssl");
    }

    #[test]
    fn a_missing_setting_is_reported_not_refused() {
        let mut t = tree();
        t["cluster"].as_object_mut().unwrap().remove("name");
        match render(&t, &paths(), None).unwrap() {
            Outcome::Missing(keys) => assert_eq!(keys, vec!["pgpilot.cluster.name"]),
            Outcome::Ready(_) => panic!("rendered without a name"),
        }
        assert!(matches!(
            render(&Value::Null, &paths(), None).unwrap(),
            Outcome::Missing(_)
        ));
    }
}
