//! The `database` endpoint of the packed charm (`$PGPILOT_CHARM`, with
//! `$PGPILOT_SNAP`) on the model simulator: a client application (played by
//! the test, as data_interfaces v0 does it) asks for a database, reads its
//! secret, connects with the credentials, writes on `endpoints` and reads
//! on `read-only-endpoints`; after a switchover the endpoints name the new
//! primary; bad requests are refused with a status that says why; once the
//! relation is removed the user cannot log in and the database stays.
//! Nets 127.0.6 and 127.0.7.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_e2e::juju::checks::{self, operator_password, sql, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
use pgpilot_e2e::snapd::checks::text;
use pgpilot_e2e::snapd::Machine;
use serde_json::json;

/// What data_interfaces v0 requirers ask for by default.
const REQUESTED_SECRETS: &str = r#"["username","password","tls","tls-ca","uris","read-only-uris","entity-name","entity-password"]"#;

/// `psql URI -Atc QUERY` on a unit's machine: the client's connection,
/// with the credentials of the published URI.
fn client_sql(m: &Machine, uri: &str, query: &str) -> anyhow::Result<String> {
    let out = m.run_app(
        "psql",
        &[uri, "-X", "-v", "ON_ERROR_STOP=1", "-Atc", query],
        &[("PGCONNECT_TIMEOUT", "5")],
    )?;
    anyhow::ensure!(out.status.success(), "psql {query:?}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `postgresql://user:pw@HOST:5432/db` for one `host:port`.
fn uri_for(user: &str, password: &str, endpoint: &str, database: &str) -> String {
    format!("postgresql://{user}:{password}@{endpoint}/{database}")
}

/// Wait for the answer to relation `rid`: our bag with `secret-user`, and
/// that secret's content as the client reads it.
fn answer(
    d: &Deployment,
    rid: u32,
) -> anyhow::Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    d.wait_for("the client's secret-user", DEPLOY, |d| {
        let bag = d.local_app_data(rid);
        let uri = bag
            .get("secret-user")
            .ok_or_else(|| anyhow::anyhow!("bag {bag:?}"))?;
        let secret = d.secret_content(uri)?;
        Ok((bag, secret))
    })
}

fn any_machine(d: &Deployment) -> Arc<Machine> {
    let unit = d.units().into_iter().next().expect("a unit");
    d.machine(&unit).expect("machine")
}

/// The unit whose address is `endpoint`'s host.
fn unit_at(d: &Deployment, endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    d.units()
        .into_iter()
        .find(|u| d.address(u) == host)
        .unwrap_or_else(|| panic!("no unit at {endpoint}"))
}

/// update-status every minute: a rolling restart, or a replica healthy
/// again, that nothing wakes goes on within a minute (docs/charm.md "Not
/// built yet"); the endpoints' moves are checked to come from other hooks.
fn every_minute() -> DriverOptions {
    DriverOptions {
        update_status_interval: Some(Duration::from_secs(60)),
        ..DriverOptions::default()
    }
}

/// Wait until pgpilot (asked on `m`) has a streaming synchronous standby:
/// with `synchronous_mode_strict` only it may take over.
fn sync_standby(d: &Deployment, m: &Machine) -> anyhow::Result<()> {
    d.wait_for("a synchronous standby streams", DEPLOY, |_| {
        let list = checks::members(m)?;
        anyhow::ensure!(
            list.iter()
                .any(|v| v["Role"] == "Sync Standby" && v["State"] == "streaming"),
            "members {list:?}"
        );
        Ok(())
    })
}

/// `endpoints` names `endpoint` within `limit` of `since`, written by a
/// hook that a member's callback caused, not by update-status.
fn follow(
    d: &Deployment,
    rid: u32,
    endpoint: &str,
    (what, since, limit): (&str, Instant, Duration),
) -> anyhow::Result<()> {
    d.wait_for(
        &format!("{what}: endpoints name {endpoint}"),
        Duration::from_secs(120),
        |d| {
            let bag = d.local_app_data(rid);
            anyhow::ensure!(bag["endpoints"] == endpoint, "{bag:?}");
            Ok(())
        },
    )?;
    let moved = since.elapsed();
    eprintln!(
        "{what}: endpoints name {endpoint} {:.1} s after it began",
        moved.as_secs_f64()
    );
    not_by_update_status(d, rid, &format!("endpoints=\"{endpoint}\""), what)?;
    assert!(moved < limit, "{what}: the endpoints took {moved:?}");
    Ok(())
}

/// The last hook that wrote `key=value` to our bag of relation `rid` was
/// not update-status (from the debug log, where the charm logs each step).
fn not_by_update_status(d: &Deployment, rid: u32, wrote: &str, what: &str) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(d.model().debug_log_path())?;
    let step = format!("relation-set database:{rid} (app) ");
    let line = log
        .lines()
        .rfind(|l| l.contains(&step) && l.contains(wrote))
        .ok_or_else(|| anyhow::anyhow!("no hook wrote {wrote}"))?;
    eprintln!("{what}: {}", line.split(" DEBUG ").next().unwrap_or(line));
    anyhow::ensure!(!line.contains("update-status"), "{what}: written by {line}");
    Ok(())
}

