//! The `certificates` relation (issue 12, item 3) on the model simulator
//! with the packed charm and snap: the test plays the certificates
//! provider (self-signed-certificates) with a real CA it makes with the
//! openssl CLI. It reads each unit's request from its unit bag, signs it,
//! and answers in the v4 library's format; then PostgreSQL and the REST
//! API serve TLS that verifies against that CA, a renewal is taken without
//! a restart, and removing the relation turns TLS off again. The units'
//! etcd follows: its peer and client traffic moves to https one member at
//! a time (pgpilot to https endpoints), a renewal is taken without an etcd
//! restart, and it goes back to http when the relation goes.
//! Net 127.0.13.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use pgpilot_e2e::juju::checks::{self, cluster_shape, operator_password, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
use pgpilot_e2e::openssl::{openssl, self_signed_ca};
use pgpilot_e2e::snapd::ChangeError;
use serde_json::{json, Value};

const PROVIDER: &str = "self-signed-certificates";
/// The snap's daemon user (the owner of the key file).
const DAEMON_UID: u32 = 584792;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CA of the test's provider, made with the openssl CLI.
struct Ca {
    dir: PathBuf,
    cert: PathBuf,
    serial: u32,
}

impl Ca {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        self_signed_ca(dir, "ca", "pgpilot-e2e provider CA")?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.pem"),
            serial: 100,
        })
    }

    fn pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.cert)?)
    }

    /// The extensions of the certificate for `csr` (written to
    /// `NAME.ext`): the SANs and key usages the unit asked for, plus
    /// `IP:127.0.0.1`. The one deviation from the real provider, for the
    /// simulated network: every unit here dials from 127.0.0.1 (one shared
    /// loopback), and etcd checks a connecting peer's certificate against
    /// the address it dials from — on LXD each unit dials from its own
    /// address, which it asks for.
    fn extensions(&self, name: &str) -> anyhow::Result<String> {
        let out = Command::new("openssl")
            .args(["req", "-noout", "-text", "-in"])
            .arg(self.dir.join(format!("{name}.csr")))
            .output()?;
        anyhow::ensure!(out.status.success(), "openssl req -text: {}", text(&out));
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        // The line after an extension's name holds its values.
        let ext = |which: &str| -> String {
            let mut lines = shown.lines();
            lines.find(|l| l.trim().starts_with(which));
            lines
                .next()
                .map(|l| l.trim().replace(", ", ","))
                .unwrap_or_default()
        };
        let sans = ext("X509v3 Subject Alternative Name").replace("IP Address:", "IP:");
        let usages = ext("X509v3 Extended Key Usage")
            .replace("TLS Web Server Authentication", "serverAuth")
            .replace("TLS Web Client Authentication", "clientAuth");
        let mut lines = format!("subjectAltName={sans},IP:127.0.0.1\n");
        if !usages.is_empty() {
            lines.push_str(&format!("extendedKeyUsage={usages}\n"));
        }
        let file = format!("{name}.ext");
        std::fs::write(self.dir.join(&file), lines)?;
        Ok(file)
    }

    /// Sign `csr` (the SANs and usages the unit asked for, see
    /// [`Ca::extensions`]) with a new serial: (certificate PEM, serial in
    /// hex as openssl prints it).
    fn sign(&mut self, csr: &str) -> anyhow::Result<(String, String)> {
        self.serial += 1;
        let name = format!("req{}", self.serial);
        std::fs::write(
            self.dir.join(format!("{name}.csr")),
            format!("{}\n", csr.trim()),
        )?;
        let ext = self.extensions(&name)?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &self.serial.to_string(),
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.pem"),
            ],
        )?;
        let cert = std::fs::read_to_string(self.dir.join(format!("{name}.pem")))?;
        Ok((cert.trim().to_string(), format!("{:02X}", self.serial)))
    }

    /// Sign `csr` with a certificate 30 days old that expires in an hour:
    /// past 90 % of its lifetime (`openssl ca`, which takes a start date).
    fn sign_expiring(&mut self, csr: &str) -> anyhow::Result<String> {
        self.serial += 1;
        let dir = self.dir.display().to_string();
        std::fs::create_dir_all(self.dir.join("issued"))?;
        std::fs::write(self.dir.join("index.txt"), "")?;
        std::fs::write(self.dir.join("serial"), format!("{:04X}\n", self.serial))?;
        std::fs::write(
            self.dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = this\n[this]\ndatabase = {dir}/index.txt\n\
                 new_certs_dir = {dir}/issued\nserial = {dir}/serial\ndefault_md = sha256\n\
                 policy = any\nunique_subject = no\n\
                 [any]\ncommonName = supplied\n"
            ),
        )?;
        let date = |shift: &str| -> anyhow::Result<String> {
            let out = Command::new("date")
                .args(["-u", "-d", shift, "+%Y%m%d%H%M%SZ"])
                .output()?;
            anyhow::ensure!(out.status.success(), "date -d {shift}: {}", text(&out));
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let (start, end) = (date("-30 days")?, date("+1 hour")?);
        std::fs::write(self.dir.join("expiring.csr"), format!("{}\n", csr.trim()))?;
        let ext = self.extensions("expiring")?;
        openssl(
            &self.dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                "expiring.csr",
                "-extfile",
                &ext,
                "-out",
                "expiring.pem",
                "-notext",
                "-startdate",
                start.trim(),
                "-enddate",
                end.trim(),
            ],
        )?;
        Ok(std::fs::read_to_string(self.dir.join("expiring.pem"))?
            .trim()
            .to_string())
    }
}

