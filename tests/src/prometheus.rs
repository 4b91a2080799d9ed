//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping
//! the members' `/metrics`, and a reader of its HTTP query API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{signal, Signal};

/// The server binary: `$PROMETHEUS_BIN`, else `prometheus` on PATH.
fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

pub struct Prometheus {
    child: Option<Child>,
    pub host: String,
    pub port: u16,
    pub log_path: PathBuf,
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).and_then(|v| v.as_str())
    }
}

impl Prometheus {
    /// Start a server under `dir/prometheus` that scrapes `targets`
    /// (`host:port`) at `/metrics` every `interval`, job "pgpilot", and wait
    /// until it is ready.
    pub async fn start(dir: &Path, targets: &[String], interval: Duration) -> anyhow::Result<Self> {
        let seconds = interval.as_secs().max(1);
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {seconds}s\n  \
             evaluation_interval: {seconds}s\nscrape_configs:\n  - job_name: pgpilot\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: [{list}]\n"
        );
        Self::start_with_config(dir, "127.0.0.1", &config).await
    }

    /// Start a server under `dir/prometheus` with the configuration file
    /// `config` (YAML, or JSON, which YAML includes), listening on `host`
    /// (a loopback address), and wait until it is ready.
    pub async fn start_with_config(dir: &Path, host: &str, config: &str) -> anyhow::Result<Self> {
        let port = free_port();
        let home = dir.join("prometheus");
        std::fs::create_dir_all(&home)?;
        let config_path = home.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                home.join("data").display()
            ))
            .arg(format!("--web.listen-address={host}:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot run {}: {e} (scripts/setup.sh installs Debian's prometheus)",
                    prometheus_bin().display()
                )
            })?;
        let mut server = Prometheus {
            child: Some(child),
            host: host.to_string(),
            port,
            log_path,
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = crate::http::client();
        let url = self.url("/-/ready");
        let child = &mut self.child;
        let result = crate::wait_until("prometheus to be ready", timeout, async || {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!("prometheus exited ({status})");
            }
            let reply = crate::http::request(&client, reqwest::Method::GET, &url).await?;
            anyhow::ensure!(reply.status == 200, "{} {}", reply.status, reply.body);
            Ok(())
        })
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- prometheus log ---\n{}", self.log_tail(30)))
    }

    /// `GET path` of the HTTP API (e.g. `/api/v1/rules`): its `data`.
    pub async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let client = crate::http::client();
        let reply = crate::http::request(&client, reqwest::Method::GET, &self.url(path)).await?;
        let body = reply.json()?;
        anyhow::ensure!(
            body["status"] == "success",
            "GET {path}: {} {}",
            reply.status,
            reply.body
        );
        Ok(body["data"].clone())
    }

    /// The `result` array of an instant query through `/api/v1/query`.
    async fn results(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = reqwest::Url::parse_with_params(&self.url("/api/v1/query"), &[("query", expr)])?;
        let path = format!("/api/v1/query?{}", url.query().unwrap_or_default());
        let data = self
            .api(&path)
            .await
            .map_err(|e| anyhow::anyhow!("query {expr:?} failed: {e:#}"))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// An instant query: the labels and value of each sample.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        self.results(expr)
            .await?
            .into_iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| anyhow::anyhow!("query {expr:?}: bad sample {r}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// The raw samples `(epoch seconds, value)` of a range selector that
    /// matches one series, e.g. `up{instance="x"}[60s]`; oldest first.
    pub async fn query_raw(&self, selector: &str) -> anyhow::Result<Vec<(f64, f64)>> {
        let results = self.results(selector).await?;
        anyhow::ensure!(
            results.len() <= 1,
            "{selector:?} matches {} series",
            results.len()
        );
        let values = results
            .first()
            .and_then(|r| r["values"].as_array().cloned())
            .unwrap_or_default();
        values
            .iter()
            .map(|v| {
                let t = v[0].as_f64();
                let x = v[1].as_str().and_then(|x| x.parse::<f64>().ok());
                t.zip(x)
                    .ok_or_else(|| anyhow::anyhow!("{selector:?}: bad sample {v}"))
            })
            .collect()
    }

    /// The scrape targets' health as Prometheus sees them (`/api/v1/targets`):
    /// (instance, health, last error).
    pub async fn targets(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/targets").await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["labels"]["instance"].as_str().unwrap_or("").to_string(),
                    t["health"].as_str().unwrap_or("").to_string(),
                    t["lastError"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::file_tail(&self.log_path, n)
    }

    /// Stop the server: SIGTERM, SIGKILL after a few seconds. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal(child.id() as i32, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while let Ok(None) = child.try_wait() {
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
