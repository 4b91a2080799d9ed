//! What the charm e2e tests look at on a [`Deployment`]: the cluster as
//! pgpilot reports it, etcd's members, SQL through a unit's psql, the
//! artefacts under test (`$PGPILOT_CHARM`, `$PGPILOT_SNAP`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::driver::{Deployment, DriverOptions};
pub use crate::snapd::checks::members;
use crate::snapd::checks::text;
use crate::snapd::Machine;

/// The packed charm and snap under test: `$PGPILOT_CHARM` and
/// `$PGPILOT_SNAP` (scripts/test.sh builds both).
pub fn artefacts() -> anyhow::Result<(PathBuf, PathBuf)> {
    let get = |var: &str, how: &str| -> anyhow::Result<PathBuf> {
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .with_context(|| format!("{var} is not set: run `{how}` and export its last line"))?;
        anyhow::ensure!(path.is_file(), "{var}={}: no such file", path.display());
        Ok(path)
    };
    Ok((
        get("PGPILOT_CHARM", "bash scripts/build-charm.sh")?,
        get("PGPILOT_SNAP", "bash scripts/build-snap.sh")?,
    ))
}

/// A deployment in a temporary directory with units on `net.N`.
pub fn deployment(
    tmp: &tempfile::TempDir,
    net: &str,
    opts: DriverOptions,
) -> anyhow::Result<Deployment> {
    use std::os::unix::fs::PermissionsExt;
    let (charm, snap) = artefacts()?;
    // The snap's daemons (and pgpilot's callbacks) run as `_daemon_`: see
    // crate::snapd::checks::open_tempdir.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    Deployment::new(&tmp.path().join("d"), &charm, &snap, net, opts)
}

/// `(leader member, streaming replicas)` as pgpilot reports them.
pub fn cluster_shape(m: &Machine) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let list = members(m)?;
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_lowercase();
    let leader = list
        .iter()
        .find(|v| field(v, "Role") == "leader" && field(v, "State") == "running")
        .map(|v| field(v, "Member"));
    let streaming = list
        .iter()
        .filter(|v| field(v, "Role") != "leader" && field(v, "State") == "streaming")
        .map(|v| field(v, "Member"))
        .collect();
    Ok((leader, streaming))
}

/// etcd's members on a machine: `(name, is_learner)`.
pub fn etcd_members(m: &Machine) -> anyhow::Result<Vec<(String, bool)>> {
    let out = m.run_app("etcdctl", &["member", "list", "-w", "json"], &[])?;
    anyhow::ensure!(out.status.success(), "etcdctl member list: {}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    Ok(doc["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["isLearner"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The operator's password from the application secret (the leader's
/// view; what `get-password` answers).
pub fn operator_password(d: &Deployment) -> anyhow::Result<String> {
    let state = d.model().state();
    state
        .secrets
        .values()
        .filter(|s| s.label.as_deref() == Some("database-peers.postgresql.app"))
        .find_map(|s| {
            s.revisions
                .get(&s.latest())
                .and_then(|bag| bag.get("operator-password").cloned())
        })
        .context("no operator password in the application secret")
}

/// One value from `psql -Atc SQL` as `operator` over TCP to `host`.
pub fn sql(m: &Machine, host: &str, password: &str, query: &str) -> anyhow::Result<String> {
    let out = m.run_app(
        "psql",
        &[
            "-h",
            host,
            "-U",
            "operator",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            query,
        ],
        &[("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "5")],
    )?;
    anyhow::ensure!(out.status.success(), "psql {query:?}: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Generous: a 3-unit deploy on a loaded 2-core machine installs three
/// snaps and bootstraps etcd and PostgreSQL one member at a time.
pub const DEPLOY: Duration = Duration::from_secs(900);

/// After `lost`'s machine went down: the first other unit whose status
/// is active `Primary...` (`Primary (degraded)` while the lost unit still
/// counts in Juju).
pub fn survivor_primary(d: &Deployment, lost: &str, timeout: Duration) -> anyhow::Result<String> {
    let survivors: Vec<String> = d.units().into_iter().filter(|u| u != lost).collect();
    d.wait_for("a survivor shows Primary", timeout, |d| {
        let statuses = d.statuses();
        survivors
            .iter()
            .find(|u| statuses[*u].0 == "active" && statuses[*u].1.starts_with("Primary"))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("statuses {statuses:?}"))
    })
}
