//! The `etcd` relation on the model simulator (the packed charm and snap):
//! a cluster created with an external etcd, a real etcd serving clients
//! over TLS with client-certificate authentication (a CA made by the test
//! with openssl), played as charmed-etcd plays it: it trusts the leaf the
//! charm publishes (`mtls-cert`), makes an etcd user of its CN with a role
//! on the cluster's prefix, and answers with `endpoints`, the `user` and
//! `tls` secrets. Three units run there (the units' own etcd never
//! starts), fail over when the primary's machine goes, and the relation
//! removed blocks with a status that says what to do. Units on 127.0.12.N,
//! the external etcd on 127.0.12.100.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pgpilot_e2e::etcd::{ClientTls, Etcd};
use pgpilot_e2e::juju::checks::{self, cluster_shape, operator_password, sql, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
use pgpilot_e2e::openssl::{issue, openssl, self_signed_ca};

const NET: &str = "127.0.12";
const ETCD_HOST: &str = "127.0.12.100";
const UNITS: usize = 3;

/// The test CA, etcd's server certificate for [`ETCD_HOST`], and an admin
/// client certificate (CN root).
fn pki(dir: &Path) -> anyhow::Result<()> {
    self_signed_ca(dir, "ca", "pgpilot e2e etcd CA")?;
    issue(
        dir,
        "server",
        "/CN=external-etcd",
        // etcd's gRPC gateway presents it as a client to etcd itself.
        &format!("subjectAltName=IP:{ETCD_HOST}\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )?;
    issue(dir, "root", "/CN=root", "extendedKeyUsage=clientAuth\n")
}

/// `etcdctl ARGS` as root; its stdout.
fn ctl(etcd: &Etcd, args: &[&str]) -> anyhow::Result<String> {
    let out = etcd.ctl(args)?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What charmed-etcd does for a client: a role with read-write on the
/// prefix, a user named after the certificate's CN with that role; auth on.
fn grant(etcd: &Etcd, cn: &str, prefix: &str) -> anyhow::Result<()> {
    for args in [
        vec!["user", "add", "root:e2e-root-pw", "--interactive=false"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "pgpilot-client"],
        vec![
            "role",
            "grant-permission",
            "pgpilot-client",
            "--prefix=true",
            "readwrite",
            prefix,
        ],
        vec![
            "user",
            "add",
            &format!("{cn}:unused-e2e-pw"),
            "--interactive=false",
        ],
        vec!["user", "grant-role", cn, "pgpilot-client"],
        vec!["auth", "enable"],
    ] {
        ctl(etcd, &args)?;
    }
    Ok(())
}

/// Every unit active and one of them `Primary...`: that unit.
fn primary(d: &Deployment) -> anyhow::Result<String> {
    let statuses = d.statuses();
    anyhow::ensure!(statuses.len() == UNITS, "{statuses:?}");
    anyhow::ensure!(
        statuses.values().all(|s| s.0 == "active"),
        "statuses {statuses:?}"
    );
    let primaries: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| s.1.starts_with("Primary"))
        .map(|(u, _)| u)
        .collect();
    anyhow::ensure!(primaries.len() == 1, "statuses {statuses:?}");
    Ok(primaries[0].clone())
}

fn write_on(d: &Deployment, unit: &str, tag: &str) -> anyhow::Result<()> {
    let m = d.machine(unit).context("machine")?;
    let pw = operator_password(d)?;
    let host = d.address(unit);
    sql(
        &m,
        &host,
        &pw,
        "CREATE TABLE IF NOT EXISTS e2e_etcd (tag text)",
    )?;
    sql(
        &m,
        &host,
        &pw,
        &format!("INSERT INTO e2e_etcd VALUES ('{tag}')"),
    )?;
    Ok(())
}

#[test]
fn a_cluster_on_an_external_etcd_runs_and_fails_over() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki_dir: PathBuf = tmp.path().join("pki");
    pki(&pki_dir)?;
    let opts = DriverOptions {
        update_status_interval: Some(Duration::from_secs(60)),
        ..DriverOptions::default()
    };
    let d = checks::deployment(&tmp, NET, opts)?;
    let started = Instant::now();

    // The relation exists when the cluster is created (a bundle).
    let rid = d.relate("etcd", "charmed-etcd", 1)?;
    d.add_units(UNITS)?;
    let (uri, prefix) = d.wait_for("the leader's etcd client fields", DEPLOY, |d| {
        let bag = d.local_app_data(rid);
        let uri = bag.get("secret-mtls").context("no secret-mtls yet")?;
        let prefix = bag.get("prefix").context("no prefix")?;
        Ok((uri.clone(), prefix.clone()))
    })?;
    assert_eq!(prefix, "/pgpilot/postgresql/");
    let leaf = d.secret_content(&uri)?["mtls-cert"].clone();
    let leaf_path = pki_dir.join("client-leaf.pem");
    std::fs::write(&leaf_path, &leaf)?;
    let subject = openssl(
        &pki_dir,
        &[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            "client-leaf.pem",
        ],
    )?;
    let cn = subject
        .trim()
        .strip_prefix("subject=CN=")
        .context(format!("subject {subject:?}"))?
        .to_string();
    eprintln!(
        "the leader published its client certificate (CN {cn}) after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The provider: etcd trusts its own CA (the admin) and the leaf.
    let trusted = pki_dir.join("trusted.pem");
    std::fs::write(
        &trusted,
        format!(
            "{}{}",
            std::fs::read_to_string(pki_dir.join("ca.pem"))?,
            leaf
        ),
    )?;
    let tls = ClientTls {
        cert: pki_dir.join("server.pem"),
        key: pki_dir.join("server.key"),
        trusted,
        ca: pki_dir.join("ca.pem"),
        admin_cert: pki_dir.join("root.pem"),
        admin_key: pki_dir.join("root.key"),
    };
    let etcd_dir = tmp.path().join("external-etcd");
    std::fs::create_dir_all(&etcd_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let etcd = rt.block_on(Etcd::start_tls(&etcd_dir, ETCD_HOST, tls))?;
    grant(&etcd, &cn, &prefix)?;
    let user = d.add_remote_secret(
        rid,
        &[
            ("username", cn.as_str()),
            ("uris", etcd.endpoint().as_str()),
        ],
    )?;
    let ca = std::fs::read_to_string(pki_dir.join("ca.pem"))?;
    let tls_secret = d.add_remote_secret(rid, &[("tls", "True"), ("tls-ca", ca.as_str())])?;
    let endpoints = format!("{ETCD_HOST}:{}", etcd.client_port);
    d.set_remote_app_data(
        rid,
        &[
            ("endpoints", endpoints.as_str()),
            ("secret-user", user.as_str()),
            ("secret-tls", tls_secret.as_str()),
            ("version", "3.4.23"),
        ],
    )?;

    let first = d
        .wait_for("every unit active, one Primary", DEPLOY, primary)
        .inspect_err(|_| eprintln!("{}\n--- etcd ---\n{}", d.log_tail(60), etcd.log_tail(30)))?;
    eprintln!(
        "{UNITS} units active on the external etcd after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let m = d.machine(&first).context("machine")?;
    d.wait_for("pgpilot: a leader and a streaming replica", DEPLOY, |_| {
        let (leader, streaming) = cluster_shape(&m)?;
        anyhow::ensure!(
            leader.as_deref() == Some(first.replace('/', "-").as_str()),
            "leader {leader:?}"
        );
        anyhow::ensure!(streaming.len() == UNITS - 1, "streaming {streaming:?}");
        Ok(())
    })?;
    // The state is in the external etcd; the units' own never ran.
    let keys = ctl(&etcd, &["get", "--prefix", "--keys-only", &prefix])?;
    assert!(keys.contains(&format!("{prefix}leader")), "keys: {keys}");
    for unit in d.units() {
        let m = d.machine(&unit).context("machine")?;
        let services = m.services();
        let own = services.iter().find(|(app, _, _)| app == "etcd");
        assert!(
            own.is_some_and(|(_, enabled, active)| !enabled && !active),
            "{unit}: {services:?}"
        );
    }
    write_on(&d, &first, "before")?;

    // The primary's machine goes: a survivor takes over.
    d.settle(DEPLOY)?;
    let lost = Instant::now();
    d.power_off(&first)?;
    let other = checks::survivor_primary(&d, &first, Duration::from_secs(180))?;
    eprintln!(
        "failover: {other} shows Primary {:.1} s after the primary's machine went",
        lost.elapsed().as_secs_f64()
    );
    write_on(&d, &other, "after-failover")?;
    let m = d.machine(&other).context("machine")?;
    let rows = sql(
        &m,
        &d.address(&other),
        &operator_password(&d)?,
        "SELECT string_agg(tag, ',' ORDER BY tag) FROM e2e_etcd",
    )?;
    assert_eq!(rows, "after-failover,before");

    // The relation removed: blocked, saying how to get it back; nothing
    // else changes (pgpilot keeps running on the external etcd).
    let pid = m.main_pid("pgpilot");
    d.unrelate(rid)?;
    d.wait_for("blocked: relate it again", DEPLOY, |d| {
        let s = &d.statuses()[&other];
        anyhow::ensure!(s.0 == "blocked" && s.1.contains("relate it again"), "{s:?}");
        Ok(())
    })?;
    assert_eq!(m.main_pid("pgpilot"), pid, "pgpilot was restarted");
    eprintln!("test done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
