//! A single-node etcd on loopback, one per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{signal, Signal};

/// The etcd binary: `$ETCD_BIN`, else `etcd` on PATH.
fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Where it listens: `127.0.0.1`, or another loopback address.
    pub host: String,
    /// Client TLS, when it serves `https://`.
    pub tls: Option<ClientTls>,
}

/// etcd serving clients over TLS only, with client certificate
/// authentication (`--client-cert-auth`), as charmed-etcd runs it.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// etcd's server certificate and key (PEM files).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificates whose clients it accepts: CAs, or leaf certificates
    /// trusted as they are (what charmed-etcd does with a client's
    /// `mtls-cert`).
    pub trusted: PathBuf,
    /// The CA of `cert`, and an accepted client identity for [`Etcd::ctl`].
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl Etcd {
    /// Start etcd with its data under `dir/etcd` and its log in `dir/etcd.log`,
    /// and wait until it answers `/health`.
    pub async fn start(dir: &Path) -> anyhow::Result<Etcd> {
        Self::spawn(dir, "127.0.0.1", free_port(), free_port(), None)?
            .healthy()
            .await
    }

    /// Start etcd on `host` (a loopback address of the test's own), clients
    /// over TLS with client certificates only, and wait until `etcdctl
    /// endpoint health` with the admin identity answers.
    pub async fn start_tls(dir: &Path, host: &str, tls: ClientTls) -> anyhow::Result<Etcd> {
        Self::spawn(dir, host, 2379, 2380, Some(tls))?
            .healthy()
            .await
    }

    fn spawn(
        dir: &Path,
        host: &str,
        client_port: u16,
        peer_port: u16,
        tls: Option<ClientTls>,
    ) -> anyhow::Result<Etcd> {
        let data_dir = dir.join("etcd");
        let log_path = dir.join("etcd.log");
        let log = std::fs::File::create(&log_path)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://{host}:{client_port}");
        let peer_url = format!("http://{host}:{peer_port}");
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg("e")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("e={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(tls) = &tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.trusted)
                .arg("--client-cert-auth");
        }
        // Keep the operator's ETCD_* settings out of the test's etcd.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e} (is etcd installed?)",
                etcd_bin().display()
            )
        })?;
        Ok(Etcd {
            child: Some(child),
            client_port,
            peer_port,
            data_dir,
            log_path,
            host: host.to_string(),
            tls,
        })
    }

    async fn healthy(mut self) -> anyhow::Result<Etcd> {
        self.wait_healthy(Duration::from_secs(30)).await?;
        Ok(self)
    }

    /// `etcdctl ARGS` against this etcd (with the admin identity over TLS).
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = Command::new("etcdctl");
        cmd.arg(format!("--endpoints={}", self.endpoint()));
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.admin_cert.display()))
                .arg(format!("--key={}", tls.admin_key.display()));
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        Ok(cmd.args(args).stdin(Stdio::null()).output()?)
    }

    /// `http://127.0.0.1:PORT` (or `https://HOST:PORT`), for `dcs.endpoints`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = crate::http::client();
        let url = format!("{}/health", self.endpoint());
        let tls = self.tls.is_some();
        let this = &*self;
        let result = crate::wait_until("etcd to answer /health", timeout, async || {
            if tls {
                // No TLS in the tests' HTTP client: etcdctl with a client certificate.
                let out = this.ctl(&["endpoint", "health"])?;
                anyhow::ensure!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return Ok(());
            }
            let reply = crate::http::request(&client, reqwest::Method::GET, &url).await?;
            anyhow::ensure!(
                reply.status == 200 && reply.body.contains("true"),
                "{} {}",
                reply.status,
                reply.body
            );
            Ok(())
        })
        .await;
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            anyhow::bail!(
                "etcd exited ({status})\n--- etcd log ---\n{}",
                crate::file_tail(&self.log_path, 30)
            );
        }
        result.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\n--- etcd log ({}) ---\n{}",
                self.log_path.display(),
                crate::file_tail(&self.log_path, 30)
            )
        })
    }

    /// Pause or resume etcd (SIGSTOP / SIGCONT), e.g. to simulate an outage.
    pub fn signal(&self, sig: Signal) -> bool {
        self.pid().is_some_and(|pid| signal(pid, sig))
    }

    /// Stop etcd: SIGTERM, SIGKILL after a few seconds. Idempotent, blocking.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        if let Ok(None) = child.try_wait() {
            // A paused etcd does not act on SIGTERM.
            signal(pid, Signal::SIGCONT);
            signal(pid, Signal::SIGTERM);
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

    /// The last `n` lines of etcd's log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::file_tail(&self.log_path, n)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
