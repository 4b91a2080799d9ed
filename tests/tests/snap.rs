//! The packed charmed-postgresql snap (`$PGPILOT_SNAP`, from
//! `scripts/build-snap.sh`), run from the file on machines of the snapd
//! fixture (src/snapd): three machines form one cluster configured only with
//! `snap set`, every daemon runs as `_daemon_`, bad settings are refused
//! without touching a file, a valid one restarts only what changed, a refresh
//! keeps the member's data, PgBouncer reaches the leader, and one machine
//! with the install defaults backs itself up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pgpilot_e2e::snapd::checks::{members, open_tempdir, text, wait_cluster};
use pgpilot_e2e::snapd::{ChangeError, Machine, SnapFile};
use serde_json::Value;

const DAEMON_UID: u32 = 584792;
const PASSWORD: &str = "pw-operator-1";
const REPL_PASSWORD: &str = "pw-replication-1";
/// Cluster formation on a loaded 2-core machine: generous.
const FORM: Duration = Duration::from_secs(240);

fn ip(n: usize) -> String {
    format!("127.0.0.{}", 10 + n)
}

/// The snap's psql as root, with the operator's password.
fn psql(m: &Machine, args: &[&str], password: &str) -> anyhow::Result<Output> {
    m.run_app("psql", args, &[("PGPASSWORD", password)])
}

