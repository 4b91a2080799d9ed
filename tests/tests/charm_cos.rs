//! `cos-agent` on the model simulator (the packed charm and snap): a real
//! Prometheus configured only from what the units published scrapes every
//! unit, `pg_up` is 1 for all, the published alert rules load and pass
//! `promtool check rules`, the dashboard decodes (base64, xz by Python's
//! lzma) to valid JSON with the COS uid, and the log slot the units name is
//! the snap's, over directories that hold the logs. Units on 127.0.11.N,
//! Prometheus on 127.0.11.250.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Context as _;
use pgpilot_e2e::juju::checks::{self, DEPLOY};
use pgpilot_e2e::juju::driver::{Deployment, DriverOptions};
use pgpilot_e2e::monitoring::promtool;
use pgpilot_e2e::prometheus::Prometheus;
use serde_json::{json, Value};

const NET: &str = "127.0.11";
const UNITS: usize = 2;

/// Each unit's published `config` document, once every unit has one.
fn published(d: &Deployment, rid: u32) -> anyhow::Result<Vec<(String, Value)>> {
    d.wait_for("every unit's cos-agent config", DEPLOY, |d| {
        let units = d.units();
        anyhow::ensure!(units.len() == UNITS, "{} units", units.len());
        units
            .into_iter()
            .map(|u| {
                let bag = d.local_unit_data(rid, &u);
                let text = bag.get("config").context(format!("{u}: no config yet"))?;
                let doc: Value = serde_json::from_str(text)
                    .with_context(|| format!("{u}: config is not JSON: {text}"))?;
                Ok((u, doc))
            })
            .collect()
    })
}

/// The Prometheus configuration made of the units' documents alone: their
/// scrape jobs as `scrape_configs`, their alert rules as one rules file
/// (the same on every unit: one copy, as COS keeps one per group name).
fn prometheus_config(docs: &[(String, Value)], rules_path: &str) -> anyhow::Result<String> {
    let mut jobs = Vec::new();
    for (unit, doc) in docs {
        for job in doc["metrics_scrape_jobs"]
            .as_array()
            .context("scrape jobs")?
        {
            let name = job["job_name"].as_str().unwrap_or_default();
            anyhow::ensure!(!name.is_empty(), "{unit}: a job without a name: {job}");
            jobs.push(job.clone());
        }
    }
    let config = json!({
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "rule_files": [rules_path],
        "scrape_configs": jobs,
    });
    Ok(serde_json::to_string_pretty(&config)?)
}

/// The names of the rule groups in `{"groups": [...]}` (a rules file, or
/// Prometheus's `/api/v1/rules`).
fn group_names(rules: &Value) -> anyhow::Result<BTreeSet<String>> {
    Ok(rules["groups"]
        .as_array()
        .context("no groups")?
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_string))
        .collect())
}

