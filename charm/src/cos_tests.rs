use std::io::Read as _;
use std::process::{Command, Stdio};

use super::*;

fn topology() -> Topology {
    Topology {
        model: "prod-db".into(),
        model_uuid: "0123abcd-4567-89ef-0123-456789abcdef".into(),
        application: "pg-main".into(),
        unit: "pg-main/2".into(),
    }
}

fn target(tls: bool) -> MetricsTarget {
    MetricsTarget {
        address: "10.0.0.7".into(),
        port: 8008,
        tls,
    }
}

fn decode(encoded: &str) -> Vec<u8> {
    let xz = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let mut out = Vec::new();
    lzma_rust2::XzReader::new(xz.as_slice(), false)
        .read_to_end(&mut out)
        .expect("xz");
    out
}

/// `python3 -c CODE` with `input` on stdin: its stdout.
fn python(code: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_document_has_every_field_of_the_schema() {
    let text = agent_config(&topology(), &target(false)).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "dashboards",
            "log_alert_rules",
            "log_slots",
            "metrics_alert_rules",
            "metrics_scrape_jobs",
            "subordinate",
            "tracing_protocols"
        ]
    );
    assert_eq!(doc["log_slots"], json!(["charmed-postgresql:logs"]));
    assert_eq!(doc["log_alert_rules"], json!({}));
    assert_eq!(doc["dashboards"].as_array().unwrap().len(), 1);
    assert_eq!(doc["metrics_scrape_jobs"].as_array().unwrap().len(), 1);
    // Deterministic: the same inputs give the same text, so a hook that
    // finds it in the bag writes nothing.
    assert_eq!(agent_config(&topology(), &target(false)).unwrap(), text);
}

#[test]
fn one_scrape_job_for_this_units_metrics() {
    let job = scrape_job(&topology(), &target(false));
    assert_eq!(
        job,
        json!({
            "job_name": "pg_main_2_pgpilot",
            "metrics_path": "/metrics",
            "scheme": "http",
            "static_configs": [{"targets": ["10.0.0.7:8008"]}],
            "relabel_configs": [{"target_label": "job", "replacement": "pgpilot"}],
        })
    );
    let tls = scrape_job(&topology(), &target(true));
    assert_eq!(tls["scheme"], "https");
    assert_eq!(tls["tls_config"], json!({"insecure_skip_verify": true}));
    assert!(tls.get("basic_auth").is_none(), "GET /metrics is open");
}

#[test]
fn rules_carry_the_topology() {
    let rules = alert_rules(&topology()).unwrap();
    let groups = rules["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "prod_db_0123abcd_pg_main_pgpilot_ha_rules",
            "prod_db_0123abcd_pg_main_pgpilot_postgresql_rules",
            "prod_db_0123abcd_pg_main_pgpilot_backup_rules",
        ]
    );
    let mut alerts = 0;
    for group in groups {
        for rule in group["rules"].as_array().unwrap() {
            alerts += 1;
            let labels = &rule["labels"];
            assert_eq!(labels["juju_model"], "prod-db", "{rule}");
            assert_eq!(
                labels["juju_model_uuid"],
                "0123abcd-4567-89ef-0123-456789abcdef"
            );
            assert_eq!(labels["juju_application"], "pg-main");
            assert_eq!(labels["juju_charm"], "postgresql");
            // The file's own labels and expressions are kept.
            assert!(labels["severity"].is_string(), "{rule}");
            assert!(rule["expr"].is_string(), "{rule}");
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
    let sidecar_down = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == "PgpilotSidecarDown")
        .unwrap();
    assert!(
        sidecar_down["expr"]
            .as_str()
            .unwrap()
            .contains(&format!("job=\"{METRICS_JOB}\"")),
        "the scrape job's relabelling sets the job label the rules select on"
    );
}

#[test]
fn dashboard_round_trip_with_uid_and_tag() {
    let encoded = encode_dashboard(&dashboard().unwrap()).unwrap();
    assert!(encoded.starts_with("/Td6WFoA"), "{}", &encoded[..16]);
    let decoded: Value = serde_json::from_slice(&decode(&encoded)).unwrap();
    assert_eq!(decoded, dashboard().unwrap());
    assert_eq!(decoded["uid"], dashboard_uid());
    assert_eq!(
        decoded["title"],
        "pgpilot: PostgreSQL cluster, HA and backups"
    );
    let tags = decoded["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("charm: postgresql")), "{tags:?}");
    assert!(tags.contains(&json!("pgpilot")), "{tags:?}");
    // Compressed for real, not stored.
    assert!(
        encoded.len() < DASHBOARD.len() / 3,
        "{} bytes",
        encoded.len()
    );
}

#[test]
fn an_existing_charm_tag_is_kept() {
    let doc = json!({"title": "t", "uid": "x", "tags": ["a", "charm: other"]});
    let prepared = prepare_dashboard(doc).unwrap();
    assert_eq!(prepared["tags"], json!(["a", "charm: other"]));
    assert_eq!(prepared["uid"], dashboard_uid());
    let untagged = prepare_dashboard(json!({"title": "t"})).unwrap();
    assert_eq!(untagged["tags"], json!(["charm: postgresql"]));
    assert!(prepare_dashboard(json!([])).is_err());
}

#[test]
fn the_xz_stream_is_what_python_lzma_reads() {
    let encoded = encode_dashboard(&dashboard().unwrap()).unwrap();
    let xz = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .unwrap();
    // Stream header: magic, then flags 0x00 0x04 (CRC64), as lzma.compress.
    assert_eq!(&xz[..6], b"\xfd7zXZ\x00");
    assert_eq!(&xz[6..8], &[0x00, 0x04]);
    // What grafana-agent's library does with it: LZMABase64.decompress.
    let out = python(
        "import base64, json, lzma, sys\n\
         d = json.loads(lzma.decompress(base64.b64decode(sys.stdin.read())))\n\
         print(d['uid'], d['title'])",
        &encoded,
    );
    assert_eq!(
        out.trim(),
        format!(
            "{} pgpilot: PostgreSQL cluster, HA and backups",
            dashboard_uid()
        )
    );
}

#[test]
fn the_uid_is_shake256_as_the_cos_library_computes_it() {
    let uid = dashboard_uid();
    assert_eq!(uid.len(), 40);
    let python_uid = python(
        "import hashlib, sys\n\
         print(hashlib.shake_256(sys.stdin.read().encode()).hexdigest(20))",
        "postgresql-exporters/monitoring/dashboard.json",
    );
    assert_eq!(uid, python_uid.trim());
}

#[test]
fn the_charm_name_is_charmcraft_yamls() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charmcraft.yaml")).unwrap();
    let recipe: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(recipe["name"], CHARM_NAME);
}

#[test]
fn names_are_sanitised_and_dictionaries_sized() {
    assert_eq!(sanitize("a-b.c/d:e_f9"), "a_b_c_d:e_f9");
    assert_eq!(dict_size_for(10), 4096);
    assert_eq!(dict_size_for(35_735), 65_536);
    assert_eq!(dict_size_for(65_536), 65_536);
}
