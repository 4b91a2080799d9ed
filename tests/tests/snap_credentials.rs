//! New system-user passwords on a running cluster of the packed
//! charmed-postgresql snap (`$PGPILOT_SNAP`), machines of the snapd fixture
//! (src/snapd) on 127.0.0.61-63: `snap set` of the superuser and
//! replication passwords makes the configure hook reload pgpilot (SIGHUP)
//! instead of restarting it; PostgreSQL accepts the new superuser password
//! and refuses the old one, the replicas stream again with the new
//! replication password, and neither PostgreSQL nor pgpilot restarted. A
//! member file that became invalid is refused by the reload and changes
//! nothing; a setting that needs a restart still restarts.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pgpilot_e2e::snapd::checks::{open_tempdir, text, wait_cluster};
use pgpilot_e2e::snapd::{Machine, SnapFile};

const OLD_SU: &str = "su-before-rotation-1";
const OLD_REPL: &str = "repl-before-rotation-1";
const NEW_SU: &str = "su-after-rotation-2";
const NEW_REPL: &str = "repl-after-rotation-2";
const API_PASSWORD: &str = "api-pw-after-rotation";
const SU_KEY: &str = "pgpilot.postgresql.authentication.superuser.password";
const REPL_KEY: &str = "pgpilot.postgresql.authentication.replication.password";
/// Cluster formation on a loaded 2-core machine: generous.
const FORM: Duration = Duration::from_secs(240);
/// "Recovers by itself within a few seconds" (docs/snap.md), with room for
/// a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

fn ip(n: usize) -> String {
    format!("127.0.0.{}", 60 + n)
}

/// `psql -Atc SQL` as `user` over TCP to machine `n`'s PostgreSQL.
fn psql_as(m: &Machine, n: usize, user: &str, sql: &str, password: &str) -> anyhow::Result<Output> {
    let host = ip(n);
    let args = ["-h", &host, "-U", user, "-d", "postgres", "-Atc", sql];
    m.run_app("psql", &args, &[("PGPASSWORD", password)])
}

/// `psql -Atc SQL` as the operator (the superuser).
fn psql(m: &Machine, n: usize, sql: &str, password: &str) -> anyhow::Result<Output> {
    psql_as(m, n, "operator", sql, password)
}

fn sql(m: &Machine, n: usize, sql: &str, password: &str) -> anyhow::Result<String> {
    let out = psql(m, n, sql, password)?;
    anyhow::ensure!(out.status.success(), "psql on m{n} {sql:?}: {}", text(&out));
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
        std::thread::sleep(Duration::from_millis(200));
    }
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
        (SU_KEY, OLD_SU.to_string()),
        (REPL_KEY, OLD_REPL.to_string()),
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

