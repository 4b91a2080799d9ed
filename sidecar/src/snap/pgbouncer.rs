//! The `pgbouncer.*` snap keys → `pgbouncer.ini` and `userlist.txt`. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{SnapError, SnapPaths};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Tree {
    #[serde(default = "default_listen_addr")]
    listen_addr: String,
    #[serde(default = "default_listen_port")]
    listen_port: u16,
    #[serde(default = "default_pool_mode")]
    pool_mode: String,
    #[serde(default = "default_auth_type")]
    auth_type: String,
    #[serde(default = "default_max_client_conn")]
    max_client_conn: u32,
    #[serde(default = "default_pool_size")]
    default_pool_size: u32,
    /// Users allowed on the admin console (`pgbouncer` database), comma-separated.
    #[serde(default)]
    admin_users: Option<String>,
    /// User name → password (plain text; PgBouncer answers SCRAM with it).
    #[serde(default)]
    users: BTreeMap<String, Value>,
    /// Database name → connection string (`host=... port=... dbname=...`).
    #[serde(default)]
    databases: BTreeMap<String, String>,
}

fn default_listen_addr() -> String {
    "127.0.0.1".into()
}
fn default_listen_port() -> u16 {
    6432
}
fn default_pool_mode() -> String {
    "session".into()
}
fn default_auth_type() -> String {
    "scram-sha-256".into()
}
fn default_max_client_conn() -> u32 {
    100
}
fn default_pool_size() -> u32 {
    20
}

/// What the configure hook writes for PgBouncer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub ini: String,
    pub userlist: String,
}

/// Keys PgBouncer takes in a `[databases]` connection string.
const DB_KEYS: &[&str] = &[
    "dbname",
    "host",
    "port",
    "user",
    "password",
    "auth_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "connect_query",
    "pool_mode",
    "max_db_connections",
    "client_encoding",
    "datestyle",
    "timezone",
    "application_name",
];

/// Check a `key=value key='quoted value'` string; keys must be PgBouncer's.
fn check_conninfo(key: &str, text: &str) -> Result<(), SnapError> {
    if text.chars().any(char::is_control) {
        return Err(SnapError::new(key, "must be one line"));
    }
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(SnapError::new(
            key,
            "is empty: write a connection string such as `host=10.0.0.1 port=5432 dbname=app`",
        ));
    }
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| SnapError::new(key, format!("{rest:?} is not key=value")))?;
        let name = name.trim();
        if !DB_KEYS.contains(&name) {
            return Err(SnapError::new(
                key,
                format!(
                    "{name:?} is not a PgBouncer database option (allowed: {})",
                    DB_KEYS.join(", ")
                ),
            ));
        }
        let after = after.trim_start();
        rest = if let Some(quoted) = after.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or_else(|| {
                SnapError::new(key, format!("the value of {name} has no closing quote"))
            })?;
            quoted[end + 1..].trim_start()
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            if end == 0 {
                return Err(SnapError::new(key, format!("{name} has no value")));
            }
            after[end..].trim_start()
        };
    }
    Ok(())
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), SnapError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(SnapError::new(
            key,
            format!("{value:?}: must be one of {}", allowed.join(", ")),
        ))
    }
}