/// A unit's request in its unit bag (the v4 format).
fn request_of(d: &Deployment, rid: u32, unit: &str) -> anyhow::Result<String> {
    let bag = d.local_unit_data(rid, unit);
    let list: Value = serde_json::from_str(
        bag.get("certificate_signing_requests")
            .ok_or_else(|| anyhow::anyhow!("{unit}: no request yet"))?,
    )?;
    let csr = list[0]["certificate_signing_request"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{unit}: {list}"))?
        .to_string();
    anyhow::ensure!(list[0]["ca"] == json!(false), "{unit}: {list}");
    // Nothing else of ours in that bag (Juju's address keys aside).
    let ours: Vec<&String> = bag
        .keys()
        .filter(|k| !["private-address", "ingress-address", "egress-subnets"].contains(&k.as_str()))
        .collect();
    anyhow::ensure!(ours.len() == 1, "{unit}: other keys in its bag: {ours:?}");
    Ok(csr)
}

/// Each unit's request, once all have one.
fn requests(d: &Deployment, rid: u32) -> anyhow::Result<Vec<(String, String)>> {
    d.wait_for("every unit's certificate request", DEPLOY, |d| {
        d.units()
            .into_iter()
            .map(|unit| Ok((unit.clone(), request_of(d, rid, &unit)?)))
            .collect()
    })
}

/// The provider's application bag: a certificate for each (request,
/// certificate), in the v4 format.
fn publish(d: &Deployment, rid: u32, ca: &Ca, issued: &[(String, String)]) -> anyhow::Result<()> {
    let ca_pem = ca.pem()?;
    let certificates: Vec<Value> = issued
        .iter()
        .map(|(csr, cert)| {
            json!({
                "certificate": cert,
                "certificate_signing_request": csr,
                "ca": ca_pem.trim(),
                "chain": [cert, ca_pem.trim()],
            })
        })
        .collect();
    d.set_remote_app_data(
        rid,
        &[("certificates", &Value::from(certificates).to_string())],
    )
}

/// The provider answers every request: (unit, request, certificate, serial).
fn answer(
    d: &Deployment,
    rid: u32,
    ca: &mut Ca,
    requests: &[(String, String)],
) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let mut issued = Vec::new();
    for (unit, csr) in requests {
        let (cert, serial) = ca.sign(csr)?;
        issued.push((unit.clone(), csr.clone(), cert, serial));
    }
    let pairs: Vec<(String, String)> = issued
        .iter()
        .map(|(_, csr, cert, _)| (csr.clone(), cert.clone()))
        .collect();
    publish(d, rid, ca, &pairs)?;
    Ok(issued)
}

