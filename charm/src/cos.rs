//! The `cos-agent` relation (interface `cos_agent`, charm-interfaces.md §5):
//! the one JSON document each unit publishes in its own unit bag under
//! [`CONFIG_KEY`], for the grafana-agent (or opentelemetry-collector)
//! subordinate on its machine.
//!
//! What goes in it:
//!
//! - one scrape job for pgpilot's `GET /metrics` on the REST API's port
//!   (PostgreSQL, HA and backup metrics from one endpoint; docs/metrics.md),
//!   target `<unit address>:<port>`, `https` when the API has TLS. The
//!   endpoint needs no credentials (every GET of the API is open), so the
//!   job has none. A relabelling sets the `job` label to [`METRICS_JOB`],
//!   which the alert rules select on (`up{job="pgpilot"}`);
//! - the alert rules of exporters/monitoring/alerts.yaml, with the Juju
//!   topology labels on every rule and the group names the COS library
//!   gives them;
//! - the Grafana dashboard of exporters/monitoring/dashboard.json, with the
//!   `uid` and `charm:` tag the COS library gives a charm's dashboard,
//!   compressed as `lzma.compress` does by default (xz container, preset 6,
//!   CRC64) and base64-encoded;
//! - the snap's `logs` content slot, which the agent connects to collect
//!   the PostgreSQL, pgpilot and etcd logs under `$SNAP_COMMON/var/log`.
//!
//! Both files are compiled in (`include_str!`): exporters/monitoring stays
//! their one source, and the charm stays one binary.
//!
//! Pure: [`agent_config`] is a function of its inputs (compressing is
//! deterministic), so a hook compares it with what the bag holds and writes
//! only a difference.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha3::digest::{ExtendableOutput, Update, XofReader};

/// The unit bag key holding the document.
pub const CONFIG_KEY: &str = "config";
/// The charm's name (charmcraft.yaml `name`): the `juju_charm` label and
/// the dashboard's `charm:` tag and uid seed.
pub const CHARM_NAME: &str = "postgresql";
/// The value of the `job` label on pgpilot's series: what the alert rules
/// select on, whatever the agent names the scrape job.
pub const METRICS_JOB: &str = "pgpilot";
/// `<snap>:<slot>` of the snap's log content slot (snapcraft.yaml `slots`).
pub const LOG_SLOT: &str = "charmed-postgresql:logs";

const ALERT_RULES: &str = include_str!("../../exporters/monitoring/alerts.yaml");
const DASHBOARD: &str = include_str!("../../exporters/monitoring/dashboard.json");
/// The dashboard's path in the source tree: the seed of its uid, as the
/// COS library seeds it with a dashboard's path in the charm.
pub const DASHBOARD_PATH: &str = "exporters/monitoring/dashboard.json";

/// Where the unit runs and whose it is: the Juju topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub model: String,
    pub model_uuid: String,
    pub application: String,
    /// `postgresql/0`.
    pub unit: String,
}