/// base64 → xz → JSON, by Python's lzma (what grafana-agent's library runs).
fn decode_dashboard(encoded: &str) -> anyhow::Result<Value> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import base64, lzma, sys\n\
             sys.stdout.buffer.write(lzma.decompress(base64.b64decode(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(encoded.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "python3 lzma: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every unit's target is up and its `pg_up` is 1; the `job` label is
/// the one the rules select on.
async fn all_scraped(prom: &Prometheus, targets: &BTreeSet<String>) -> anyhow::Result<()> {
    let health = prom.targets().await?;
    for t in targets {
        let state = health.iter().find(|(i, _, _)| i == t);
        anyhow::ensure!(
            state.is_some_and(|(_, h, _)| h == "up"),
            "target {t}: {state:?}"
        );
    }
    let up: BTreeSet<String> = prom
        .query("pg_up{job=\"pgpilot\"} == 1")
        .await?
        .iter()
        .filter_map(|s| s.label("instance").map(str::to_string))
        .collect();
    anyhow::ensure!(&up == targets, "pg_up 1 on {up:?}, want {targets:?}");
    Ok(())
}

#[test]
fn prometheus_from_the_published_cos_agent_data() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = checks::deployment(&tmp, NET, DriverOptions::default())?;
    let started = Instant::now();
    d.add_units(UNITS)?;
    let rid = d.relate("cos-agent", "grafana-agent", 1)?;
    let docs = published(&d, rid)?;
    eprintln!(
        "every unit published its config after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What each unit says: one job for its own address, the log slot.
    let mut targets = BTreeSet::new();
    for (unit, doc) in &docs {
        let jobs = doc["metrics_scrape_jobs"].as_array().context("jobs")?;
        assert_eq!(jobs.len(), 1, "{unit}: {jobs:?}");
        let target = jobs[0]["static_configs"][0]["targets"][0]
            .as_str()
            .context("target")?;
        assert_eq!(target, format!("{}:8008", d.address(unit)), "{unit}");
        targets.insert(target.to_string());
        assert_eq!(doc["log_slots"], json!(["charmed-postgresql:logs"]));
        assert_eq!(doc["metrics_alert_rules"], docs[0].1["metrics_alert_rules"]);
    }

    // The rules, decoded into a file: promtool accepts them.
    let dir = tmp.path().join("cos");
    std::fs::create_dir_all(&dir)?;
    let rules_path = dir.join("rules.json");
    let rules = &docs[0].1["metrics_alert_rules"];
    std::fs::write(&rules_path, serde_json::to_string_pretty(rules)?)?;
    let said = promtool(&["check", "rules", &rules_path.display().to_string()], None)?;
    eprintln!("promtool check rules: {}", said.trim());
    let published_groups = group_names(rules)?;

    // Prometheus from that alone.
    let config = prometheus_config(&docs, &rules_path.display().to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let prom = rt.block_on(Prometheus::start_with_config(
        &dir,
        &format!("{NET}.250"),
        &config,
    ))?;
    let scraping = Instant::now();
    d.wait_for("every unit scraped, pg_up 1", DEPLOY, |_| {
        rt.block_on(all_scraped(&prom, &targets))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n--- prometheus ---\n{}", prom.log_tail(20)))?;
    eprintln!(
        "every target up with pg_up 1 after {:.1} s of scraping ({:.1} s since deploy)",
        scraping.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let loaded = group_names(&rt.block_on(prom.api("/api/v1/rules"))?)?;
    assert_eq!(
        loaded, published_groups,
        "Prometheus loaded the published groups"
    );

    // The dashboard: valid JSON with the COS uid and the charm tag.
    for (unit, doc) in &docs {
        let dashboards = doc["dashboards"].as_array().context("dashboards")?;
        assert_eq!(dashboards.len(), 1, "{unit}");
        let encoded = dashboards[0].as_str().context("a string")?;
        assert!(encoded.starts_with("/Td6WFoA"), "{unit}: not xz in base64");
        let dashboard = decode_dashboard(encoded)?;
        assert_eq!(
            dashboard["uid"],
            pgpilot_charm_uid(),
            "{unit}: uid = SHAKE-256 of postgresql-<path>"
        );
        assert_eq!(
            dashboard["title"],
            "pgpilot: PostgreSQL cluster, HA and backups"
        );
        assert!(
            dashboard["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("charm: postgresql"))),
            "{unit}: tags {}",
            dashboard["tags"]
        );
        assert!(dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty()));
    }

    // The log slot is the snap's, over directories that hold the logs.
    for unit in d.units() {
        let m = d.machine(&unit).context("machine")?;
        let meta: Value = serde_norway::from_str(&std::fs::read_to_string(
            m.snap_dir().join("meta/snap.yaml"),
        )?)?;
        let slot = &meta["slots"]["logs"];
        assert_eq!(slot["interface"], "content", "{unit}: {meta}");
        let read: Vec<&str> = slot["source"]["read"]
            .as_array()
            .context("source.read")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for service in ["postgresql", "pgpilot", "etcd"] {
            let path = format!("$SNAP_COMMON/var/log/{service}");
            assert!(read.contains(&path.as_str()), "{unit}: {read:?}");
            let dir = m.common_dir().join("var/log").join(service);
            let files = std::fs::read_dir(&dir)
                .with_context(|| format!("{}", dir.display()))?
                .count();
            if service != "etcd" {
                assert!(files > 0, "{unit}: no log file in {}", dir.display());
            }
        }
    }

    // Settled: another hook writes nothing. A roll that still waits for a
    // hook (etcd's endpoints after the second unit joined: nothing wakes
    // the leader when a restarted member is healthy again, docs/charm.md
    // "Not built yet") goes on with update-status until a round changes
    // nothing.
    d.wait_for(
        "a round of update-status that changes nothing",
        DEPLOY,
        |d| {
            d.settle(DEPLOY)?;
            let mut writes = 0;
            for unit in d.units() {
                writes += d.run_hook_now(&unit, "update-status", &[])?.writes;
            }
            anyhow::ensure!(writes == 0, "{writes} writes in the last round");
            Ok(())
        },
    )?;
    for unit in d.units() {
        let run = d.run_hook_now(&unit, "update-status", &[])?;
        assert_eq!(run.code, 0, "{unit}: {}", run.output);
        assert_eq!(run.writes, 0, "{unit} wrote again: {run:?}");
        let again = d.local_unit_data(rid, &unit);
        let doc: Value = serde_json::from_str(&again["config"])?;
        let before = &docs.iter().find(|(u, _)| *u == unit).context("doc")?.1;
        assert_eq!(&doc, before, "{unit}: the document changed");
    }
    eprintln!("test done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The uid the charm gives its dashboard (40 hex of SHAKE-256), computed
/// here with Python's hashlib, as the COS library does.
fn pgpilot_charm_uid() -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib; print(hashlib.shake_256(b'postgresql-exporters/monitoring/dashboard.json').hexdigest(20))",
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
