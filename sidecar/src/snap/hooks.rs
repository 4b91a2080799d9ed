//! The install and configure hooks, on top of the pure renderers and the
//! `snapctl` and file drivers.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{
    dcs_tls, etcd, files, member, pgbouncer, s3_tls, snapctl, tls, Outcome, SnapError, SnapPaths,
    DAEMON_UID,
};

/// The key trees the snap reads.
const TREES: [&str; 7] = [
    "pgpilot",
    "etcd",
    "pgbouncer",
    "tls",
    ETCD_TLS,
    dcs_tls::TREE,
    s3_tls::TREE,
];

/// etcd's own copy of the unit's certificate (`etcd-tls.{cert,key,ca}`):
/// kept apart from `tls.*` so that etcd's listeners can go back to http
/// one member at a time after the certificate itself is gone.
const ETCD_TLS: &str = "etcd-tls";

/// The pseudo-service of the `tls.*` files: nothing to restart, a running
/// pgpilot is reloaded when they change.
const TLS_FILES: &str = "tls";

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
    // First: a refused tls.* key leaves everything as it was.
    let tls_files = tls::render(&tree("tls"))?;
    let tls_paths = tls::TlsPaths::new(paths);
    let member_tls = tls_files.as_ref().map(|_| &tls_paths);
    // pgpilot's TLS towards etcd: files written before the member file
    // that names them; a change restarts a running pgpilot.
    let dcs_files = dcs_tls::render(&tree(dcs_tls::TREE))?;
    let dcs_paths = dcs_tls::DcsTlsPaths::new(paths);
    let mut pgpilot_tree = tree("pgpilot");
    if let Some(files) = &dcs_files {
        pgpilot_tree = dcs_tls::with_section(pgpilot_tree, &dcs_paths, files);
    }
    // The S3 endpoint's CA: the same, for `[backup.s3] ca_file`.
    let s3_ca = s3_tls::render(&tree(s3_tls::TREE))?;
    if s3_ca.is_some() {
        pgpilot_tree = s3_tls::with_ca_file(pgpilot_tree, &s3_tls::ca_path(paths));
    }
    let member_missing = paths.etc("pgpilot").join("pgpilot.missing");
    let mut pgpilot = dcs_paths.files(dcs_files.as_ref());
    pgpilot.push((s3_tls::ca_path(paths), s3_ca));
    pgpilot.extend(match member::render(&pgpilot_tree, paths, member_tls)? {
        Outcome::Ready(text) => vec![(paths.member_file(), Some(text)), (member_missing, None)],
        Outcome::Missing(keys) => vec![
            (paths.member_file(), None),
            (member_missing, Some(missing_note("pgpilot", &keys))),
        ],
    });
    let etcd_missing = paths.etc("etcd").join("etcd.missing");
    let etcd_tls = tls::render_tree(&tree(ETCD_TLS), ETCD_TLS)?;
    let etcd_tls_paths = tls::TlsPaths::in_dir(&paths.etc("etcd"));
    // The certificate files first: the configuration names them.
    let mut etcd = etcd_tls_paths.files(etcd_tls.as_ref());
    let etcd_tls_in_force = etcd_tls.as_ref().map(|_| &etcd_tls_paths);
    etcd.extend(
        match etcd::render(&tree("etcd"), paths, etcd_tls_in_force)? {
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
        },
    );
    let bouncer = pgbouncer::render(&tree("pgbouncer"), paths)?;
    Ok(vec![
        // Written before the member file that names them.
        ServiceFiles {
            app: TLS_FILES,
            files: tls_paths.files(tls_files.as_ref()),
        },
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

/// What the configure hook does to a running pgpilot whose member file it
/// rewrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAction {
    /// Only keys a running member takes without a restart changed (the
    /// credentials, the callbacks): SIGHUP, which re-reads the file.
    Reload { keys: Vec<String> },
    /// Something else changed (or the old file cannot be read): restart.
    Restart { keys: Vec<String> },
    /// The text changed but not what it says (a default written out).
    Nothing,
}

/// The old member file (as the running pgpilot read it) against the new
/// one. Pure but for what `Config::parse` reads (TLS files, callback
/// programs), the same check `pgpilot run` makes.
pub fn member_action(old: Option<&str>, new: Option<&str>, paths: &SnapPaths) -> MemberAction {
    let path = paths.member_file();
    let parse = |text: Option<&str>| text.and_then(|t| crate::config::Config::parse(t, &path).ok());
    let (Some(old), Some(new)) = (parse(old), parse(new)) else {
        return MemberAction::Restart { keys: Vec::new() };
    };
    let plan = crate::config::reload::plan(&old, &new);
    if !plan.restart.is_empty() {
        MemberAction::Restart { keys: plan.restart }
    } else if !plan.live.is_empty() {
        MemberAction::Reload { keys: plan.live }
    } else {
        MemberAction::Nothing
    }
}

/// The configure hook: validate everything first, then write what changed,
/// then restart the active services whose files changed; a running pgpilot
/// whose member file changed only in credentials or callbacks is reloaded
/// instead (SIGHUP: PostgreSQL keeps running).
pub fn configure() -> Result<(), String> {
    let paths = SnapPaths::from_env()?;
    let doc = snapctl::get_document(&TREES)?;
    let rendered = render_all(&doc, &paths).map_err(|e| format!("invalid {e}"))?;

    let mut changed_apps = Vec::new();
    // The member file before and after, when it changed.
    let mut member_change: Option<(Option<String>, Option<String>)> = None;
    let mut tls_changed = false;
    // TLS turned off: its files go last, once nothing in force names them.
    let mut tls_removed = Vec::new();
    // etcd re-reads its certificate and key at each TLS handshake: a
    // renewal alone (not the CA, not the configuration) needs no restart.
    let etcd_tls_paths = tls::TlsPaths::in_dir(&paths.etc("etcd"));
    let read_per_handshake = [etcd_tls_paths.cert, etcd_tls_paths.key];
    for service in &rendered {
        let mut changed = false;
        if service.app == TLS_FILES {
            if service.files.iter().any(|(_, c)| c.is_some()) {
                files::make_dir(&paths.etc(TLS_FILES), 0o700, DAEMON_UID)?;
            } else {
                for (path, _) in &service.files {
                    if files::read(path)?.is_some() {
                        tls_removed.push(path.clone());
                        tls_changed = true;
                    }
                }
                continue;
            }
        }
        for (path, content) in &service.files {
            let old = files::read(path)?;
            let differs = match content {
                Some(text) => old.as_deref() != Some(text.as_bytes()),
                None => old.is_some(),
            };
            if !differs {
                continue;
            }
            match content {
                Some(text) => files::write_atomic(path, text.as_bytes(), DAEMON_UID)?,
                None => files::remove(path)?,
            }
            if content.is_some() && old.is_some() && read_per_handshake.contains(path) {
                println!(
                    "{}: etcd takes it at its next TLS handshake",
                    path.display()
                );
                continue;
            }
            changed = true;
            if *path == paths.member_file() {
                let old = old.map(|b| String::from_utf8_lossy(&b).into_owned());
                member_change = Some((old, content.clone()));
            }
        }
        if changed && service.app == TLS_FILES {
            tls_changed = true;
        } else if changed {
            changed_apps.push(format!("{}.{}", paths.instance, service.app));
        }
    }
    let pgpilot = format!("{}.pgpilot", paths.instance);
    if tls_changed && !changed_apps.contains(&pgpilot) {
        // New certificate files under an unchanged member file (a
        // renewal): the running pgpilot re-reads them on SIGHUP.
        changed_apps.push(pgpilot.clone());
        member_change = Some((None, None));
    }
    let removed = || -> Result<(), String> {
        for path in &tls_removed {
            files::remove(path)?;
        }
        Ok(())
    };
    if changed_apps.is_empty() {
        return removed();
    }
    let mut active: Vec<String> = snapctl::services(&changed_apps)?
        .into_iter()
        .filter(|(_, active)| *active)
        .map(|(name, _)| name)
        .collect();
    if let (Some(at), Some((old, new))) = (
        active.iter().position(|a| *a == pgpilot),
        member_change.as_ref(),
    ) {
        let action = match (old, new) {
            // Only the certificate files changed: the file in force is read.
            (None, None) => MemberAction::Reload {
                keys: vec!["the TLS files (tls.*)".into()],
            },
            _ => member_action(old.as_deref(), new.as_deref(), &paths),
        };
        let action = match action {
            MemberAction::Nothing if tls_changed => MemberAction::Reload {
                keys: vec!["the TLS files (tls.*)".into()],
            },
            other => other,
        };
        match action {
            MemberAction::Nothing => {
                active.remove(at);
            }
            MemberAction::Reload { keys } => {
                // The running member's pid file: where its (unchanged) data
                // directory says (the file in force, when only TLS files changed).
                let in_force = old.clone().or_else(|| {
                    files::read(&paths.member_file())
                        .ok()
                        .flatten()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                });
                let signalled = in_force
                    .as_deref()
                    .and_then(|t| crate::config::Config::parse(t, &paths.member_file()).ok())
                    .ok_or_else(|| "the old member file is unreadable".to_string())
                    .and_then(|c| signal_member(&paths, &c.pid_file()));
                match signalled {
                    Ok(pid) => {
                        println!(
                            "reloading {pgpilot} without a restart (SIGHUP to pid {pid}): {} changed",
                            keys.join(", ")
                        );
                        active.remove(at);
                    }
                    Err(why) => {
                        println!("cannot reload {pgpilot} ({why}): restarting it instead");
                    }
                }
            }
            MemberAction::Restart { keys } if !keys.is_empty() => {
                println!("{pgpilot}: {} changed (needs a restart)", keys.join(", "));
            }
            MemberAction::Restart { .. } => {}
        }
    }
    if !active.is_empty() {
        println!("restarting {} (configuration changed)", active.join(", "));
        snapctl::restart(&active)?;
    }
    removed()
}

/// Exit status of `pgpilot snap signal-member` when no running pgpilot
/// holds the pid file.
const NO_MEMBER: i32 = 3;

/// Send the running pgpilot SIGHUP, as `_daemon_`: a strictly confined
/// snap's root has no `capability kill` (nor `dac_read_search`, and the pid
/// file's directory is `_daemon_`'s), so the hook runs
/// `$SNAP/bin/pgpilot snap signal-member PID_FILE` as that user, which a
/// snap may become (system-usernames). Returns the pid signalled.
fn signal_member(paths: &SnapPaths, pid_file: &std::path::Path) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let program = paths.snap.join("bin/pgpilot");
    let mut command = std::process::Command::new(&program);
    command.args(["snap", "signal-member"]).arg(pid_file);
    if nix::unistd::Uid::effective().is_root() {
        command.uid(DAEMON_UID).gid(DAEMON_UID);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    match output.status.code() {
        Some(0) => String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| "signal-member printed no pid".to_string()),
        Some(NO_MEMBER) => Err("no running pgpilot holds its pid file".into()),
        _ => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
    }
}