/// The client reads its secret again (the URIs name `endpoint`), connects
/// and writes row `n`; the secret's content.
fn reconnect_and_write(
    d: &Deployment,
    m: &Machine,
    rid: u32,
    endpoint: &str,
    n: u32,
) -> anyhow::Result<BTreeMap<String, String>> {
    let secret = d.wait_for(
        "the URIs name the new primary",
        Duration::from_secs(60),
        |d| {
            let (_, secret) = answer(d, rid)?;
            let want = uri_for(&secret["username"], &secret["password"], endpoint, "mydb");
            anyhow::ensure!(secret["uris"] == want, "{secret:?}");
            Ok(secret)
        },
    )?;
    d.wait_for("a write on the new primary", Duration::from_secs(60), |_| {
        client_sql(m, &secret["uris"], &format!("INSERT INTO items SELECT {n} WHERE NOT EXISTS (SELECT FROM items WHERE n = {n})"))?;
        Ok(())
    })?;
    assert_eq!(
        client_sql(m, &secret["uris"], "SELECT count(*) FROM items")?,
        n.to_string()
    );
    Ok(secret)
}

/// No log of the deployment holds `secret`: PostgreSQL's and pgpilot's
/// logs, the services' journals, the hooks' output, the debug log.
fn assert_not_logged(d: &Deployment, secret: &str) -> anyhow::Result<()> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(d.dir(), &mut files);
    let logs: Vec<_> = files
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("/log/")
                || s.contains("/journal/")
                || s.ends_with(".log")
                || s.ends_with("debug-log.txt")
        })
        .collect();
    anyhow::ensure!(
        logs.iter()
            .any(|p| p.to_string_lossy().contains("/log/postgresql/")),
        "no PostgreSQL log found among {logs:?}"
    );
    for path in &logs {
        let bytes = std::fs::read(path).unwrap_or_default();
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        anyhow::ensure!(!found, "the password is in {}", path.display());
    }
    Ok(())
}

