//! Backups to S3 through the `s3-parameters` relation, on the model
//! simulator with the packed charm and snap, and moto's S3 on an address of
//! the test's own loopback network. s3-integrator is played by the test
//! (its application bag). Issue 12's must-shows: every reachable branch of
//! the four flowcharts with the action's message, create-backup from a
//! replica of 3 units and list-backups, restore to a backup and to a time
//! on one unit, an S3 outage that blocks and clears by itself, another
//! cluster's bucket refused.

use std::time::{Duration, Instant};

use pgpilot_e2e::backup::moto::MotoServer;
use pgpilot_e2e::juju::checks::{self, operator_password, sql, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
use serde_json::{json, Value};

const BUCKET: &str = "pg-backups";
const STANZA: &str = "test.postgresql";
const NO_RELATION: &str =
    "Relation with s3-integrator charm missing, cannot create/restore backup.";

/// update-status every 15 s: the leader re-checks the repository there.
fn quick_status() -> DriverOptions {
    DriverOptions {
        update_status_interval: Some(Duration::from_secs(15)),
        ..DriverOptions::default()
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// moto on `<net>.250`, with the bucket.
fn moto(dir: &std::path::Path, net: &str, port: u16) -> anyhow::Result<MotoServer> {
    let m = MotoServer::start_on(dir, &format!("{net}.250"), port)?;
    block_on(m.create_bucket(BUCKET))?;
    Ok(m)
}

/// moto behind TLS on `<net>.250` (a test CA), with the bucket (made with
/// curl: the harness's HTTP client speaks plain HTTP only); the CA's file.
fn moto_tls(
    dir: &std::path::Path,
    net: &str,
    port: u16,
) -> anyhow::Result<(MotoServer, std::path::PathBuf)> {
    let (m, ca) = MotoServer::start_tls_on(dir, &format!("{net}.250"), port)?;
    let url = format!("{}/{BUCKET}", m.endpoint());
    let out = std::process::Command::new("curl")
        .args(["-fsS", "-X", "PUT", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl PUT {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((m, ca))
}

fn s3_data(moto: &MotoServer, path: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bucket", BUCKET.to_string()),
        ("endpoint", moto.endpoint()),
        ("region", "us-east-1".to_string()),
        ("path", path.to_string()),
        ("access-key", "testing".to_string()),
        ("secret-key", "testing".to_string()),
        ("s3-uri-style", "path".to_string()),
    ]
}

/// The same as s3-integrator 2 answers a requirer that asked for
/// `requested-secrets`: the keys in a secret named by `secret-extra`.
/// The endpoint is behind TLS with a private CA: `tls-ca-chain` too.
fn s3_data_v1(
    moto: &MotoServer,
    path: &str,
    secret: &str,
    ca: &std::path::Path,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut data: Vec<_> = s3_data(moto, path)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("-key"))
        .collect();
    data.push(("secret-extra", secret.to_string()));
    let pem = std::fs::read_to_string(ca)?;
    data.push(("tls-ca-chain", json!([pem]).to_string()));
    Ok(data)
}

fn set_s3(d: &Deployment, rid: u32, data: &[(&'static str, String)]) -> anyhow::Result<()> {
    let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    d.set_remote_app_data(rid, &pairs)
}

/// The peer relation's application bag.
fn app_bag(d: &Deployment) -> serde_json::Map<String, Value> {
    let rid = d
        .model()
        .relation_id("database-peers")
        .expect("peer relation");
    let st = d.model().state();
    st.relations[&rid]
        .app_data
        .get("postgresql")
        .map(|b| {
            b.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Every unit runs with the S3 settings, the leader checked them, every
/// unit is active; the primary's unit.
fn s3_ready(d: &Deployment, units: usize) -> anyhow::Result<String> {
    d.wait_for("S3 settings applied and checked", DEPLOY, |d| {
        for unit in d.units() {
            let m = d.machine(&unit).expect("machine");
            let repo = m.config()["pgpilot"]["backup"]["repository"].clone();
            anyhow::ensure!(repo == json!("s3"), "{unit}: repository {repo}");
        }
        let bag = app_bag(d);
        anyhow::ensure!(
            bag.get("s3-checked").is_some_and(|v| v != ""),
            "not checked yet: {bag:?}"
        );
        anyhow::ensure!(
            bag.get("s3-status").is_none_or(|v| v == ""),
            "blocked: {bag:?}"
        );
        active(d, units)
    })
}

fn active(d: &Deployment, units: usize) -> anyhow::Result<String> {
    let statuses = d.statuses();
    anyhow::ensure!(statuses.len() == units, "{statuses:?}");
    anyhow::ensure!(statuses.values().all(|s| s.0 == "active"), "{statuses:?}");
    statuses
        .iter()
        .find(|(_, s)| s.1.starts_with("Primary"))
        .map(|(u, _)| u.clone())
        .ok_or_else(|| anyhow::anyhow!("no Primary: {statuses:?}"))
}

/// Run an action; `Ok(results)` when it completed, `Err(message)` when it
/// failed.
fn act(
    d: &Deployment,
    unit: &str,
    name: &str,
    params: Value,
) -> Result<serde_json::Map<String, Value>, String> {
    let run = d
        .run_action(unit, name, params)
        .map_err(|e| format!("could not run {name}: {e:#}"))?;
    if run.status == "completed" {
        Ok(run.results)
    } else {
        Err(run.message)
    }
}

fn fails(d: &Deployment, unit: &str, name: &str, params: Value, expected: &str) {
    match act(d, unit, name, params.clone()) {
        Err(m) => assert_eq!(m, expected, "{name} {params} on {unit}"),
        Ok(r) => panic!("{name} {params} on {unit} completed: {r:?}"),
    }
}

fn fails_with(d: &Deployment, unit: &str, name: &str, params: Value, part: &str) -> String {
    match act(d, unit, name, params.clone()) {
        Err(m) => {
            assert!(m.contains(part), "{name} {params} on {unit}: {m}");
            m
        }
        Ok(r) => panic!("{name} {params} on {unit} completed: {r:?}"),
    }
}

/// The objects under `prefix` in the bucket (moto answers unsigned GETs).
fn objects(moto: &MotoServer, prefix: &str) -> anyhow::Result<String> {
    objects_with(moto, None, prefix)
}

/// The same over TLS (curl, trusting `ca`).
fn objects_with(
    moto: &MotoServer,
    ca: Option<&std::path::Path>,
    prefix: &str,
) -> anyhow::Result<String> {
    let url = format!("{}/{BUCKET}?prefix={prefix}", moto.endpoint());
    let mut curl = std::process::Command::new("curl");
    curl.arg("-fsS");
    if let Some(ca) = ca {
        curl.arg("--cacert").arg(ca);
    }
    let out = curl.arg(&url).output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn leader_status(d: &Deployment) -> (String, String) {
    let leader = d.leader().expect("a leader");
    d.statuses()[&leader].clone()
}

/// Wait until the leader shows `blocked` with exactly `message`.
fn leader_blocked(d: &Deployment, what: &str, message: &str) -> anyhow::Result<()> {
    d.wait_for(what, DEPLOY, |d| {
        let s = leader_status(d);
        anyhow::ensure!(s == ("blocked".into(), message.into()), "{s:?}");
        Ok(())
    })
}

/// Three units: the relation's branches, backups from replicas, the
/// list, the primary refused, restore refused on 3 units, then S3 down
/// (blocked, backups refused) and back (cleared by update-status).
#[test]
fn backups_of_three_units_and_an_s3_outage() -> anyhow::Result<()> {
    let net = "127.0.8";
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, net, quick_status())?;
    let started = Instant::now();
    d.add_units(3)?;
    let port = pgpilot_e2e::ports::free_port();
    let mut moto = moto(tmp.path(), net, port)?;
    d.wait_for("3 units active", DEPLOY, |d| active(d, 3))?;
    eprintln!("deployed in {:.0} s", started.elapsed().as_secs_f64());

    // No relation.
    fails(&d, "postgresql/1", "create-backup", json!({}), NO_RELATION);
    fails(&d, "postgresql/1", "list-backups", json!({}), NO_RELATION);

    // Related, nothing sent: the leader asked for a bucket.
    let rid = d.relate("s3-parameters", "s3-integrator", 1)?;
    d.settle(DEPLOY)?;
    let ours = d.local_app_data(rid);
    assert_eq!(
        ours.get("bucket").map(String::as_str),
        Some(format!("relation-{rid}").as_str()),
        "{ours:?}"
    );
    fails_with(
        &d,
        "postgresql/1",
        "create-backup",
        json!({}),
        "s3-integrator has not sent its settings yet",
    );

    // Some settings: the leader says what is missing.
    d.set_remote_app_data(rid, &[("endpoint", &moto.endpoint())])?;
    let missing = "Missing S3 parameters: [\"bucket\", \"access-key\", \"secret-key\"]: set them on s3-integrator";
    leader_blocked(&d, "missing parameters shown", missing)?;
    fails(&d, "postgresql/1", "list-backups", json!({}), missing);

    // Complete: every unit archives to S3 (a rolling restart), the leader checks.
    set_s3(&d, rid, &s3_data(&moto, "/cluster-a/"))?;
    let primary = s3_ready(&d, 3)?;
    eprintln!(
        "S3 configured and checked at {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let replicas: Vec<String> = d.units().into_iter().filter(|u| *u != primary).collect();

    fails(
        &d,
        &replicas[0],
        "create-backup",
        json!({"type": "differential"}),
        "Invalid backup type: differential. Possible values: full, incremental.",
    );
    // It names a healthy replica: either, as one may be restarting (the S3
    // settings roll through the members).
    let refused = act(&d, &primary, "create-backup", json!({}))
        .expect_err("create-backup on the primary completed");
    let expected: Vec<String> = replicas
        .iter()
        .map(|r| format!(
            "Unit cannot perform backups as it is the cluster primary: backups are taken on a replica so that the primary is not loaded; run juju run {r} create-backup"
        ))
        .collect();
    assert!(
        expected.contains(&refused),
        "create-backup on {primary}: {refused}"
    );

    let pw = operator_password(&d)?;
    let m = d.machine(&primary).expect("machine");
    let host = d.address(&primary);
    sql(&m, &host, &pw, "CREATE TABLE t (tag text)")?;
    sql(&m, &host, &pw, "INSERT INTO t VALUES ('full')")?;
    let t0 = Instant::now();
    let r = act(&d, &replicas[0], "create-backup", json!({})).map_err(anyhow::Error::msg)?;
    assert_eq!(r["backup-status"], "backup created");
    eprintln!(
        "full backup from {} in {:.1} s",
        replicas[0],
        t0.elapsed().as_secs_f64()
    );
    sql(&m, &host, &pw, "INSERT INTO t VALUES ('incremental')")?;
    let r = act(
        &d,
        &replicas[1],
        "create-backup",
        json!({"type": "incremental"}),
    )
    .map_err(anyhow::Error::msg)?;
    assert_eq!(r["backup-status"], "backup created");
    // Statuses are what they were.
    d.wait_for("active again", DEPLOY, |d| active(d, 3))?;

    let r = act(&d, &replicas[1], "list-backups", json!({})).map_err(anyhow::Error::msg)?;
    let table = r["backups"].as_str().unwrap_or_default().to_string();
    eprintln!("{table}");
    assert!(
        table.starts_with(&format!(
            "Storage bucket name: {BUCKET}\nBackups base path: /cluster-a/{STANZA}/backup/\n"
        )),
        "{table}"
    );
    let listed: Vec<Value> = serde_json::from_str(r["backups-json"].as_str().unwrap_or("[]"))?;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["type"], "full");
    assert_eq!(listed[1]["type"], "incremental");
    assert_eq!(listed[1]["reference-backup-id"], listed[0]["backup-id"]);
    for b in &listed {
        assert!(table.contains(b["backup-id"].as_str().unwrap()), "{table}");
        assert_eq!(b["status"], "finished");
        // The rolling restart for the S3 settings switched over: a later timeline.
        assert!(
            b["timeline"]
                .as_str()
                .is_some_and(|t| t.parse::<u32>().is_ok()),
            "{b}"
        );
    }
    // Each backup's log is in the repository.
    let logs = objects(&moto, &format!("cluster-a/{STANZA}/log/"))?;
    for b in &listed {
        let name = format!("backup-{}.log", b["label"].as_str().unwrap());
        assert!(logs.contains(&name), "{name} not in {logs}");
    }

    // Restore needs one unit.
    fails(&d, &primary, "restore", json!({"backup-id": listed[0]["backup-id"]}),
          "Unit cannot restore backup as there are more than one unit in the cluster: scale down to one unit (juju remove-unit), restore, then add units (3 units now)");

    // S3 goes away: the leader's next check blocks it, backups are refused.
    moto.kill();
    let t1 = Instant::now();
    let blocked = d.wait_for("blocked by the S3 outage", DEPLOY, |d| {
        let s = leader_status(d);
        anyhow::ensure!(s.0 == "blocked" && s.1.starts_with("failed to access the bucket, check your S3 settings (bucket pg-backups path cluster-a): "), "{s:?}");
        Ok(s.1)
    })?;
    eprintln!(
        "blocked after {:.0} s: {blocked}",
        t1.elapsed().as_secs_f64()
    );
    fails(
        &d,
        &replicas[0],
        "create-backup",
        json!({}),
        &format!("Unit is in a blocking state: {blocked}. Resolve it first (juju status)."),
    );
    fails_with(
        &d,
        &replicas[0],
        "list-backups",
        json!({}),
        "Failed to list PostgreSQL backups with error: ",
    );

    // S3 back on the same port (moto starts empty): cleared by update-status.
    moto = self::moto(tmp.path(), net, port)?;
    let t2 = Instant::now();
    d.wait_for("the S3 block cleared", DEPLOY, |d| {
        let bag = app_bag(d);
        anyhow::ensure!(bag.get("s3-status").is_none_or(|v| v == ""), "{bag:?}");
        active(d, 3)
    })?;
    eprintln!(
        "cleared {:.0} s after S3 came back",
        t2.elapsed().as_secs_f64()
    );
    // moto came back empty: the WAL archived before is gone. A checkpoint
    // lets the replica's backup start after it (a restartpoint there).
    sql(&m, &host, &pw, "CHECKPOINT")?;
    let r = act(&d, &replicas[0], "create-backup", json!({})).map_err(anyhow::Error::msg)?;
    assert_eq!(r["backup-status"], "backup created");
    drop(moto);
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A row, and the server's clock right after it committed.
fn write(d: &Deployment, unit: &str, tag: &str) -> anyhow::Result<()> {
    let m = d.machine(unit).expect("machine");
    sql(
        &m,
        &d.address(unit),
        &operator_password(d)?,
        &format!("INSERT INTO t VALUES ('{tag}')"),
    )?;
    Ok(())
}

fn tags(d: &Deployment, unit: &str) -> anyhow::Result<String> {
    let m = d.machine(unit).expect("machine");
    sql(
        &m,
        &d.address(unit),
        &operator_password(d)?,
        "SELECT string_agg(tag, ',' ORDER BY tag) FROM t",
    )
}

/// Everything written so far is in the archive.
fn archive_all(d: &Deployment, unit: &str) -> anyhow::Result<()> {
    let m = d.machine(unit).expect("machine");
    let (host, pw) = (d.address(unit), operator_password(d)?);
    let segment = sql(&m, &host, &pw, "SELECT pg_walfile_name(pg_switch_wal())")?;
    d.wait_for("the WAL archived", Duration::from_secs(120), |_| {
        let done = sql(
            &m,
            &host,
            &pw,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )?;
        anyhow::ensure!(
            done.as_str() >= segment.as_str(),
            "archived {done}, want {segment}"
        );
        Ok(())
    })
}

fn restored(d: &Deployment) -> anyhow::Result<()> {
    d.wait_for("restoring backup shown", Duration::from_secs(60), |d| {
        let s = leader_status(d);
        anyhow::ensure!(s.1 == "restoring backup" || s.0 == "active", "{s:?}");
        Ok(())
    })?;
    d.wait_for("the restore finished", DEPLOY, |d| {
        anyhow::ensure!(
            app_bag(d).get("restoring-backup").is_none_or(|v| v == ""),
            "still restoring"
        );
        active(d, 1)
    })?;
    Ok(())
}

/// One unit: the restore's branches, a restore to a time between two
/// writes and one to a backup, then another cluster's stanza refused.
#[test]
fn restore_one_unit_and_refuse_another_clusters_bucket() -> anyhow::Result<()> {
    let net = "127.0.10";
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, net, quick_status())?;
    let started = Instant::now();
    d.add_units(1)?;
    let (moto, ca) = moto_tls(tmp.path(), net, pgpilot_e2e::ports::free_port())?;
    d.wait_for("1 unit active", DEPLOY, |d| active(d, 1))?;
    let unit = "postgresql/0";
    fails(
        &d,
        unit,
        "restore",
        json!({"backup-id": "2026-03-01T02:00:00Z"}),
        NO_RELATION,
    );
    let rid = d.relate("s3-parameters", "s3-integrator", 1)?;
    // s3-integrator 2's way: the credentials in a secret granted to the relation.
    let secret =
        d.add_remote_secret(rid, &[("access-key", "testing"), ("secret-key", "testing")])?;
    set_s3(&d, rid, &s3_data_v1(&moto, "one", &secret, &ca)?)?;
    s3_ready(&d, 1)?;
    let ours = d.local_app_data(rid);
    assert_eq!(
        ours.get("requested-secrets").map(String::as_str),
        Some(r#"["access-key","secret-key"]"#),
        "{ours:?}"
    );
    eprintln!("S3 ready at {:.0} s", started.elapsed().as_secs_f64());

    fails(&d, unit, "restore", json!({}),
          "Either backup-id or restore-to-time parameters need to be provided to be able to do restore");
    fails(&d, unit, "restore", json!({"restore-to-time": "tomorrow"}),
          "Bad restore-to-time format: \"tomorrow\"; use YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM] (UTC without a zone), or latest");
    fails(
        &d,
        unit,
        "restore",
        json!({"restore-to-time": "latest"}),
        "there is no backup of this cluster to restore: run create-backup first",
    );

    let m = d.machine(unit).expect("machine");
    let (host, pw) = (d.address(unit), operator_password(&d)?);
    sql(&m, &host, &pw, "CREATE TABLE t (tag text)")?;
    write(&d, unit, "a-backup")?;
    let r = act(&d, unit, "create-backup", json!({})).map_err(anyhow::Error::msg)?;
    assert_eq!(r["backup-status"], "backup created");
    let r = act(&d, unit, "list-backups", json!({})).map_err(anyhow::Error::msg)?;
    let listed: Vec<Value> = serde_json::from_str(r["backups-json"].as_str().unwrap_or("[]"))?;
    let id = listed[0]["backup-id"].as_str().unwrap().to_string();
    fails(
        &d,
        unit,
        "restore",
        json!({"backup-id": "2020-01-01T00:00:00Z"}),
        "Invalid backup-id: 2020-01-01T00:00:00Z (list-backups shows the backups of this cluster)",
    );

    // Two writes with a time between them.
    write(&d, unit, "b-first")?;
    std::thread::sleep(Duration::from_millis(1100));
    let between = sql(
        &m,
        &host,
        &pw,
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    )?;
    std::thread::sleep(Duration::from_millis(1100));
    write(&d, unit, "c-second")?;
    archive_all(&d, unit)?;

    let t0 = Instant::now();
    let r = act(
        &d,
        unit,
        "restore",
        json!({"restore-to-time": format!("{between}+00")}),
    )
    .map_err(anyhow::Error::msg)?;
    assert_eq!(r["restore-status"], "restore started");
    restored(&d)?;
    eprintln!(
        "restored to {between} in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(tags(&d, unit)?, "a-backup,b-first");
    // The backup's and the restore's logs are beside the backups.
    let logs = objects_with(&moto, Some(&ca), &format!("one/{STANZA}/log/"))?;
    assert!(logs.contains("/log/backup-"), "{logs}");
    assert!(logs.contains("/log/restore-"), "{logs}");

    // To the backup itself: only what it held.
    let t1 = Instant::now();
    let r = act(&d, unit, "restore", json!({"backup-id": id})).map_err(anyhow::Error::msg)?;
    assert_eq!(r["restore-status"], "restore started");
    restored(&d)?;
    eprintln!(
        "restored backup {id} in {:.0} s",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(tags(&d, unit)?, "a-backup");

    // A time past the archived WAL: pgpilot gives the restore up, the unit
    // is blocked; another restore (a failed one does not stand in its way)
    // brings the cluster back.
    let never = "2099-01-01 00:00:00+00";
    let r = act(&d, unit, "restore", json!({ "restore-to-time": never }))
        .map_err(anyhow::Error::msg)?;
    assert_eq!(r["restore-status"], "restore started");
    let failed = format!(
        "Failed to restore backup {never}: pgpilot could not restore it (snap logs charmed-postgresql.pgpilot says why); run restore again with another backup-id or restore-to-time"
    );
    leader_blocked(&d, "the failed restore shown", &failed)?;
    fails(
        &d,
        unit,
        "create-backup",
        json!({}),
        &format!("Unit is in a blocking state: {failed}. Resolve it first (juju status)."),
    );
    let r = act(&d, unit, "restore", json!({ "backup-id": id })).map_err(anyhow::Error::msg)?;
    assert_eq!(r["restore-status"], "restore started");
    restored(&d)?;
    assert_eq!(tags(&d, unit)?, "a-backup");
    write(&d, unit, "d-after")?;
    s3_ready(&d, 1)?;

    // Another cluster's stanza in a path: refused, blocked; back: cleared.
    foreign_stanza(&tmp, &moto, &ca, "other")?;
    set_s3(&d, rid, &s3_data_v1(&moto, "other", &secret, &ca)?)?;
    let refused = "the S3 repository has backups from another cluster (bucket pg-backups path other): relate to another bucket or path";
    leader_blocked(&d, "another cluster's bucket refused", refused)?;
    fails(
        &d,
        unit,
        "create-backup",
        json!({}),
        &format!("Unit is in a blocking state: {refused}. Resolve it first (juju status)."),
    );
    fails(
        &d,
        unit,
        "restore",
        json!({"backup-id": id}),
        &format!(
            "Cluster or unit is in a blocking state: {refused}. Resolve it first (juju status)."
        ),
    );
    set_s3(&d, rid, &s3_data_v1(&moto, "one", &secret, &ca)?)?;
    s3_ready(&d, 1)?;

    // The relation goes: back to the snap's posix repository, no S3 key left.
    d.unrelate(rid)?;
    d.wait_for("the posix repository again", DEPLOY, |d| {
        let config = d.machine(unit).expect("machine").config();
        let backup = &config["pgpilot"]["backup"];
        anyhow::ensure!(backup["repository"] == json!("posix"), "{backup}");
        anyhow::ensure!(
            backup["s3"].as_object().is_none_or(|m| m.is_empty()),
            "{backup}"
        );
        anyhow::ensure!(config["s3-tls"]["ca"].is_null(), "s3-tls still set");
        active(d, 1)
    })?;
    fails(&d, unit, "create-backup", json!({}), NO_RELATION);
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A stanza `STANZA` under `path` that belongs to another cluster: a WAL
/// segment of another system identifier archived there by pgpilot itself.
fn foreign_stanza(
    tmp: &tempfile::TempDir,
    moto: &MotoServer,
    ca: &std::path::Path,
    path: &str,
) -> anyhow::Result<()> {
    use pgpilot_e2e::backup::{
        fake_data_dir, fake_segment, run_pgpilot, s3_section, write_member_config,
    };
    let dir = tmp.path().join("foreign");
    let data = dir.join("data");
    fake_data_dir(&data, 7_000_000_000_000_000_001)?;
    let segment = dir.join("000000010000000000000001");
    std::fs::write(
        &segment,
        fake_segment(
            7_000_000_000_000_000_001,
            "000000010000000000000001",
            8192,
            0,
        ),
    )?;
    let config = dir.join("member.toml");
    // [backup.s3] is the section's last table: the CA goes there.
    let section = format!(
        "{}ca_file = \"{}\"\n",
        s3_section(moto, BUCKET, path, &format!("stanza = \"{STANZA}\"")),
        ca.display()
    );
    write_member_config(&config, &data, &section)?;
    let out = run_pgpilot(&[
        "archive-push",
        "--config",
        config.to_str().unwrap(),
        segment.to_str().unwrap(),
    ])?;
    anyhow::ensure!(out.code == 0, "archive-push: {}", out.stderr);
    Ok(())
}
