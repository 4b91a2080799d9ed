//! Operator actions as tests make them: a REST request with a JSON body and
//! headers, and `pgpilot ctl` against a member's configuration file.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::Method;
use crate::{Cluster, RunOutput};

/// Status and body of a request with an optional JSON body.
pub async fn call(
    c: &Cluster,
    i: usize,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, String)> {
    call_with(c, i, method, path, body, &[]).await
}

pub async fn call_with(
    c: &Cluster,
    i: usize,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = c.member(i).api_url(path);
    let mut request = client.request(method.clone(), &url);
    if let Some(b) = body {
        request = request.json(&b);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// `pgpilot ctl -c <member i's file> args...`, stdin closed, at most 3 minutes.
pub async fn ctl(c: &Cluster, i: usize, args: &[&str]) -> anyhow::Result<RunOutput> {
    ctl_with_config(&c.member(i).config_path, args).await
}

pub async fn ctl_with_config(config: &Path, args: &[&str]) -> anyhow::Result<RunOutput> {
    let bin = crate::pgpilot_bin()?;
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("ctl")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("PGPILOT_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("pgpilot ctl {args:?} did not finish in 180 s"))??;
    Ok(RunOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
        timed_out: false,
    })
}
