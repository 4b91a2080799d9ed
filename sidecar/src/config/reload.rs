//! A re-read member file against the configuration a member runs with:
//! which keys differ, which of them a running member takes at once
//! (`SIGHUP`, `POST /reload`, the snap's configure hook), and which only a
//! restart applies. Pure: no I/O, table tests below.
//!
//! Live keys are the credentials, the callbacks and the TLS files of
//! PostgreSQL and the REST API (PostgreSQL is reloaded, the API's listener
//! takes its TLS configuration per connection): nothing else in the process
//! was built from them (the etcd client, the listeners' addresses, the data
//! directory, the log were). Everything else keeps its running value until
//! pgpilot restarts.

use serde_json::Value;

use super::Config;

/// Keys (or whole sections) a running member takes from a re-read file.
pub const LIVE_KEYS: [&str; 9] = [
    "postgresql.authentication.superuser.password",
    "postgresql.authentication.replication.password",
    "api.username",
    "api.password",
    "metrics.username",
    "metrics.password",
    "postgresql.callbacks",
    "postgresql.tls",
    "api.tls",
];

/// Is `key` (dotted, as in [`changed_keys`]) one of [`LIVE_KEYS`] or inside one?
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| {
        key == *live
            || key
                .strip_prefix(live)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// What a re-read file changes. Key names only: never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Keys that differ and are applied at once.
    pub live: Vec<String>,
    /// Keys that differ and need a restart; their running values stay.
    pub restart: Vec<String>,
}

impl ReloadPlan {
    /// The file says what the member runs with.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }

    /// A superuser or replication password changed: PostgreSQL's roles
    /// (on the primary) and the replication password file (on replicas)
    /// follow.
    pub fn changes_role_passwords(&self) -> bool {
        self.live
            .iter()
            .any(|k| k.starts_with("postgresql.authentication."))
    }

    pub fn changes_callbacks(&self) -> bool {
        self.live
            .iter()
            .any(|k| k.starts_with("postgresql.callbacks"))
    }

    /// The monitoring connection's role or password changed (its own, or
    /// the superuser's when `metrics.username` is unset).
    pub fn changes_monitoring(&self, file: &Config) -> bool {
        self.live.iter().any(|k| {
            k.starts_with("metrics.")
                || (file.metrics.username.is_none()
                    && k == "postgresql.authentication.superuser.password")
        })
    }
}

/// The dotted keys whose values differ between `old` and `new`, in the
/// member file's names (`postgresql.port`, `postgresql.parameters.work_mem`,
/// `backup` for a whole section added or removed). Lists are compared
/// whole. `None` when a configuration cannot be represented (it then
/// counts as changed everywhere).
pub fn changed_keys(old: &Config, new: &Config) -> Option<Vec<String>> {
    let old = serde_json::to_value(old).ok()?;
    let new = serde_json::to_value(new).ok()?;
    let mut keys = Vec::new();
    diff(&old, &new, "", &mut keys);
    Some(keys)
}

fn diff(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let here = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                let a = a.get(name).unwrap_or(&Value::Null);
                let b = b.get(name).unwrap_or(&Value::Null);
                diff(a, b, &here, out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(at.to_string()),
    }
}

/// What re-reading `file` does to a member running with `running`.
pub fn plan(running: &Config, file: &Config) -> ReloadPlan {
    let Some(keys) = changed_keys(running, file) else {
        return ReloadPlan {
            live: Vec::new(),
            restart: vec!["(the whole file)".into()],
        };
    };
    let (live, restart) = keys.into_iter().partition(|k| is_live(k));
    ReloadPlan { live, restart }
}