/// pgpilot's metrics endpoint on this unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsTarget {
    /// The unit's address (the API listens on it).
    pub address: String,
    pub port: u16,
    /// The API serves HTTPS (`pgpilot.api.tls.*` set).
    pub tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CosError {
    #[error("the alert rules compiled into the charm are not valid: {0}")]
    Rules(String),
    #[error("the dashboard compiled into the charm is not valid: {0}")]
    Dashboard(String),
    #[error("cannot compress the dashboard: {0}")]
    Compress(#[from] std::io::Error),
}

/// The `config` document of this unit, as JSON text (keys sorted).
pub fn agent_config(topology: &Topology, target: &MetricsTarget) -> Result<String, CosError> {
    let doc = json!({
        "metrics_scrape_jobs": [scrape_job(topology, target)],
        "metrics_alert_rules": alert_rules(topology)?,
        "log_alert_rules": {},
        "dashboards": [encode_dashboard(&dashboard()?)?],
        "log_slots": [LOG_SLOT],
        "tracing_protocols": [],
        "subordinate": null,
    });
    Ok(doc.to_string())
}

/// The one scrape job: pgpilot's `/metrics` on this unit. The job name is
/// never empty (an empty one crash-loops grafana-agent,
/// canonical/postgresql-operator#1469) and names the unit, so that the
/// jobs of all units can sit in one Prometheus configuration.
pub fn scrape_job(topology: &Topology, target: &MetricsTarget) -> Value {
    let mut job = json!({
        "job_name": format!("{}_{METRICS_JOB}", sanitize(&topology.unit)),
        "metrics_path": "/metrics",
        "scheme": if target.tls { "https" } else { "http" },
        "static_configs": [{"targets": [format!("{}:{}", target.address, target.port)]}],
        "relabel_configs": [{"target_label": "job", "replacement": METRICS_JOB}],
    });
    if target.tls {
        // The agent has no copy of the API's CA; today's charm skips the
        // check the same way for Patroni's endpoint.
        job["tls_config"] = json!({"insecure_skip_verify": true});
    }
    job
}

/// The alert rules with the topology: group names
/// `<model>_<uuid[:8]>_<app>_<group>_rules` (characters outside
/// `[A-Za-z0-9_:]` become `_`), and the `juju_*` labels on every rule that
/// does not set them itself.
pub fn alert_rules(topology: &Topology) -> Result<Value, CosError> {
    let mut doc: Value =
        serde_norway::from_str(ALERT_RULES).map_err(|e| CosError::Rules(e.to_string()))?;
    let groups = doc
        .get_mut("groups")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| CosError::Rules("no `groups:` list".into()))?;
    let uuid8: String = topology.model_uuid.chars().take(8).collect();
    let labels = [
        ("juju_model", topology.model.as_str()),
        ("juju_model_uuid", topology.model_uuid.as_str()),
        ("juju_application", topology.application.as_str()),
        ("juju_charm", CHARM_NAME),
    ];
    for group in groups.iter_mut() {
        let name = group
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| CosError::Rules("a group without a name".into()))?;
        group["name"] = Value::from(sanitize(&format!(
            "{}_{uuid8}_{}_{name}_rules",
            topology.model, topology.application
        )));
        let rules = group
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| CosError::Rules("a group without `rules:`".into()))?;
        for rule in rules.iter_mut() {
            let rule = rule
                .as_object_mut()
                .ok_or_else(|| CosError::Rules("a rule that is not a mapping".into()))?;
            let rule_labels = rule
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or_else(|| CosError::Rules("`labels:` that is not a mapping".into()))?;
            for (k, v) in labels {
                rule_labels
                    .entry(k)
                    .or_insert_with(|| Value::from(v.to_string()));
            }
        }
    }
    Ok(doc)
}

/// The dashboard as the COS library prepares a charm's dashboard: `uid` =
/// [`dashboard_uid`], and a `charm: <name>` tag unless one is there.
pub fn dashboard() -> Result<Value, CosError> {
    let doc: Value =
        serde_json::from_str(DASHBOARD).map_err(|e| CosError::Dashboard(e.to_string()))?;
    prepare_dashboard(doc)
}

fn prepare_dashboard(mut doc: Value) -> Result<Value, CosError> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| CosError::Dashboard("not a JSON object".into()))?;
    obj.insert("uid".into(), Value::from(dashboard_uid()));
    let tags = obj
        .entry("tags")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| CosError::Dashboard("`tags` is not a list".into()))?;
    let tagged = tags
        .iter()
        .any(|t| t.as_str().is_some_and(|t| t.starts_with("charm: ")));
    if !tagged {
        tags.push(Value::from(format!("charm: {CHARM_NAME}")));
    }
    Ok(doc)
}

/// 40 hex digits: SHAKE-256 of `<charm name>-<dashboard path>`, 20 bytes.
pub fn dashboard_uid() -> String {
    let mut hasher = sha3::Shake256::default();
    hasher.update(format!("{CHARM_NAME}-{DASHBOARD_PATH}").as_bytes());
    let mut out = [0u8; 20];
    hasher.finalize_xof().read(&mut out);
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// base64(xz(JSON)): Python's `lzma.compress` defaults (xz container,
/// preset 6, CRC64), then standard base64 with padding.
pub fn encode_dashboard(dashboard: &Value) -> Result<String, CosError> {
    let text = dashboard.to_string();
    let mut options = lzma_rust2::XzOptions::with_preset(6);
    // A dictionary larger than the input compresses no better and costs
    // the hook memory (preset 6 allocates 8 MiB for it).
    options.lzma_options.dict_size = options
        .lzma_options
        .dict_size
        .min(dict_size_for(text.len()));
    let mut writer = lzma_rust2::XzWriter::new(Vec::new(), options)?;
    writer.write_all(text.as_bytes())?;
    let xz = writer.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(xz))
}

/// The smallest power of two ≥ `len`, at least 4 KiB (xz's minimum).
fn dict_size_for(len: usize) -> u32 {
    let len = u32::try_from(len).unwrap_or(u32::MAX).max(4096);
    len.checked_next_power_of_two().unwrap_or(u32::MAX)
}

/// Characters outside `[A-Za-z0-9_:]` become `_` (Prometheus rule group
/// and job names).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "cos_tests.rs"]
mod tests;