/// One value from `psql -Atc SQL` (over TCP to `host` when given).
fn sql(m: &Machine, host: Option<&str>, sql: &str, password: &str) -> anyhow::Result<String> {
    let mut args = vec!["-U", "operator", "-d", "postgres", "-Atc", sql];
    if let Some(h) = host {
        args.extend(["-h", h]);
    }
    let out = psql(m, &args, password)?;
    anyhow::ensure!(out.status.success(), "psql {args:?}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = format!("{e:#}"),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} ({last_err})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every file under $SNAP_DATA/etc, byte for byte.
fn rendered(m: &Machine) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.insert(path.clone(), std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(&m.data_dir().join("etc"), &mut out)?;
    Ok(out)
}

fn uid_of(pid: i32) -> Option<(u32, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((uid, cmdline))
}

/// Settings that make machine `n` of `count` a member on its own address.
fn machine_settings(n: usize, count: usize) -> Vec<(String, String)> {
    let addr = ip(n);
    let peers: Vec<String> = (1..=count)
        .map(|i| format!("m{i}=http://{}:2380", ip(i)))
        .collect();
    let endpoints: Vec<String> = (1..=count)
        .map(|i| format!("\"http://{}:2379\"", ip(i)))
        .collect();
    [
        ("pgpilot.cluster.name", format!("m{n}")),
        (
            "pgpilot.dcs.endpoints",
            format!("[{}]", endpoints.join(",")),
        ),
        ("pgpilot.postgresql.listen", addr.clone()),
        ("pgpilot.postgresql.connect-address", format!("{addr}:5432")),
        ("pgpilot.api.listen", format!("{addr}:8008")),
        (
            "pgpilot.postgresql.authentication.superuser.password",
            PASSWORD.to_string(),
        ),
        (
            "pgpilot.postgresql.authentication.replication.password",
            REPL_PASSWORD.to_string(),
        ),
        ("etcd.name", format!("m{n}")),
        ("etcd.initial-cluster", peers.join(",")),
        ("etcd.listen-client-urls", format!("http://{addr}:2379")),
        ("etcd.advertise-client-urls", format!("http://{addr}:2379")),
        ("etcd.listen-peer-urls", format!("http://{addr}:2380")),
        (
            "etcd.initial-advertise-peer-urls",
            format!("http://{addr}:2380"),
        ),
        ("pgbouncer.listen-addr", addr),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn set(m: &Machine, pairs: &[(String, String)]) -> anyhow::Result<()> {
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    m.set(&refs).map(|_| ())
}

/// A `snap set` that must be refused, naming `key`, without a file changed.
fn refused(m: &Machine, key: &str, value: &str, secret: Option<&str>) -> anyhow::Result<()> {
    let before = rendered(m)?;
    let err = match m.set(&[(key, value)]) {
        Ok(out) => anyhow::bail!("snap set {key}={value:?} was accepted: {}", out.hook_output),
        Err(e) => e,
    };
    let change = ChangeError::of(&err).with_context(|| format!("not a refused change: {err:#}"))?;
    let message = change.cli_message();
    let named = message.contains(key)
        || (key == "pgpilot.bootstrap.loop-wait" && message.contains("pgpilot.bootstrap.ttl"));
    anyhow::ensure!(named, "the error does not name {key}: {message}");
    if let Some(secret) = secret {
        anyhow::ensure!(
            !message.contains(secret),
            "the error shows the secret: {message}"
        );
    }
    anyhow::ensure!(
        rendered(m)? == before,
        "a refused `snap set {key}` changed a rendered file"
    );
    Ok(())
}

#[test]
fn three_machines_one_cluster_from_the_packed_snap() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let tmp = open_tempdir()?;
    let count = 3;
    let mut machines = Vec::new();
    for n in 1..=count {
        let m = Machine::install(&snap, &format!("m{n}"), &tmp.path().join(format!("m{n}")))?;
        set(&m, &machine_settings(n, count))?;
        machines.push(m);
    }
    for m in &machines {
        m.start(&["etcd"], true)?;
    }
    for m in &machines {
        m.start(&["pgpilot"], true)?;
    }
    let leader = wait_cluster(&machines[0], count - 1, FORM)?;
    // One etcd cluster: the snap's etcdctl finds its endpoint on its own.
    let out = machines[2].run_app("etcdctl", &["member", "list", "-w", "json"], &[])?;
    assert!(out.status.success(), "etcdctl member list: {}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    let names: Vec<&str> = list["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.len(), count, "etcd members: {list}");
    // Another member's etcd named on the command line (the charm's way):
    // the flag wins over the rendered ETCDCTL_ENDPOINTS.
    let other = format!("--endpoints=http://{}:2379", ip(1));
    let out = machines[2].run_app("etcdctl", &[&other, "member", "list"], &[])?;
    assert!(out.status.success(), "etcdctl {other}: {}", text(&out));
    let li: usize = leader.trim_start_matches('m').parse()?;
    let lm = &machines[li - 1];

    // psql through the socket (no flags) and over TCP; a row on the leader
    // is read on both replicas.
    assert_eq!(sql(lm, None, "select pg_is_in_recovery()", PASSWORD)?, "f");
    assert_eq!(
        sql(lm, Some(&ip(li)), "select inet_server_addr()", PASSWORD)?,
        ip(li)
    );
    sql(
        lm,
        None,
        "create table snap_t (v int); insert into snap_t select generate_series(1, 100)",
        PASSWORD,
    )?;
    for (i, m) in machines.iter().enumerate() {
        let host = ip(i + 1);
        poll("the row count on every member", FORM, || {
            Ok(
                (sql(m, Some(&host), "select count(*) from snap_t", PASSWORD).ok()
                    == Some("100".into()))
                .then_some(()),
            )
        })?;
    }

    // PgBouncer on the first machine, configured with snap set, reaches the leader.
    let m1 = &machines[0];
    set(
        m1,
        &[
            (
                "pgbouncer.databases.postgres".into(),
                format!("host={} port=5432 dbname=postgres", ip(li)),
            ),
            ("pgbouncer.users.operator".into(), PASSWORD.into()),
        ],
    )?;
    m1.start(&["pgbouncer"], true)?;
    let through_bouncer = poll("psql through PgBouncer", FORM, || {
        let out = psql(
            m1,
            &[
                "-h",
                &ip(1),
                "-p",
                "6432",
                "-U",
                "operator",
                "-d",
                "postgres",
                "-Atc",
                "select host(inet_server_addr()) || ' ' || pg_is_in_recovery()::text",
            ],
            PASSWORD,
        )?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    })?;
    assert_eq!(through_bouncer, format!("{} false", ip(li)));

    // Every daemon process runs as _daemon_, none as root.
    let mut seen = Vec::new();
    for m in &machines {
        for app in ["pgpilot", "etcd", "pgbouncer"] {
            for pid in m.pids(app) {
                if let Some((uid, cmdline)) = uid_of(pid) {
                    assert_eq!(
                        uid, DAEMON_UID,
                        "{app} process {pid} ({cmdline}) runs as {uid}"
                    );
                    seen.push(cmdline);
                }
            }
        }
    }
    for wanted in [
        "fence-guard",
        "postgres",
        "etcd",
        "pgbouncer",
        "pgpilot run",
    ] {
        assert!(
            seen.iter().any(|c| c.contains(wanted)),
            "no {wanted} process among {seen:#?}"
        );
    }

    // Passwords given with snap set appear in no log and no hook output.
    for m in &machines {
        for (what, text) in [
            ("hook output", m.hooks_log()),
            ("pgpilot journal", m.journal("pgpilot")),
            ("etcd journal", m.journal("etcd")),
        ] {
            assert!(
                !text.contains(PASSWORD),
                "the superuser password is in the {what}"
            );
            assert!(
                !text.contains(REPL_PASSWORD),
                "the replication password is in the {what}"
            );
        }
    }

    // Bad settings are refused by name, and no rendered file changes.
    let m2 = &machines[1];
    refused(m2, "pgpilot.postgresql.port", "abc", None)?;
    refused(m2, "pgpilot.cluster.colour", "blue", None)?;
    refused(m2, "pgpilot.bootstrap.loop-wait", "30", None)?;
    refused(m2, "etcd.listen-client-urls", "10.0.0.1:2379", None)?;
    refused(m2, "etcd.initial-cluster-state", "sideways", None)?;
    refused(m2, "pgbouncer.pool-mode", "sometimes", None)?;
    refused(
        m2,
        "pgpilot.postgresql.authentication.superuser.password",
        "hunter\ntwo",
        Some("hunter"),
    )?;

    // A valid change restarts only the service whose file changed.
    let before: Vec<Option<i32>> = ["pgpilot", "etcd", "pgbouncer"]
        .iter()
        .map(|a| m1.main_pid(a))
        .collect();
    m1.set(&[("pgbouncer.default-pool-size", "10")])?;
    let bouncer = poll("pgbouncer restarted", FORM, || {
        Ok(m1.main_pid("pgbouncer").filter(|p| Some(*p) != before[2]))
    })?;
    assert_ne!(Some(bouncer), before[2]);
    assert_eq!(m1.main_pid("pgpilot"), before[0], "pgpilot was restarted");
    assert_eq!(m1.main_pid("etcd"), before[1], "etcd was restarted");
    let ini = std::fs::read_to_string(m1.data_dir().join("etc/pgbouncer/pgbouncer.ini"))?;
    assert!(ini.contains("default_pool_size = 10"), "{ini}");

    // A refresh of a replica's machine brings the member back with its data.
    let ri = (1..=count).find(|&i| i != li).unwrap();
    let rm = &machines[ri - 1];
    let old_rev = rm.revision();
    rm.refresh(&snap)?;
    assert_ne!(rm.revision(), old_rev);
    wait_cluster(&machines[0], count - 1, FORM)?;
    assert_eq!(
        sql(rm, Some(&ip(ri)), "select count(*) from snap_t", PASSWORD)?,
        "100"
    );
    assert_eq!(members(rm)?.len(), count);
    Ok(())
}

#[test]
fn one_machine_with_the_install_defaults_backs_itself_up() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let tmp = open_tempdir()?;
    let m = Machine::install(&snap, "single", &tmp.path().join("single"))?;
    // The install hook generated the passwords; root reads them with snap get.
    let password = m
        .get("pgpilot.postgresql.authentication.superuser.password")?
        .as_str()
        .context("no generated superuser password")?
        .to_string();
    assert!(password.len() >= 16, "a short generated password");
    m.start(&["etcd", "pgpilot"], true)?;
    wait_cluster(&m, 0, FORM)?;
    assert_eq!(sql(&m, None, "select 1", &password)?, "1");

    let backup = m.run_app("pgpilot", &["backup"], &[])?;
    assert!(backup.status.success(), "pgpilot backup: {}", text(&backup));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&backup.stdout),
        String::from_utf8_lossy(&backup.stderr)
    );
    let label = all
        .lines()
        .find_map(|l| l.split("new backup label = ").nth(1))
        .map(|l| l.trim().to_string())
        .with_context(|| format!("no label: {all}"))?;
    let info = m.run_app("pgpilot", &["info"], &[])?;
    assert!(info.status.success(), "pgpilot info: {}", text(&info));
    assert!(
        String::from_utf8_lossy(&info.stdout).contains(&label),
        "{}",
        text(&info)
    );
    // Logs in $SNAP_COMMON/var/log as well as the journal; the daemons'
    // files are their own.
    for log in [
        "var/log/pgpilot/pgpilot.log",
        "var/log/postgresql/postgresql.log",
        "var/log/etcd/etcd.log",
    ] {
        let path = m.common_dir().join(log);
        let meta = std::fs::metadata(&path).with_context(|| format!("no {log}"))?;
        assert!(meta.len() > 0, "{log} is empty");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.uid(), DAEMON_UID, "{log} is not _daemon_'s");
    }
    assert!(
        m.journal("pgpilot").contains("cluster bootstrapped"),
        "pgpilot's journal: {}",
        m.journal("pgpilot")
    );
    {
        use std::os::unix::fs::MetadataExt;
        let data = m.common_dir().join("var/lib/postgresql/data");
        assert_eq!(std::fs::metadata(&data)?.uid(), DAEMON_UID);
    }
    let repo = m.common_dir().join("var/lib/pgpilot/repo");
    assert!(
        repo.join("postgresql").is_dir(),
        "no stanza in {}",
        repo.display()
    );

    // Without its settings the member refuses to start and says which
    // `snap set` is missing.
    m.unset(&["pgpilot.cluster.name"])?;
    m.wait_active("pgpilot", false, FORM)?;
    let journal = m.journal("pgpilot");
    assert!(
        journal.contains("snap set charmed-postgresql pgpilot.cluster.name"),
        "{journal}"
    );
    assert!(!m.data_dir().join("etc/pgpilot/pgpilot.toml").exists());
    Ok(())
}
