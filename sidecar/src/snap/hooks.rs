//! The install and configure hooks, on top of the pure renderers and the
//! `snapctl` and file drivers.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{etcd, files, member, pgbouncer, snapctl, Outcome, SnapError, SnapPaths, DAEMON_UID};

/// The three key trees the snap reads.
const TREES: [&str; 3] = ["pgpilot", "etcd", "pgbouncer"];

/// A service's rendered files: (path, new content or `None` to remove).
struct ServiceFiles {
    app: &'static str,
    files: Vec<(PathBuf, Option<String>)>,
}

fn missing_note(app: &str, keys: &[String]) -> String {
    let sets: Vec<String> = keys
        .iter()
        .map(|k| format!("snap set charmed-postgresql {k}=..."))
        .collect();
    format!(
        "{app} is not configured: {} (see docs/snap.md)\n",
        sets.join("; ")
    )
}

/// Render every service's files from the trees; nothing is written here.
fn render_all(doc: &Value, paths: &SnapPaths) -> Result<Vec<ServiceFiles>, SnapError> {
    let tree = |name: &str| doc.get(name).cloned().unwrap_or(Value::Null);
    let member_missing = paths.etc("pgpilot").join("pgpilot.missing");
    let pgpilot = match member::render(&tree("pgpilot"), paths)? {
        Outcome::Ready(text) => vec![(paths.member_file(), Some(text)), (member_missing, None)],
        Outcome::Missing(keys) => vec![
            (paths.member_file(), None),
            (member_missing, Some(missing_note("pgpilot", &keys))),
        ],
    };
    let etcd_missing = paths.etc("etcd").join("etcd.missing");
    let etcd = match etcd::render(&tree("etcd"), paths)? {
        Outcome::Ready(r) => vec![
            (paths.etcd_file(), Some(r.config)),
            (paths.etcdctl_env(), Some(r.etcdctl_env)),
            (etcd_missing, None),
        ],
        Outcome::Missing(keys) => vec![
            (paths.etcd_file(), None),
            (paths.etcdctl_env(), None),
            (etcd_missing, Some(missing_note("etcd", &keys))),
        ],
    };
    let bouncer = pgbouncer::render(&tree("pgbouncer"), paths)?;
    Ok(vec![
        ServiceFiles {
            app: "pgpilot",
            files: pgpilot,
        },
        ServiceFiles {
            app: "etcd",
            files: etcd,
        },
        ServiceFiles {
            app: "pgbouncer",
            files: vec![
                (paths.pgbouncer_ini(), Some(bouncer.ini)),
                (paths.pgbouncer_userlist(), Some(bouncer.userlist)),
            ],
        },
    ])
}

/// The configure hook: validate everything first, then write what changed,
/// then restart the active services whose files changed.
pub fn configure() -> Result<(), String> {
    let paths = SnapPaths::from_env()?;
    let doc = snapctl::get_document(&TREES)?;
    let rendered = render_all(&doc, &paths).map_err(|e| format!("invalid {e}"))?;

    let mut changed_apps = Vec::new();
    for service in &rendered {
        let mut changed = false;
        for (path, content) in &service.files {
            let old = files::read(path)?;
            match content {
                Some(text) if old.as_deref() != Some(text.as_bytes()) => {
                    files::write_atomic(path, text.as_bytes(), DAEMON_UID)?;
                    changed = true;
                }
                None if old.is_some() => {
                    files::remove(path)?;
                    changed = true;
                }
                _ => {}
            }
        }
        if changed {
            changed_apps.push(format!("{}.{}", paths.instance, service.app));
        }
    }
    if changed_apps.is_empty() {
        return Ok(());
    }
    let active: Vec<String> = snapctl::services(&changed_apps)?
        .into_iter()
        .filter(|(_, active)| *active)
        .map(|(name, _)| name)
        .collect();
    if !active.is_empty() {
        println!("restarting {} (configuration changed)", active.join(", "));
        snapctl::restart(&active)?;
    }
    Ok(())
}