#[test]
fn new_system_user_passwords_reach_postgresql_without_a_restart() -> anyhow::Result<()> {
    let snap = SnapFile::from_env()?;
    let tmp = open_tempdir()?;
    let count = 3;
    let mut machines = Vec::new();
    for n in 1..=count {
        let m = Machine::install(&snap, &format!("m{n}"), &tmp.path().join(format!("m{n}")))?;
        let pairs = machine_settings(n, count);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        m.set(&refs)?;
        machines.push(m);
    }
    for m in &machines {
        m.start(&["etcd"], true)?;
    }
    for m in &machines {
        m.start(&["pgpilot"], true)?;
    }
    let formed = Instant::now();
    let leader = wait_cluster(&machines[0], count - 1, FORM)?;
    eprintln!("cluster formed in {:?}", formed.elapsed());
    let li: usize = leader.trim_start_matches('m').parse()?;
    let replicas: Vec<usize> = (1..=count).filter(|&i| i != li).collect();
    let lm = &machines[li - 1];
    sql(
        lm,
        li,
        "create table rotation (v int); insert into rotation values (1)",
        OLD_SU,
    )?;
    for &r in &replicas {
        poll("the first row on the replica", FORM, || {
            Ok(
                (sql(&machines[r - 1], r, "select count(*) from rotation", OLD_SU).ok()
                    == Some("1".into()))
                .then_some(()),
            )
        })?;
    }

    // What must not change: the postmasters and the pgpilot processes.
    let mut started = Vec::new();
    let mut pgpilot_pids = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        started.push(sql(
            m,
            i + 1,
            "select pg_postmaster_start_time()::text",
            OLD_SU,
        )?);
        pgpilot_pids.push(m.main_pid("pgpilot").context("pgpilot not running")?);
    }
    let receiver = |n: usize, password: &str| {
        sql(
            &machines[n - 1],
            n,
            "select pid::text || ' ' || status from pg_stat_wal_receiver",
            password,
        )
    };
    let receivers_before: Vec<String> = replicas
        .iter()
        .map(|&r| receiver(r, OLD_SU))
        .collect::<anyhow::Result<_>>()?;

    // Rotate both passwords: the replicas' machines first (a replica then
    // has the new replication password before the primary does), then the
    // leader's.
    let rotated = Instant::now();
    for &n in replicas.iter().chain([li].iter()) {
        let out = machines[n - 1].set(&[(SU_KEY, NEW_SU), (REPL_KEY, NEW_REPL)])?;
        let said = &out.hook_output;
        assert!(
            said.contains("reloading charmed-postgresql.pgpilot without a restart"),
            "m{n}: the hook did not reload pgpilot: {said}"
        );
        assert!(
            !said.contains("restarting"),
            "m{n}: the hook restarted something: {said}"
        );
        assert!(
            out.services.iter().all(|s| !s.contains("pgpilot")),
            "m{n}: a pgpilot service command was queued: {:?}",
            out.services
        );
    }
    eprintln!("snap set on 3 machines took {:?}", rotated.elapsed());

    // The new superuser password is accepted on every member (the replicas
    // get the role's new password by replication), the old one refused.
    for n in 1..=count {
        let m = &machines[n - 1];
        poll(
            &format!("m{n} accepts the new superuser password"),
            SETTLE,
            || Ok((sql(m, n, "select 1", NEW_SU).ok() == Some("1".into())).then_some(())),
        )?;
        let old = psql(m, n, "select 1", OLD_SU)?;
        assert!(!old.status.success(), "m{n} still accepts the old password");
        assert!(
            String::from_utf8_lossy(&old.stderr).contains("password authentication failed"),
            "m{n}: {}",
            text(&old)
        );
    }
    eprintln!(
        "new superuser password accepted everywhere {:?} after the first snap set",
        rotated.elapsed()
    );

    // The replication role has its new password on the primary, and the
    // replicas' password files have it (primary_conninfo names the file:
    // no password in postgresql.conf or PostgreSQL's log).
    poll("the replication role's new password", SETTLE, || {
        Ok(psql_as(lm, li, "replication", "select 1", NEW_REPL)?
            .status
            .success()
            .then_some(()))
    })?;
    let old = psql_as(lm, li, "replication", "select 1", OLD_REPL)?;
    assert!(!old.status.success(), "the old replication password works");
    for &r in &replicas {
        let m = &machines[r - 1];
        let passfile = m
            .common_dir()
            .join("var/lib/postgresql/data.pgpilot-pgpass");
        poll(&format!("m{r}'s replication password file"), SETTLE, || {
            let text = std::fs::read_to_string(&passfile).unwrap_or_default();
            Ok(text.contains(NEW_REPL).then_some(()))
        })?;
        let conninfo = sql(m, r, "show primary_conninfo", NEW_SU)?;
        assert!(
            conninfo.contains("passfile=") && !conninfo.contains(NEW_REPL),
            "m{r}: {}",
            conninfo.replace(NEW_REPL, "<the password>")
        );
    }
    // The replicas' WAL receivers kept streaming through the change; cut
    // their replication sessions on the primary so that they log in again,
    // now with the new password, and write a row that must reach them.
    sql(
        lm,
        li,
        "select count(pg_terminate_backend(pid)) from pg_stat_replication",
        NEW_SU,
    )?;
    sql(lm, li, "insert into rotation values (2)", NEW_SU)?;
    for (&r, before) in replicas.iter().zip(&receivers_before) {
        let m = &machines[r - 1];
        poll(
            &format!("the row written after the change on m{r}"),
            SETTLE,
            || {
                Ok(
                    (sql(m, r, "select count(*) from rotation", NEW_SU).ok() == Some("2".into()))
                        .then_some(()),
                )
            },
        )?;
        let now = poll(&format!("m{r} streaming again"), SETTLE, || {
            let now = receiver(r, NEW_SU)?;
            Ok(now.ends_with(" streaming").then_some(now))
        })?;
        assert_ne!(
            now.split(' ').next(),
            before.split(' ').next(),
            "m{r}'s WAL receiver did not log in again (still {before})"
        );
    }
    wait_cluster(&machines[0], count - 1, SETTLE)?;
    eprintln!(
        "replicas streaming with the new password {:?} after the first snap set",
        rotated.elapsed()
    );

    // Nothing restarted.
    for (i, m) in machines.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            sql(m, n, "select pg_postmaster_start_time()::text", NEW_SU)?,
            started[i],
            "m{n}'s PostgreSQL restarted"
        );
        assert_eq!(
            m.main_pid("pgpilot"),
            Some(pgpilot_pids[i]),
            "m{n}'s pgpilot restarted"
        );
        let journal = m.journal("pgpilot");
        assert!(
            journal.contains("reload: applied without a restart"),
            "m{n}: {journal}"
        );
    }
    assert!(
        lm.journal("pgpilot")
            .contains("the roles have the passwords of the reloaded member file"),
        "the leader did not change the roles: {}",
        lm.journal("pgpilot")
    );
    // REST API credentials set with snap set: in force at once, no restart;
    // POST /reload (which re-reads the unchanged file) is then theirs.
    let out = lm.set(&[
        ("pgpilot.api.username", "admin"),
        ("pgpilot.api.password", API_PASSWORD),
    ])?;
    assert!(
        out.hook_output
            .contains("reloading charmed-postgresql.pgpilot without a restart"),
        "{}",
        out.hook_output
    );
    let url = format!("http://{}:8008/reload", ip(li));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (refused, body) = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()?;
        // The hook's SIGHUP is handled a moment after the hook returned.
        let deadline = Instant::now() + SETTLE;
        let refused = loop {
            let status = http.post(&url).send().await?.status().as_u16();
            if status == 401 || Instant::now() > deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let reply = http
            .post(&url)
            .basic_auth("admin", Some(API_PASSWORD))
            .send()
            .await?;
        anyhow::ensure!(reply.status().is_success(), "POST /reload: {reply:?}");
        anyhow::Ok((refused, reply.text().await?))
    })?;
    assert_eq!(refused, 401, "POST /reload without credentials");
    assert!(
        body.contains("reloaded PostgreSQL's configuration"),
        "{body}"
    );
    assert_eq!(lm.main_pid("pgpilot"), Some(pgpilot_pids[li - 1]));

    // No password, old or new, in a log or a hook's output.
    for m in &machines {
        for (what, log) in [
            ("hook output", m.hooks_log()),
            ("pgpilot journal", m.journal("pgpilot")),
            (
                "PostgreSQL log",
                std::fs::read_to_string(m.common_dir().join("var/log/postgresql/postgresql.log"))
                    .unwrap_or_default(),
            ),
        ] {
            for secret in [OLD_SU, OLD_REPL, NEW_SU, NEW_REPL, API_PASSWORD] {
                if let Some(line) = log.lines().find(|l| l.contains(secret)) {
                    panic!(
                        "a password is in the {what}: {}",
                        line.replace(secret, "<the password>")
                    );
                }
            }
        }
    }

    // SIGHUP with a member file that does not validate: refused, nothing
    // changes (the file is edited behind the hook's back here, as an
    // operator outside the snap could).
    let r = replicas[0];
    let rm = &machines[r - 1];
    let member_file = rm.data_dir().join("etc/pgpilot/pgpilot.toml");
    let good = std::fs::read_to_string(&member_file)?;
    std::fs::write(
        &member_file,
        good.replace("[api]", "[api]\nlisten_port = 1"),
    )?;
    let pid_file = rm.common_dir().join("var/lib/postgresql/data.pgpilot.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let out = rm.run_app("pgpilot", &["snap", "signal-member", &pid_arg], &[])?;
    assert!(out.status.success(), "signal-member: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pgpilot_pids[r - 1].to_string()
    );
    poll("the refused reload in the journal", SETTLE, || {
        Ok(rm
            .journal("pgpilot")
            .contains("reload of the member file refused")
            .then_some(()))
    })?;
    let journal = rm.journal("pgpilot");
    assert!(journal.contains("api.listen_port"), "{journal}");
    std::fs::write(&member_file, &good)?;
    assert_eq!(rm.main_pid("pgpilot"), Some(pgpilot_pids[r - 1]));
    assert_eq!(sql(rm, r, "select count(*) from rotation", NEW_SU)?, "2");

    // A setting that needs a restart still restarts pgpilot (and only it).
    let out = rm.set(&[("pgpilot.tags.noloadbalance", "true")])?;
    assert!(
        out.hook_output
            .contains("tags.noloadbalance changed (needs a restart)")
            && out
                .hook_output
                .contains("restarting charmed-postgresql.pgpilot"),
        "{}",
        out.hook_output
    );
    poll("pgpilot restarted", FORM, || {
        Ok(rm.main_pid("pgpilot").filter(|p| *p != pgpilot_pids[r - 1]))
    })?;
    wait_cluster(&machines[0], count - 1, FORM)?;
    Ok(())
}