/// psql from the host to a unit's PostgreSQL; `sslmode` and the CA given.
fn psql(host: &str, password: &str, sslmode: &str, ca: &Path, sql: &str) -> anyhow::Result<String> {
    let conninfo = format!(
        "host={host} port=5432 user=operator dbname=postgres sslmode={sslmode} sslrootcert={} connect_timeout=5",
        ca.display()
    );
    let out = Command::new("psql")
        .args([&conninfo, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .env("PGPASSWORD", password)
        .output()?;
    anyhow::ensure!(out.status.success(), "psql {sslmode}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The serial of the certificate a TLS server shows (`starttls`:
/// `postgres` for PostgreSQL, `None` for the REST API).
fn served_serial(
    host: &str,
    port: u16,
    starttls: Option<&str>,
    ca: &Path,
) -> anyhow::Result<String> {
    let connect = format!("{host}:{port}");
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-verify_return_error",
        "-CAfile",
    ];
    let ca = ca.display().to_string();
    args.push(&ca);
    if let Some(proto) = starttls {
        args.extend(["-starttls", proto]);
    }
    let out = Command::new("openssl")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()?;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        shown.contains("Verify return code: 0 (ok)"),
        "{connect}: not verified: {}",
        text(&out)
    );
    let pem_start = shown
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| anyhow::anyhow!("{connect}: no certificate shown"))?;
    let pem_end = shown
        .find("-----END CERTIFICATE-----")
        .unwrap_or(shown.len())
        + 25;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&shown.as_bytes()[pem_start..pem_end.min(shown.len())])?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string())
}

fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .args(args)
        .output()?;
    anyhow::ensure!(out.status.success(), "curl {args:?}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The postmaster's pid from its pid file in the unit's data directory.
fn postmaster_pid(d: &Deployment, unit: &str) -> anyhow::Result<String> {
    let m = d.machine(unit).expect("machine");
    let file = m
        .common_dir()
        .join("var/lib/postgresql/data/postmaster.pid");
    let text = std::fs::read_to_string(&file)?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// One etcd member: (name, peer URLs, client URLs).
type EtcdMember = (String, Vec<String>, Vec<String>);

/// etcd's member list from the member at `endpoint` (etcdctl; over https
/// verified by the CA when `ca` is given).
fn etcd_members(endpoint: &str, ca: Option<&Path>) -> anyhow::Result<Vec<EtcdMember>> {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=5s");
    if let Some(ca) = ca {
        cmd.arg(format!("--cacert={}", ca.display()));
    }
    let out = cmd.args(["member", "list", "-w", "json"]).output()?;
    anyhow::ensure!(out.status.success(), "etcdctl member list: {}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout)?;
    let urls = |m: &Value, key: &str| -> Vec<String> {
        m[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(list["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let name = m["name"].as_str().unwrap_or_default().to_string();
                    (name, urls(m, "peerURLs"), urls(m, "clientURLs"))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `n` started members whose peer and client URLs all start with `scheme`.
fn all_on(members: &[EtcdMember], n: usize, scheme: &str) -> anyhow::Result<()> {
    anyhow::ensure!(members.len() == n, "{members:?}");
    for (name, peers, clients) in members {
        anyhow::ensure!(
            !name.is_empty()
                && !peers.is_empty()
                && !clients.is_empty()
                && peers.iter().chain(clients).all(|u| u.starts_with(scheme)),
            "{name:?}: {peers:?} {clients:?}"
        );
    }
    Ok(())
}

/// The etcd endpoints in a unit's member file (`[dcs] endpoints = [...]`).
fn pgpilot_dcs_endpoints(d: &Deployment, unit: &str) -> anyhow::Result<String> {
    let m = d.machine(unit).expect("machine");
    let file = std::fs::read_to_string(m.data_dir().join("etc/pgpilot/pgpilot.toml"))?;
    file.lines()
        .find(|l| l.trim_start().starts_with("endpoints"))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{unit}: no endpoints in the member file"))
}

/// Every unit's etcd on TLS: three members with https peer and client
/// URLs (clients on 2378), nothing served on plain http 2379 any more,
/// pgpilot's endpoints https; etcd's copy of the key 0600 and the daemon
/// user's.
fn etcd_on_tls(d: &Deployment, ca: &Path) -> anyhow::Result<()> {
    for unit in d.units() {
        let host = d.address(&unit);
        d.wait_for(&format!("etcd over TLS on {unit}"), DEPLOY, |d| {
            let members = etcd_members(&format!("https://{host}:2378"), Some(ca))?;
            all_on(&members, 3, "https://")?;
            anyhow::ensure!(
                curl(&[&format!("http://{host}:2379/health")]).is_err(),
                "plain http still served on {host}:2379"
            );
            let endpoints = pgpilot_dcs_endpoints(d, &unit)?;
            anyhow::ensure!(
                endpoints.contains("https://") && !endpoints.contains("http://"),
                "{endpoints}"
            );
            Ok(())
        })?;
        let m = d.machine(&unit).expect("machine");
        let key = std::fs::metadata(m.data_dir().join("etc/etcd/key.pem"))?;
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            (key.mode() & 0o777, key.uid()),
            (0o600, DAEMON_UID),
            "{unit}"
        );
    }
    Ok(())
}

/// Three active units, one Primary; pgpilot sees a leader and two
/// streaming replicas.
fn healthy(d: &Deployment) -> anyhow::Result<()> {
    d.wait_for("3 active units, one Primary, 2 streaming", DEPLOY, |d| {
        let statuses = d.statuses();
        let primaries = statuses
            .values()
            .filter(|s| s.0 == "active" && s.1 == "Primary")
            .count();
        let replicas = statuses
            .values()
            .filter(|s| s.0 == "active" && s.1.is_empty())
            .count();
        anyhow::ensure!(primaries == 1 && replicas == 2, "statuses {statuses:?}");
        let unit = d.units()[0].clone();
        let (leader, streaming) = cluster_shape(&d.machine(&unit).expect("machine"))?;
        anyhow::ensure!(
            leader.is_some() && streaming.len() == 2,
            "{leader:?} {streaming:?}"
        );
        Ok(())
    })
}

/// Relate a 3-unit deployment to a certificates provider played by the
/// test: TLS on everywhere (PostgreSQL refuses plain remote logins, the
/// REST API is https, both verify against the provider's CA), a renewal
/// served without a restart, and TLS off again once the relation goes.
#[test]
fn certificates_turn_tls_on_renew_without_restart_and_off() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // update-status every minute: the statuses settle sooner.
    let opts = DriverOptions {
        update_status_interval: Some(std::time::Duration::from_secs(60)),
        ..DriverOptions::default()
    };
    let d = checks::deployment(&tmp, "127.0.13", opts)?;
    let started = Instant::now();
    d.add_units(3)?;
    healthy(&d)?;
    eprintln!("deployed in {:?}", started.elapsed());
    let password = operator_password(&d)?;
    let mut ca = Ca::new(&tmp.path().join("ca"))?;

    // Requests, then certificates.
    let t = Instant::now();
    let rid = d.relate("certificates", PROVIDER, 1)?;
    let reqs = requests(&d, rid)?;
    eprintln!("3 requests in {:?}", t.elapsed());
    let serials = answer(&d, rid, &mut ca, &reqs)?;
    for (unit, _, _, serial) in &serials {
        let host = d.address(unit);
        d.wait_for(&format!("TLS on {unit}"), DEPLOY, |_| {
            let ssl = psql(
                &host,
                &password,
                "verify-full",
                &ca.cert,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )?;
            anyhow::ensure!(ssl == "t", "ssl {ssl:?}");
            anyhow::ensure!(served_serial(&host, 5432, Some("postgres"), &ca.cert)? == *serial);
            anyhow::ensure!(served_serial(&host, 8008, None, &ca.cert)? == *serial);
            Ok(())
        })?;
        // A plain remote login is refused by pg_hba (hostssl only).
        let e = psql(&host, &password, "disable", &ca.cert, "SELECT 1").unwrap_err();
        assert!(format!("{e:#}").contains("no encryption"), "{unit}: {e:#}");
        // The REST API answers over https, verified by the CA; not over http.
        let status: Value = serde_json::from_str(&curl(&[
            "--cacert",
            &ca.cert.display().to_string(),
            &format!("https://{host}:8008/patroni"),
        ])?)?;
        assert!(status["state"].is_string(), "{status}");
        assert!(curl(&[&format!("http://{host}:8008/patroni")]).is_err());
        // The key file: 0600, the daemon user's.
        let m = d.machine(unit).expect("machine");
        let key = std::fs::metadata(m.data_dir().join("etc/tls/key.pem"))?;
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            (key.mode() & 0o777, key.uid()),
            (0o600, DAEMON_UID),
            "{unit}"
        );
    }
    eprintln!("TLS on everywhere in {:?}", t.elapsed());
    healthy(&d)?;

    // The units' etcd follows, one member at a time: certificate loaded,
    // pgpilot to https endpoints, then https peers and https-only clients.
    let t = Instant::now();
    etcd_on_tls(&d, &ca.cert)?;
    for (unit, _, _, serial) in &serials {
        let host = d.address(unit);
        assert_eq!(
            &served_serial(&host, 2378, None, &ca.cert)?,
            serial,
            "{unit}"
        );
    }
    healthy(&d)?;
    eprintln!("etcd over TLS in {:?}", t.elapsed());

    // A unit added now joins etcd over https once it holds its certificate
    // (the leader admits units only at rest); removed, it leaves three
    // members, all https.
    let t = Instant::now();
    let added = d.add_units(1)?.remove(0);
    let csr = d.wait_for(&format!("{added}'s certificate request"), DEPLOY, |d| {
        request_of(d, rid, &added)
    })?;
    let mut issued: Vec<(String, String)> = serials
        .iter()
        .map(|(_, csr, cert, _)| (csr.clone(), cert.clone()))
        .collect();
    issued.push((csr.clone(), ca.sign(&csr)?.0));
    publish(&d, rid, &ca, &issued)?;
    let first = d.address(&serials[0].0);
    d.wait_for(&format!("{added} in etcd over https"), DEPLOY, |_| {
        let members = etcd_members(&format!("https://{first}:2378"), Some(&ca.cert))?;
        all_on(&members, 4, "https://")
    })?;
    eprintln!("a unit added joined etcd over https in {:?}", t.elapsed());
    d.remove_unit(&added)?;
    d.wait_gone(&added, DEPLOY)?;
    etcd_on_tls(&d, &ca.cert)?;
    healthy(&d)?;

    // Renewal: the same requests signed again (new serials), served after a
    // reload: the postmasters and pgpilots keep their pids.
    let t = Instant::now();
    let before: Vec<(String, String, Option<i32>, Option<i32>)> = d
        .units()
        .into_iter()
        .map(|u| {
            let pid = postmaster_pid(&d, &u).unwrap_or_default();
            let m = d.machine(&u).expect("machine");
            (u, pid, m.main_pid("pgpilot"), m.main_pid("etcd"))
        })
        .collect();
    let renewed = answer(&d, rid, &mut ca, &reqs)?;
    for (unit, _, _, serial) in &renewed {
        let host = d.address(unit);
        d.wait_for(
            &format!("the renewed certificate on {unit}"),
            DEPLOY,
            |_| {
                let pg = served_serial(&host, 5432, Some("postgres"), &ca.cert)?;
                let api = served_serial(&host, 8008, None, &ca.cert)?;
                let etcd = served_serial(&host, 2378, None, &ca.cert)?;
                anyhow::ensure!(
                    pg == *serial && api == *serial && etcd == *serial,
                    "served {pg}, {api} and {etcd}, want {serial}"
                );
                Ok(())
            },
        )?;
    }
    for (unit, pid, pgpilot, etcd) in &before {
        assert_eq!(
            &d.machine(unit).expect("machine").main_pid("etcd"),
            etcd,
            "{unit}: etcd restarted for a renewal"
        );
        assert_eq!(
            &postmaster_pid(&d, unit)?,
            pid,
            "{unit}: PostgreSQL restarted"
        );
        assert_eq!(
            &d.machine(unit).expect("machine").main_pid("pgpilot"),
            pgpilot,
            "{unit}: pgpilot restarted"
        );
    }
    eprintln!("renewal served in {:?} without a restart", t.elapsed());

    // Past 90 % of its lifetime: the unit asks again (a new request, the
    // same key); the certificate for it is served without a restart.
    let t = Instant::now();
    let (unit, old_csr, _, _) = renewed[1].clone();
    let mut issued: Vec<(String, String)> = renewed
        .iter()
        .map(|(_, csr, cert, _)| (csr.clone(), cert.clone()))
        .collect();
    issued[1].1 = ca.sign_expiring(&old_csr)?;
    publish(&d, rid, &ca, &issued)?;
    let new_csr = d.wait_for(&format!("a new request from {unit}"), DEPLOY, |d| {
        let csr = request_of(d, rid, &unit)?;
        anyhow::ensure!(csr != old_csr, "still the old request");
        Ok(csr)
    })?;
    let (cert, serial) = ca.sign(&new_csr)?;
    issued[1] = (new_csr, cert);
    publish(&d, rid, &ca, &issued)?;
    let host = d.address(&unit);
    d.wait_for(
        &format!("the certificate of {unit}'s new request"),
        DEPLOY,
        |_| {
            let pg = served_serial(&host, 5432, Some("postgres"), &ca.cert)?;
            anyhow::ensure!(pg == serial, "served {pg}, want {serial}");
            Ok(())
        },
    )?;
    let (_, pid, _, _) = &before[1];
    assert_eq!(
        &postmaster_pid(&d, &unit)?,
        pid,
        "{unit}: PostgreSQL restarted"
    );
    eprintln!("re-requested at 90% and served in {:?}", t.elapsed());

    // The configure hook refuses bad tls.* values, naming the key, and
    // writes nothing (snap set on one unit's machine, as an operator would).
    let unit = d.units()[0].clone();
    let m = d.machine(&unit).expect("machine");
    let tls_dir = m.data_dir().join("etc/tls");
    let files = |dir: &Path| -> Vec<Vec<u8>> {
        ["cert.pem", "key.pem", "ca.pem"]
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
            .collect()
    };
    let before_files = files(&tls_dir);
    for (what, result, key) in [
        (
            "a malformed key",
            m.set(&[(
                "tls.key",
                "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----",
            )]),
            "tls.key",
        ),
        (
            "a certificate unset alone",
            m.unset(&["tls.cert"]),
            "tls.cert",
        ),
        (
            "a CA that is not PEM",
            m.set(&[("tls.ca", "hello")]),
            "tls.ca",
        ),
    ] {
        let e = result.expect_err(what);
        let change = ChangeError::of(&e).unwrap_or_else(|| panic!("{what}: {e:#}"));
        assert!(
            change.reason.contains(&format!("invalid {key}:")),
            "{what}: {}",
            change.reason
        );
        assert!(
            !change.reason.contains("not base64!"),
            "{what}: the value shown"
        );
    }
    assert_eq!(
        files(&tls_dir),
        before_files,
        "a refused snap set wrote files"
    );

    // No private key in any log.
    let logs = [
        std::fs::read_to_string(d.dir().join("host.log")).unwrap_or_default(),
        d.log_tail(usize::MAX),
    ];
    for unit in d.units() {
        let m = d.machine(&unit).expect("machine");
        for log in logs
            .iter()
            .cloned()
            .chain([m.hooks_log(), m.journal("pgpilot")])
        {
            assert!(
                !log.contains("PRIVATE KEY"),
                "{unit}: a private key in a log"
            );
        }
    }

    // The relation goes: TLS off, plain logins work again, cluster healthy.
    let t = Instant::now();
    d.unrelate(rid)?;
    for unit in d.units() {
        let host = d.address(&unit);
        d.wait_for(&format!("TLS off on {unit}"), DEPLOY, |_| {
            let ssl = psql(
                &host,
                &password,
                "disable",
                &ca.cert,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )?;
            anyhow::ensure!(ssl == "f", "ssl {ssl:?}");
            curl(&[&format!("http://{host}:8008/patroni")])?;
            Ok(())
        })?;
        let m = d.machine(&unit).expect("machine");
        assert!(
            !m.data_dir().join("etc/tls/key.pem").exists(),
            "{unit}: key left"
        );
    }
    // etcd back on http, one member at a time, its copy of the key gone.
    for unit in d.units() {
        let host = d.address(&unit);
        d.wait_for(&format!("etcd plain on {unit}"), DEPLOY, |d| {
            let members = etcd_members(&format!("http://{host}:2379"), None)?;
            all_on(&members, 3, "http://")?;
            let endpoints = pgpilot_dcs_endpoints(d, &unit)?;
            anyhow::ensure!(!endpoints.contains("https://"), "{endpoints}");
            let m = d.machine(&unit).expect("machine");
            anyhow::ensure!(
                !m.data_dir().join("etc/etcd/key.pem").exists(),
                "etcd's copy of the key left"
            );
            Ok(())
        })?;
    }
    healthy(&d)?;
    eprintln!(
        "TLS off in {:?}; whole test {:?}",
        t.elapsed(),
        started.elapsed()
    );
    Ok(())
}