/// This machine's name for the defaults: the host name, made a valid
/// member and etcd name.
fn machine_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let name: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "member".into()
    } else {
        name
    }
}

/// The single-machine defaults: a one-member cluster on 127.0.0.1 with a
/// local etcd, WAL archiving and backups to the posix repository.
pub fn defaults(name: &str, superuser_pw: &str, replication_pw: &str) -> Vec<(String, Value)> {
    let pairs = [
        ("pgpilot.cluster.scope", json!("postgresql")),
        ("pgpilot.cluster.name", json!(name)),
        ("pgpilot.dcs.endpoints", json!(["http://127.0.0.1:2379"])),
        ("pgpilot.postgresql.listen", json!("127.0.0.1")),
        ("pgpilot.postgresql.port", json!(5432)),
        (
            "pgpilot.postgresql.connect-address",
            json!("127.0.0.1:5432"),
        ),
        (
            "pgpilot.postgresql.authentication.superuser.username",
            json!("operator"),
        ),
        (
            "pgpilot.postgresql.authentication.superuser.password",
            json!(superuser_pw),
        ),
        (
            "pgpilot.postgresql.authentication.replication.username",
            json!("replication"),
        ),
        (
            "pgpilot.postgresql.authentication.replication.password",
            json!(replication_pw),
        ),
        ("pgpilot.api.listen", json!("127.0.0.1:8008")),
        ("pgpilot.backup.repository", json!("posix")),
        ("etcd.name", json!(name)),
        (
            "etcd.initial-cluster",
            json!(format!("{name}=http://127.0.0.1:2380")),
        ),
        ("etcd.initial-cluster-state", json!("new")),
        ("etcd.listen-client-urls", json!("http://127.0.0.1:2379")),
        ("etcd.advertise-client-urls", json!("http://127.0.0.1:2379")),
        ("etcd.listen-peer-urls", json!("http://127.0.0.1:2380")),
        (
            "etcd.initial-advertise-peer-urls",
            json!("http://127.0.0.1:2380"),
        ),
        ("pgbouncer.listen-addr", json!("127.0.0.1")),
        ("pgbouncer.listen-port", json!(6432)),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The install hook: directories owned by `_daemon_`, and the defaults for
/// the trees nobody configured yet (snapd applies none itself).
pub fn install() -> Result<(), String> {
    let paths = SnapPaths::from_env()?;
    for (dir, mode) in paths.directories() {
        files::make_dir(&dir, mode, DAEMON_UID)?;
    }
    let doc = snapctl::get_document(&TREES)?;
    let unset = |tree: &str| match doc.get(tree) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    };
    let password =
        || crate::secret::random_password(24).map_err(|e| format!("cannot read /dev/urandom: {e}"));
    let all = defaults(&machine_name(), &password()?, &password()?);
    let pairs: Vec<(String, Value)> = all
        .into_iter()
        .filter(|(k, _)| unset(k.split('.').next().unwrap_or("")))
        .collect();
    snapctl::set(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nest(pairs: &[(String, Value)]) -> Value {
        let mut root = serde_json::Map::new();
        for (key, value) in pairs {
            let mut map = &mut root;
            let parts: Vec<&str> = key.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                map = map
                    .entry(part.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .unwrap();
            }
            map.insert(parts[parts.len() - 1].to_string(), value.clone());
        }
        Value::Object(root)
    }

    #[test]
    fn the_defaults_render_every_service() {
        let paths = crate::snap::test_paths();
        let doc = nest(&defaults("host1", "pw1", "pw2"));
        let services = render_all(&doc, &paths).unwrap();
        for s in &services {
            for (path, content) in &s.files {
                let missing = path.extension().is_some_and(|e| e == "missing");
                assert_eq!(
                    content.is_none(),
                    missing,
                    "{}: {content:?}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn machine_names_are_valid() {
        let n = machine_name();
        assert!(!n.is_empty() && n.len() <= 63);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }
}