/// Three units, one client: credentials in a secret, write on the primary,
/// read on a replica; a switchover, then the loss of the new primary's
/// machine, move `endpoints` (through pgpilot's callbacks, not
/// update-status) and the client writes again each time; the relation
/// removed: the user cannot log in, its database stays.
#[test]
fn a_client_gets_a_database_and_follows_failovers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, "127.0.6", every_minute())?;
    let started = Instant::now();
    d.add_units(3)?;
    let rid = d.relate("database", "myapp", 1)?;
    d.set_remote_app_data(
        rid,
        &[
            ("database", "mydb"),
            ("requested-secrets", REQUESTED_SECRETS),
        ],
    )?;
    let (bag, secret) = answer(&d, rid)?;
    eprintln!(
        "secret-user after {:.1} s (3-unit deploy included)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(bag["database"], "mydb", "{bag:?}");
    assert!(
        bag["version"].split('.').all(|p| p.parse::<u32>().is_ok()),
        "{bag:?}"
    );
    assert!(bag.contains_key("secret-tls"), "{bag:?}");
    for plain in ["username", "password", "uris"] {
        assert!(!bag.contains_key(plain), "{plain} in plain text: {bag:?}");
    }
    let user = secret["username"].clone();
    let password = secret["password"].clone();
    assert_eq!(user, format!("relation-{rid}"));
    assert!(
        password.len() == 16 && password.bytes().all(|b| b.is_ascii_alphanumeric()),
        "password {password:?}"
    );
    let tls = d.secret_content(&bag["secret-tls"])?;
    assert_eq!(tls.get("tls").map(String::as_str), Some("False"), "{tls:?}");

    // The primary serves the writes; every unit is up for reads once the
    // cluster is settled.
    d.wait_for("two read-only endpoints", DEPLOY, |d| {
        let bag = d.local_app_data(rid);
        let ro: Vec<&str> = bag["read-only-endpoints"].split(',').collect();
        anyhow::ensure!(ro.len() == 2, "{bag:?}");
        Ok(())
    })?;
    // No rolling restart in flight (a primary's restart hands over too).
    d.wait_for("every unit active, none waiting to restart", DEPLOY, |d| {
        let statuses = d.statuses();
        anyhow::ensure!(
            statuses
                .values()
                .all(|(s, m)| s == "active" && (m.is_empty() || m == "Primary")),
            "{statuses:?}"
        );
        Ok(())
    })?;
    d.settle(DEPLOY)?;
    let (bag, secret) = answer(&d, rid)?;
    let primary = bag["endpoints"].clone();
    assert_eq!(
        secret["uris"],
        uri_for(&user, &password, &primary, "mydb"),
        "{secret:?}"
    );
    let m = any_machine(&d);
    client_sql(
        &m,
        &secret["uris"],
        "CREATE TABLE items (n int); INSERT INTO items VALUES (1)",
    )?;
    assert_eq!(
        client_sql(&m, &secret["uris"], "SELECT pg_is_in_recovery()")?,
        "f"
    );
    let ro: Vec<String> = bag["read-only-endpoints"]
        .split(',')
        .map(str::to_string)
        .collect();
    assert!(!ro.contains(&primary), "{ro:?}");
    for endpoint in &ro {
        let uri = uri_for(&user, &password, endpoint, "mydb");
        d.wait_for(
            &format!("the row on {endpoint}"),
            Duration::from_secs(60),
            |_| {
                anyhow::ensure!(client_sql(&m, &uri, "SELECT pg_is_in_recovery()")? == "t");
                anyhow::ensure!(client_sql(&m, &uri, "SELECT count(*) FROM items")? == "1");
                Ok(())
            },
        )?;
    }
    // The read-only URI names both replicas.
    assert_eq!(
        client_sql(&m, &secret["read-only-uris"], "SELECT pg_is_in_recovery()")?,
        "t"
    );

    // A switchover to a replica that is not the Juju leader (its machine
    // is lost next, and the leader must be up to rewrite the endpoints).
    let leader = d.leader().expect("a leader");
    let old_primary = unit_at(&d, &primary);
    let target = ro
        .iter()
        .find(|e| unit_at(&d, e) != leader)
        .expect("a replica that is not the leader")
        .clone();
    let candidate = unit_at(&d, &target);
    let asked = Instant::now();
    let run = d.run_action(&candidate, "promote-to-primary", json!({"scope": "unit"}))?;
    assert_eq!(run.status, "completed", "{}: {:?}", run.message, run.logs);
    assert_eq!(
        run.results["result"],
        format!("{candidate} is the primary"),
        "{:?}",
        run.results
    );
    let action_took = asked.elapsed();
    let limit = Duration::from_secs(30);
    follow(&d, rid, &target, ("switchover", asked, limit))?;
    eprintln!(
        "switchover {old_primary} -> {candidate}: the action took {:.1} s",
        action_took.as_secs_f64()
    );
    let secret = reconnect_and_write(&d, &m, rid, &target, 2)?;
    assert_eq!(secret["password"], password, "the password stays");
    let old = uri_for(&user, &password, &primary, "mydb");
    d.wait_for("the old primary serves reads", DEPLOY, |d| {
        let bag = d.local_app_data(rid);
        anyhow::ensure!(bag["read-only-endpoints"].contains(&primary), "{bag:?}");
        anyhow::ensure!(client_sql(&m, &old, "SELECT count(*) FROM items")? == "2");
        Ok(())
    })?;

    // A failover: the new primary's machine is lost. Only a synchronous
    // standby may take over (synchronous_mode_strict): wait for one.
    let lm = d.machine(&leader).expect("the leader's machine");
    sync_standby(&d, &lm)?;
    d.settle(DEPLOY)?;
    let lost = Instant::now();
    d.power_off(&candidate)?;
    let new_endpoint = d.wait_for(
        "endpoints name a surviving primary",
        Duration::from_secs(180),
        |d| {
            let bag = d.local_app_data(rid);
            anyhow::ensure!(bag["endpoints"] != target, "{bag:?}");
            Ok(bag["endpoints"].clone())
        },
    )?;
    // pgpilot's leader key has to expire first.
    let limit = Duration::from_secs(90);
    follow(&d, rid, &new_endpoint, ("machine loss", lost, limit))?;
    let m = lm;
    reconnect_and_write(&d, &m, rid, &new_endpoint, 3)?;

    // The relation removed: the user goes, its database stays.
    let secret_uri = d.local_app_data(rid)["secret-user"].clone();
    d.unrelate(rid)?;
    let uri = uri_for(&user, &password, &new_endpoint, "mydb");
    d.wait_for(
        "the user can no longer log in",
        Duration::from_secs(120),
        |_| {
            let e = client_sql(&m, &uri, "SELECT 1")
                .err()
                .ok_or_else(|| anyhow::anyhow!("still logs in"))?;
            let e = format!("{e:#}");
            anyhow::ensure!(e.contains("password authentication failed"), "{e}");
            Ok(())
        },
    )?;
    let pw = operator_password(&d)?;
    let host = new_endpoint.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    assert_eq!(
        sql(
            &m,
            host,
            &pw,
            "SELECT count(*) FROM pg_database WHERE datname = 'mydb'"
        )?,
        "1"
    );
    assert_eq!(
        sql(
            &m,
            host,
            &pw,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        )?,
        "0"
    );
    // The password was never logged.
    assert_not_logged(&d, &password)?;
    d.wait_for(
        "the relation's secret is gone",
        Duration::from_secs(60),
        |d| {
            anyhow::ensure!(d.secret_content(&secret_uri).is_err(), "still there");
            Ok(())
        },
    )?;
    Ok(())
}