/// `pgpilot snap signal-member PID_FILE`: SIGHUP to the live pgpilot that
/// holds `PID_FILE` ([`crate::pidfile`]); prints its pid. Exit 3 when none does.
pub fn signal_member_main(pid_file: &std::path::Path) -> i32 {
    let Some(pid) = crate::pidfile::live_pid(pid_file) else {
        eprintln!("no running pgpilot holds {}", pid_file.display());
        return NO_MEMBER;
    };
    let pid_t = nix::unistd::Pid::from_raw(pid);
    match nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGHUP) {
        Ok(()) => {
            println!("{pid}");
            crate::exit::OK
        }
        Err(e) => {
            eprintln!("cannot send SIGHUP to pgpilot (pid {pid}): {e}");
            crate::exit::FAILURE
        }
    }
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

    /// The names of a service's files, in the order they are written.
    fn file_names(service: &ServiceFiles) -> Vec<String> {
        service
            .files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dcs_tls_files_come_before_the_member_file_that_names_them() {
        let paths = crate::snap::test_paths();
        let cert = include_str!("testdata/cert.pem");
        let key = include_str!("testdata/key.pem");
        let mut doc = nest(&defaults("host1", "pw1", "pw2"));
        doc["pgpilot"]["dcs"]["endpoints"] = json!(["https://10.0.0.9:2379"]);
        doc["dcs-tls"] = json!({"ca": cert, "cert": cert, "key": key});
        let services = render_all(&doc, &paths).unwrap();
        let pgpilot = services.iter().find(|s| s.app == "pgpilot").unwrap();
        assert_eq!(
            file_names(pgpilot),
            [
                "dcs-ca.pem",
                "dcs-cert.pem",
                "dcs-key.pem",
                "s3-ca.pem",
                "pgpilot.toml",
                "pgpilot.missing"
            ]
        );
        assert!(pgpilot.files[..3].iter().all(|(_, c)| c.is_some()));
        let member = pgpilot.files[4].1.as_deref().unwrap();
        assert!(member.contains("[dcs.tls]"), "{member}");
        assert!(member.contains("etc/pgpilot/dcs-key.pem"), "{member}");
        // https without dcs-tls: refused, naming what to set.
        doc["dcs-tls"] = Value::Null;
        let Err(e) = render_all(&doc, &paths) else {
            panic!("https without dcs-tls rendered")
        };
        assert!(e.to_string().contains("dcs.tls"), "{e}");
    }

    /// `etcd-tls.*`: etcd's copy of the certificate, written before the
    /// configuration that names it; https listeners need it.
    #[test]
    fn the_etcd_tls_copy_comes_before_the_etcd_file_that_names_it() {
        let paths = crate::snap::test_paths();
        let cert = include_str!("testdata/cert.pem");
        let key = include_str!("testdata/key.pem");
        let mut doc = nest(&defaults("host1", "pw1", "pw2"));
        doc["etcd"]["listen-client-urls"] = json!("https://127.0.0.1:2379");
        let Err(e) = render_all(&doc, &paths) else {
            panic!("https without etcd-tls rendered")
        };
        assert_eq!(e.key, "etcd.listen-client-urls", "{e}");
        doc["etcd-tls"] = json!({"ca": cert, "cert": cert});
        let Err(e) = render_all(&doc, &paths) else {
            panic!("etcd-tls without its key rendered")
        };
        assert_eq!(e.key, "etcd-tls.key", "{e}");
        assert!(e.to_string().contains("are set together"), "{e}");
        doc["etcd-tls"]["key"] = json!(key);
        let services = render_all(&doc, &paths).unwrap();
        let etcd = services.iter().find(|s| s.app == "etcd").unwrap();
        assert_eq!(
            file_names(etcd),
            [
                "cert.pem",
                "key.pem",
                "ca.pem",
                "etcd.conf.yml",
                "etcdctl.env",
                "etcd.missing"
            ]
        );
        let config = etcd.files[3].1.as_deref().unwrap();
        assert!(config.contains("etc/etcd/ca.pem"), "{config}");
        // The unit's TLS (tls.*) is another matter: untouched.
        let tls = services.iter().find(|s| s.app == TLS_FILES).unwrap();
        assert!(tls.files.iter().all(|(_, c)| c.is_none()));
    }

    #[test]
    fn the_s3_ca_comes_before_the_member_file_that_names_it() {
        let paths = crate::snap::test_paths();
        let cert = include_str!("testdata/cert.pem");
        let mut doc = nest(&defaults("host1", "pw1", "pw2"));
        doc["pgpilot"]["backup"] = json!({"repository": "s3", "s3": {
            "endpoint": "https://10.0.0.9:9000", "uri-style": "path", "bucket": "backups",
            "access-key": "a", "secret-key": "s"}});
        doc["s3-tls"] = json!({ "ca": cert });
        let services = render_all(&doc, &paths).unwrap();
        let pgpilot = services.iter().find(|s| s.app == "pgpilot").unwrap();
        let at = |name: &str| {
            pgpilot
                .files
                .iter()
                .position(|(p, _)| p.ends_with(name))
                .unwrap()
        };
        assert!(at("s3-ca.pem") < at("pgpilot.toml"));
        assert_eq!(pgpilot.files[at("s3-ca.pem")].1.as_deref(), Some(cert));
        let member = pgpilot.files[at("pgpilot.toml")].1.as_deref().unwrap();
        assert!(
            member.contains("ca_file = \"/var/snap/charmed-postgresql/x1/etc/pgpilot/s3-ca.pem\""),
            "{member}"
        );
        doc["s3-tls"] = json!({"ca": "not a certificate"});
        let Err(e) = render_all(&doc, &paths) else {
            panic!("a bad CA rendered")
        };
        assert_eq!(e.key, "s3-tls.ca", "{e}");
    }

    #[test]
    fn the_defaults_render_every_service() {
        let paths = crate::snap::test_paths();
        let doc = nest(&defaults("host1", "pw1", "pw2"));
        let services = render_all(&doc, &paths).unwrap();
        // TLS is off by default: its files are absent.
        let tls = services.iter().find(|s| s.app == TLS_FILES).unwrap();
        assert!(tls.files.iter().all(|(_, c)| c.is_none()));
        // So is TLS towards etcd, and an S3 CA.
        let mut dcs: Vec<_> = dcs_tls::DcsTlsPaths::new(&paths)
            .files(None)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        dcs.push(s3_tls::ca_path(&paths));
        // And etcd's copy of the certificate.
        dcs.extend(
            tls::TlsPaths::in_dir(&paths.etc("etcd"))
                .files(None)
                .into_iter()
                .map(|(p, _)| p),
        );
        for s in services.iter().filter(|s| s.app != TLS_FILES) {
            for (path, content) in &s.files {
                if dcs.contains(path) {
                    assert!(content.is_none(), "{}", path.display());
                    continue;
                }
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

    /// One row per `snap set` on a running member: reload (SIGHUP, no
    /// PostgreSQL restart) or restart.
    #[test]
    fn what_the_hook_does_to_a_running_member() {
        let paths = crate::snap::test_paths();
        let base = defaults("host1", "pw1", "pw2");
        let file = |changes: &[(&str, Value)]| -> Option<String> {
            let mut pairs = base.clone();
            for (key, value) in changes {
                pairs.retain(|(k, _)| k != key);
                if !value.is_null() {
                    pairs.push((key.to_string(), value.clone()));
                }
            }
            match member::render(&nest(&pairs)["pgpilot"], &paths, None).unwrap() {
                Outcome::Ready(text) => Some(text),
                Outcome::Missing(_) => None,
            }
        };
        let su = "pgpilot.postgresql.authentication.superuser.password";
        let repl = "pgpilot.postgresql.authentication.replication.password";
        let reload = |keys: &[&str]| MemberAction::Reload {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        };
        let restart = |keys: &[&str]| MemberAction::Restart {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        };
        let rows: Vec<(&str, Option<String>, Option<String>, MemberAction)> = vec![
            (
                "system-users rotated: both passwords, reload",
                file(&[]),
                file(&[(su, json!("new1")), (repl, json!("new2"))]),
                reload(&[
                    "postgresql.authentication.replication.password",
                    "postgresql.authentication.superuser.password",
                ]),
            ),
            (
                "the superuser's password alone: reload",
                file(&[]),
                file(&[(su, json!("new1"))]),
                reload(&["postgresql.authentication.superuser.password"]),
            ),
            (
                "REST API credentials: reload",
                file(&[]),
                file(&[
                    ("pgpilot.api.username", json!("admin")),
                    ("pgpilot.api.password", json!("x")),
                ]),
                reload(&["api.password", "api.username"]),
            ),
            (
                "a port: restart, naming it",
                file(&[]),
                file(&[("pgpilot.postgresql.port", json!(5433))]),
                restart(&["postgresql.port"]),
            ),
            (
                "a password and a parameter: restart (the parameter needs it)",
                file(&[]),
                file(&[
                    (su, json!("new1")),
                    ("pgpilot.postgresql.parameters.work-mem", json!("8MB")),
                ]),
                restart(&["postgresql.parameters.work_mem"]),
            ),
            (
                "a role renamed: restart",
                file(&[]),
                file(&[(
                    "pgpilot.postgresql.authentication.superuser.username",
                    json!("root2"),
                )]),
                restart(&["postgresql.authentication.superuser.username"]),
            ),
            (
                "a default written out: the text changed, nothing else",
                file(&[]),
                file(&[("pgpilot.postgresql.pg-ctl-timeout", json!(60))]),
                MemberAction::Nothing,
            ),
            ("no file before: restart", None, file(&[]), restart(&[])),
            (
                "the file removed (a setting unset): restart",
                file(&[]),
                file(&[("pgpilot.cluster.name", Value::Null)]),
                restart(&[]),
            ),
            (
                "an old file that does not parse: restart",
                Some("not toml [".into()),
                file(&[]),
                restart(&[]),
            ),
        ];
        for (name, old, new, want) in rows {
            let mut got = member_action(old.as_deref(), new.as_deref(), &paths);
            if let MemberAction::Reload { keys } | MemberAction::Restart { keys } = &mut got {
                keys.sort();
            }
            assert_eq!(got, want, "{name}");
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