/// PgBouncer's files for the `pgbouncer` tree (every key has a default).
pub fn render(tree: &Value, paths: &SnapPaths) -> Result<Rendered, SnapError> {
    let empty = Value::Object(Default::default());
    let tree = if tree.is_null() || tree.as_str() == Some("") {
        &empty
    } else {
        tree
    };
    let tree: Tree = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            "pgbouncer".to_string()
        } else {
            format!("pgbouncer.{path}")
        };
        let message = if key.starts_with("pgbouncer.users.") {
            "is not valid (value not shown: it is a secret)".to_string()
        } else {
            e.into_inner().to_string()
        };
        SnapError::new(key, message)
    })?;
    if tree.listen_addr.is_empty() || tree.listen_addr.contains(char::is_whitespace) {
        return Err(SnapError::new(
            "pgbouncer.listen-addr",
            "an address, `*`, or a comma-separated list of addresses",
        ));
    }
    if tree.listen_port == 0 {
        return Err(SnapError::new("pgbouncer.listen-port", "must be 1-65535"));
    }
    one_of(
        "pgbouncer.pool-mode",
        &tree.pool_mode,
        &["session", "transaction", "statement"],
    )?;
    one_of(
        "pgbouncer.auth-type",
        &tree.auth_type,
        &["scram-sha-256", "md5", "plain"],
    )?;
    if tree.max_client_conn == 0 || tree.default_pool_size == 0 {
        let key = if tree.max_client_conn == 0 {
            "pgbouncer.max-client-conn"
        } else {
            "pgbouncer.default-pool-size"
        };
        return Err(SnapError::new(key, "must be at least 1"));
    }
    let mut userlist = String::new();
    for (user, password) in &tree.users {
        let key = format!("pgbouncer.users.{user}");
        let password = match password {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(SnapError::new(
                    key,
                    "must be the user's password (value not shown: it is a secret)",
                ))
            }
        };
        if password.is_empty() || password.chars().any(char::is_control) {
            return Err(SnapError::new(
                key,
                "must be a non-empty password without newlines or control characters (value not shown)",
            ));
        }
        userlist.push_str(&format!(
            "\"{}\" \"{}\"\n",
            user.replace('"', "\"\""),
            password.replace('"', "\"\"")
        ));
    }
    if let Some(admins) = &tree.admin_users {
        if admins.chars().any(char::is_control) {
            return Err(SnapError::new("pgbouncer.admin-users", "must be one line"));
        }
    }
    let mut ini = String::from(
        "; Written by the charmed-postgresql snap's configure hook from\n\
         ; `snap get charmed-postgresql pgbouncer`. Do not edit: change it with `snap set`.\n\n\
         [databases]\n",
    );
    for (name, conninfo) in &tree.databases {
        let key = format!("pgbouncer.databases.{name}");
        check_conninfo(&key, conninfo)?;
        ini.push_str(&format!("{name} = {}\n", conninfo.trim()));
    }
    ini.push_str("\n[pgbouncer]\n");
    let mut settings = vec![
        ("listen_addr", tree.listen_addr.clone()),
        ("listen_port", tree.listen_port.to_string()),
        (
            "unix_socket_dir",
            paths.pgbouncer_socket_dir().to_string_lossy().into_owned(),
        ),
        ("auth_type", tree.auth_type.clone()),
        (
            "auth_file",
            paths.pgbouncer_userlist().to_string_lossy().into_owned(),
        ),
        ("pool_mode", tree.pool_mode.clone()),
        ("max_client_conn", tree.max_client_conn.to_string()),
        ("default_pool_size", tree.default_pool_size.to_string()),
        (
            "logfile",
            paths.pgbouncer_log_file().to_string_lossy().into_owned(),
        ),
    ];
    if let Some(admins) = &tree.admin_users {
        settings.push(("admin_users", admins.clone()));
    }
    for (k, v) in settings {
        ini.push_str(&format!("{k} = {v}\n"));
    }
    Ok(Rendered { ini, userlist })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths() -> SnapPaths {
        crate::snap::test_paths()
    }

    #[test]
    fn renders_databases_users_and_defaults() {
        let t = json!({
            "listen-port": 6433,
            "users": {"app": "s3cr\"et"},
            "databases": {"app": "host=127.0.0.11 port=5432 dbname=app"}
        });
        let r = render(&t, &paths()).unwrap();
        assert!(r
            .ini
            .contains("app = host=127.0.0.11 port=5432 dbname=app\n"));
        assert!(r.ini.contains("listen_port = 6433\n"));
        assert!(r.ini.contains("auth_type = scram-sha-256\n"));
        assert_eq!(r.userlist, "\"app\" \"s3cr\"\"et\"\n");
        assert!(render(&Value::Null, &paths()).is_ok());
    }

    #[test]
    fn bad_values_name_their_key_and_hide_passwords() {
        let e = render(&json!({"listen-port": "x"}), &paths()).unwrap_err();
        assert_eq!(e.key, "pgbouncer.listen-port");
        let e = render(&json!({"pool-mode": "sometimes"}), &paths()).unwrap_err();
        assert_eq!(e.key, "pgbouncer.pool-mode");
        let e = render(&json!({"databases": {"a": "hots=x"}}), &paths()).unwrap_err();
        assert_eq!(e.key, "pgbouncer.databases.a");
        let e = render(&json!({"users": {"a": "pw\nx"}}), &paths()).unwrap_err();
        assert_eq!(e.key, "pgbouncer.users.a");
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