/// One unit: an unknown extra-user-role and a v1 request are refused with
/// statuses that say so; fixed, the user is made; requested without
/// secrets, the answer is plain text; settled, hooks write nothing; a unit
/// added and removed moves `read-only-endpoints` (not by update-status).
#[test]
fn bad_client_requests_are_refused_until_fixed() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, "127.0.7", every_minute())?;
    d.add_units(1)?;
    let unit = "postgresql/0";
    let blocked_with = |what: &str, needle: &str| {
        d.wait_for(what, DEPLOY, |d| {
            let s = &d.statuses()[unit];
            anyhow::ensure!(s.0 == "blocked" && s.1.contains(needle), "{s:?}");
            Ok(s.1.clone())
        })
    };

    let rid = d.relate("database", "badapp", 1)?;
    d.set_remote_app_data(
        rid,
        &[
            ("database", "baddb"),
            ("requested-secrets", REQUESTED_SECRETS),
            ("extra-user-roles", "createdb,wizard"),
        ],
    )?;
    let message = blocked_with("the unknown role refused", "\"wizard\"")?;
    eprintln!("status: {message}");
    assert!(
        message.starts_with(&format!(
            "relation database:{rid} (badapp): extra-user-roles"
        )),
        "{message}"
    );
    // status-set is immediate, one call per status: the application's
    // status follows the unit's within the same hook.
    d.wait_for("the application's status says so too", DEPLOY, |d| {
        let app = d.model().state().app_status.message;
        anyhow::ensure!(app == message, "{app:?}");
        Ok(())
    })?;
    assert!(!d.local_app_data(rid).contains_key("secret-user"));

    // Fixed: the user is made, with the group asked for.
    d.set_remote_app_data(rid, &[("extra-user-roles", "createdb,pg_read_all_data")])?;
    let (_, secret) = answer(&d, rid)?;
    d.wait_for("active again", DEPLOY, |d| {
        let s = &d.statuses()[unit];
        anyhow::ensure!(s.0 == "active", "{s:?}");
        Ok(())
    })?;
    let m = d.machine(unit).expect("machine");
    assert_eq!(
        client_sql(
            &m,
            &secret["uris"],
            "SELECT pg_has_role('pg_read_all_data', 'MEMBER')"
        )?,
        "t"
    );
    client_sql(&m, &secret["uris"], "CREATE DATABASE scratch")?;

    // A v1 requirer on a second relation.
    let v1 = d.relate("database", "newapp", 1)?;
    d.set_remote_app_data(v1, &[("version", "v1"), ("requests", "[]")])?;
    blocked_with("the v1 request refused", "v1 format")?;
    d.unrelate(v1)?;

    // Without requested-secrets: plain text, no read-only-uris.
    let plain = d.relate("database", "oldapp", 1)?;
    d.set_remote_app_data(plain, &[("database", "olddb")])?;
    let bag = d.wait_for("a plain answer", DEPLOY, |d| {
        let bag = d.local_app_data(plain);
        anyhow::ensure!(bag.contains_key("password"), "{bag:?}");
        Ok(bag)
    })?;
    assert!(!bag.contains_key("secret-user") && !bag.contains_key("read-only-uris"));
    assert_eq!(bag["tls"], "False");
    assert_eq!(
        client_sql(&m, &bag["uris"], "SELECT current_database()")?,
        "olddb"
    );
    // Another relation's database is closed to it.
    let endpoint = &bag["endpoints"];
    let other = uri_for(&bag["username"], &bag["password"], endpoint, "baddb");
    let refused = format!("{:#}", client_sql(&m, &other, "SELECT 1").unwrap_err());
    assert!(refused.contains("permission denied"), "{refused}");
    d.wait_for("active after the v1 relation went", DEPLOY, |d| {
        let s = &d.statuses()[unit];
        anyhow::ensure!(s.0 == "active", "{s:?}");
        Ok(())
    })?;

    // Settled: a hook writes nothing, no new secret revision.
    d.settle(DEPLOY)?;
    let revisions = |d: &Deployment| {
        let state = d.model().state();
        let mut r: Vec<(String, u32)> = state
            .secrets
            .values()
            .filter(|s| {
                s.label
                    .as_deref()
                    .is_some_and(|l| l.starts_with("database."))
            })
            .map(|s| (s.id.clone(), s.latest()))
            .collect();
        r.sort();
        r
    };
    let before = revisions(&d);
    for _ in 0..2 {
        let run = d.run_hook_now(unit, "update-status", &[])?;
        assert_eq!(run.code, 0, "{}", run.output);
        assert_eq!(run.writes, 0, "a settled update-status wrote: {run:?}");
    }
    assert_eq!(revisions(&d), before, "new secret revisions");

    // A scale change: a new unit's replica becomes a read-only endpoint;
    // its unit removed, it is one no more.
    let primary = d.local_app_data(plain)["endpoints"].clone();
    let added = d.add_units(1)?;
    let replica = format!("{}:5432", d.address(&added[0]));
    let grown = Instant::now();
    d.wait_for("the new replica is a read-only endpoint", DEPLOY, |d| {
        let bag = d.local_app_data(plain);
        anyhow::ensure!(bag["read-only-endpoints"] == replica, "{bag:?}");
        Ok(())
    })?;
    eprintln!(
        "scale up: {replica} is a read-only endpoint {:.1} s after add-unit",
        grown.elapsed().as_secs_f64()
    );
    let wrote = format!("read-only-endpoints=\"{replica}\"");
    not_by_update_status(&d, plain, &wrote, "scale up")?;
    // The roll that a new etcd member starts may hand the primary over to
    // the new unit: once it is over, the primary goes back to the first
    // unit, so that the new one is the replica to remove.
    d.wait_for("both units settled", DEPLOY, |d| {
        let statuses = d.statuses();
        anyhow::ensure!(
            statuses
                .values()
                .all(|(s, m)| s == "active" && !m.contains("restart")),
            "{statuses:?}"
        );
        Ok(())
    })?;
    sync_standby(&d, &m)?;
    d.settle(DEPLOY)?;
    if d.local_app_data(plain)["endpoints"] != primary {
        let run = d.run_action(unit, "promote-to-primary", json!({"scope": "unit"}))?;
        assert_eq!(run.status, "completed", "{}: {:?}", run.message, run.logs);
    }
    d.wait_for("the new unit is the replica", DEPLOY, |d| {
        let bag = d.local_app_data(plain);
        anyhow::ensure!(
            bag["endpoints"] == primary && bag["read-only-endpoints"] == replica,
            "{bag:?}"
        );
        Ok(())
    })?;
    d.settle(DEPLOY)?;
    let shrunk = Instant::now();
    d.remove_unit(&added[0])?;
    d.wait_for(
        "the removed replica is no read-only endpoint",
        DEPLOY,
        |d| {
            let bag = d.local_app_data(plain);
            anyhow::ensure!(bag["read-only-endpoints"] == primary, "{bag:?}");
            Ok(())
        },
    )?;
    eprintln!(
        "scale down: read-only endpoints back to the primary {:.1} s after remove-unit",
        shrunk.elapsed().as_secs_f64()
    );
    let wrote = format!("read-only-endpoints=\"{primary}\"");
    not_by_update_status(&d, plain, &wrote, "scale down")?;
    Ok(())
}
