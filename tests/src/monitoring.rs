//! The monitoring files shipped in exporters/monitoring (alert rules and
//! the Grafana dashboard) as the metrics tests read them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Cluster;

/// `promtool ARGS` (with `stdin` piped in, for `check metrics`); its
/// output, or an error with it when promtool complains.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run promtool ({e}): scripts/setup.sh installs it"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{said}");
    Ok(said)
}

/// A leader and a streaming replica with a posix backup repository in
/// their own temporary directory (kept as long as this value).
pub struct BackedUpPair {
    pub cluster: Cluster,
    pub leader: usize,
    pub replica: usize,
    _repo_dir: tempfile::TempDir,
}

impl BackedUpPair {
    pub async fn start(ready: Duration) -> anyhow::Result<BackedUpPair> {
        let dir = tempfile::Builder::new().prefix("pgpilot-repo-").tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let backup = crate::backup::posix_section(&dir.path().join("repo"), "")?;
        let cluster = Cluster::builder()
            .members(2)
            .extra_toml(&format!("\n{backup}"))
            .start()
            .await?;
        let leader = cluster.wait_ready(ready).await?;
        let replica = 1 - leader;
        cluster.wait_streaming_to(leader, replica, ready).await?;
        Ok(BackedUpPair {
            cluster,
            leader,
            replica,
            _repo_dir: dir,
        })
    }

    /// `pgpilot backup` on the leader.
    pub fn backup(&self) -> anyhow::Result<()> {
        let config = self
            .cluster
            .member(self.leader)
            .config_path
            .display()
            .to_string();
        let out = crate::backup::run_pgpilot(&["backup", "--config", &config])?;
        anyhow::ensure!(out.code == 0, "pgpilot backup failed: {}", out.stderr);
        Ok(())
    }
}

pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../exporters/monitoring/alerts.yaml")
}

pub fn dashboard_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../exporters/monitoring/dashboard.json")
}

/// Every PromQL query of the dashboard, with the `$scope` / `$instance`
/// variables matching everything.
pub fn dashboard_exprs() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dashboard_file())?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr.replace("$scope", ".*").replace("$instance", ".*");
                out.push((title.clone(), expr));
            }
        }
    }
    Ok(out)
}

/// The rules without their annotations: promtool compares annotations too,
/// and these tests are about which alerts fire with which labels (`promtool
/// check rules` checks the annotation templates).
pub fn without_annotations(text: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "annotations:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `(alert, expr)` of each rule. The rules file keeps every `expr` on one
/// line, which this relies on (and checks).
pub fn alerts_and_exprs(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            current = Some(name.trim().to_string());
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            anyhow::ensure!(
                !expr.is_empty() && !expr.starts_with('|') && !expr.starts_with('>'),
                "keep each expr of {} on one line",
                rules_file().display()
            );
            let alert = current
                .take()
                .ok_or_else(|| anyhow::anyhow!("expr {expr:?} without an alert name"))?;
            out.push((alert, expr.to_string()));
        }
    }
    Ok(out)
}

/// Metric names in a PromQL expression: identifiers with one of our
/// prefixes (functions and keywords never have them).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if ["pg_", "patroni_", "pgbackrest_", "pgpilot_", "process_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                names.insert(word.clone());
            }
            word.clear();
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_dropped_and_nothing_else() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        annotations:\n          summary: s\n          description: >-\n            long\n      - alert: B\n        expr: y\n";
        assert_eq!(
            without_annotations(text),
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n      - alert: B\n        expr: y\n"
        );
    }

    #[test]
    fn metric_names_are_found_in_expressions() {
        let names = metric_names(
            "increase(pg_stat_archiver_failed_count[10m]) > 0 and max by (scope) (patroni_primary) < 1",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["patroni_primary", "pg_stat_archiver_failed_count"]
        );
    }
}