/// `running` with the live keys taken from `file`: what the member runs
/// with after a reload. The other keys keep their running values, even
/// where the file differs (they wait for a restart).
pub fn merge(running: &Config, file: &Config) -> Config {
    let mut merged = running.clone();
    let auth = &mut merged.postgresql.authentication;
    auth.superuser.password = file.postgresql.authentication.superuser.password.clone();
    auth.replication.password = file.postgresql.authentication.replication.password.clone();
    merged.api.username = file.api.username.clone();
    merged.api.password = file.api.password.clone();
    merged.metrics.username = file.metrics.username.clone();
    merged.metrics.password = file.metrics.password.clone();
    merged.postgresql.callbacks = file.postgresql.callbacks.clone();
    merged.postgresql.tls = file.postgresql.tls.clone();
    merged.api.tls = file.api.tls.clone();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::EXAMPLE;
    use crate::config::CommandLine;

    fn base() -> Config {
        Config::parse(EXAMPLE, std::path::Path::new("t.toml")).unwrap()
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    /// One row per situation: what the operator changed in the file, and
    /// which keys a running member applies now and which wait for a restart.
    #[test]
    fn what_a_reload_applies_and_what_needs_a_restart() {
        type Edit = fn(&mut Config);
        let rows: Vec<(&str, Edit, &[&str], &[&str])> = vec![
            ("the same file: nothing to do", |_| {}, &[], &[]),
            (
                "a new superuser password is applied live",
                |c| c.postgresql.authentication.superuser.password = "new".into(),
                &["postgresql.authentication.superuser.password"],
                &[],
            ),
            (
                "a new replication password is applied live",
                |c| c.postgresql.authentication.replication.password = "new".into(),
                &["postgresql.authentication.replication.password"],
                &[],
            ),
            (
                "both role passwords at once (system-users rotated)",
                |c| {
                    c.postgresql.authentication.superuser.password = "a".into();
                    c.postgresql.authentication.replication.password = "b".into();
                },
                &[
                    "postgresql.authentication.replication.password",
                    "postgresql.authentication.superuser.password",
                ],
                &[],
            ),
            (
                "REST API credentials set for the first time are applied live",
                |c| {
                    c.api.username = Some("admin".into());
                    c.api.password = Some("pw".into());
                },
                &["api.password", "api.username"],
                &[],
            ),
            (
                "the monitoring role's credentials are applied live",
                |c| {
                    c.metrics.username = Some("mon".into());
                    c.metrics.password = Some("pw".into());
                },
                &["metrics.password", "metrics.username"],
                &[],
            ),
            (
                "a callback and its timeout are applied live",
                |c| {
                    c.postgresql.callbacks.on_role_change =
                        Some(CommandLine::Line("/bin/true x".into()));
                    c.postgresql.callbacks.callback_timeout = 5;
                },
                &[
                    "postgresql.callbacks.callback_timeout",
                    "postgresql.callbacks.on_role_change",
                ],
                &[],
            ),
            (
                "TLS turned on for PostgreSQL and the API is applied live",
                |c| {
                    let files = crate::config::PostgresTls {
                        cert_file: "/tls/cert.pem".into(),
                        key_file: "/tls/key.pem".into(),
                        ca_file: Some("/tls/ca.pem".into()),
                    };
                    c.postgresql.tls = Some(files);
                    c.api.tls = Some(crate::config::ApiTls {
                        cert_file: "/tls/cert.pem".into(),
                        key_file: "/tls/key.pem".into(),
                        ca_file: Some("/tls/ca.pem".into()),
                        verify_client: Default::default(),
                    });
                },
                &["api.tls", "postgresql.tls"],
                &[],
            ),
            (
                "a role name is not a password: renaming a role needs a restart",
                |c| c.postgresql.authentication.superuser.username = "root2".into(),
                &[],
                &["postgresql.authentication.superuser.username"],
            ),
            (
                "the replication role's name likewise",
                |c| c.postgresql.authentication.replication.username = "repl2".into(),
                &[],
                &["postgresql.authentication.replication.username"],
            ),
            (
                "the etcd password needs a restart (the client is built at start)",
                |c| {
                    c.dcs.username = Some("u".into());
                    c.dcs.password = Some("p".into());
                },
                &[],
                &["dcs.password", "dcs.username"],
            ),
            (
                "a port needs a restart",
                |c| c.postgresql.port = 5433,
                &[],
                &["postgresql.port"],
            ),
            (
                "a local parameter needs a restart, named by its key",
                |c| {
                    c.postgresql.parameters.insert(
                        "work_mem".into(),
                        crate::config::ParamValue::Text("8MB".into()),
                    );
                },
                &[],
                &["postgresql.parameters.work_mem"],
            ),
            (
                "a password and a port: the password now, the port at the next restart",
                |c| {
                    c.postgresql.authentication.superuser.password = "new".into();
                    c.postgresql.port = 5433;
                },
                &["postgresql.authentication.superuser.password"],
                &["postgresql.port"],
            ),
            (
                "tags, log level, cluster-wide seeds and endpoints need a restart",
                |c| {
                    c.tags.nofailover = true;
                    c.log.level = "debug".into();
                    c.bootstrap.ttl = 20;
                    c.dcs.endpoints.push("http://127.0.0.2:2379".into());
                },
                &[],
                &[
                    "bootstrap.ttl",
                    "dcs.endpoints",
                    "log.level",
                    "tags.nofailover",
                ],
            ),
            (
                "an API listen address needs a restart",
                |c| c.api.listen = "127.0.0.1:8009".parse().unwrap(),
                &[],
                &["api.listen"],
            ),
        ];
        for (name, edit, live, restart) in rows {
            let running = base();
            let mut file = base();
            edit(&mut file);
            let p = plan(&running, &file);
            let mut got_live = p.live.clone();
            got_live.sort();
            let mut got_restart = p.restart.clone();
            got_restart.sort();
            assert_eq!(got_live, keys(live), "{name}: live keys");
            assert_eq!(got_restart, keys(restart), "{name}: restart keys");
            assert_eq!(
                p.is_empty(),
                live.is_empty() && restart.is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_whole_section_added_is_named_by_its_leaves() {
        let running = base();
        let text = format!(
            "{EXAMPLE}\n[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"/srv/repo\"\n"
        );
        let file = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let p = plan(&running, &file);
        assert!(p.live.is_empty());
        assert!(p.restart.iter().all(|k| k.starts_with("backup")), "{p:?}");
        assert!(!p.restart.is_empty());
    }

    #[test]
    fn merge_takes_the_live_keys_only() {
        let running = base();
        let mut file = base();
        file.postgresql.authentication.superuser.password = "new-su".into();
        file.api.username = Some("admin".into());
        file.api.password = Some("api-pw".into());
        file.postgresql.port = 5433;
        file.postgresql.authentication.replication.username = "other".into();
        let merged = merge(&running, &file);
        assert_eq!(
            merged.postgresql.authentication.superuser.password,
            "new-su"
        );
        assert_eq!(merged.api.username.as_deref(), Some("admin"));
        assert_eq!(merged.api.password.as_deref(), Some("api-pw"));
        // Restart-only keys keep the running values.
        assert_eq!(merged.postgresql.port, 5432);
        assert_eq!(
            merged.postgresql.authentication.replication.username,
            "replicator"
        );
        // What is left to differ is exactly what needs a restart.
        let left = plan(&merged, &file);
        assert!(left.live.is_empty(), "{left:?}");
        let mut restart = left.restart;
        restart.sort();
        assert_eq!(
            restart,
            keys(&[
                "postgresql.authentication.replication.username",
                "postgresql.port"
            ])
        );
        merged.validate().unwrap();
    }

    #[test]
    fn what_the_plan_says_about_postgresql_and_monitoring() {
        let running = base();
        let mut file = base();
        file.postgresql.authentication.superuser.password = "x".into();
        let p = plan(&running, &file);
        assert!(p.changes_role_passwords());
        assert!(p.changes_monitoring(&file), "metrics use the superuser");
        assert!(!p.changes_callbacks());
        file.metrics.username = Some("mon".into());
        file.metrics.password = Some("m".into());
        let p = plan(&running, &file);
        assert!(p.changes_monitoring(&file));
        let mut only_su = base();
        only_su.metrics.username = Some("mon".into());
        only_su.metrics.password = Some("m".into());
        let mut file = only_su.clone();
        file.postgresql.authentication.superuser.password = "y".into();
        let p = plan(&only_su, &file);
        assert!(
            !p.changes_monitoring(&file),
            "its own monitoring role: the superuser's password does not matter"
        );
        let mut file = base();
        file.api.password = Some("p".into());
        file.api.username = Some("u".into());
        let p = plan(&running, &file);
        assert!(!p.changes_role_passwords() && !p.changes_monitoring(&file));
    }

    #[test]
    fn live_keys_match_whole_names_only() {
        assert!(is_live("api.password"));
        assert!(is_live("postgresql.callbacks.on_start"));
        assert!(!is_live("api.password_file"));
        assert!(!is_live("postgresql.callbacks_extra"));
        assert!(!is_live("postgresql.authentication.superuser.username"));
    }
}
