//! A real S3-compatible server on loopback: moto's server (PyPI `moto[server]`).
//!
//! The executable is, in order: `$PGPILOT_MOTO_SERVER`,
//! `/opt/pgpilot-moto/bin/moto_server` (where `scripts/setup.sh` installs
//! it), `moto_server` on `PATH`, else `python3 -m moto.server`. moto keeps
//! everything in memory: a killed server loses its buckets, a paused one
//! (SIGSTOP) keeps them — pause it to make the repository unreachable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::{signal, Signal};

/// Where scripts/setup.sh installs moto.
pub const SETUP_VENV_BIN: &str = "/opt/pgpilot-moto/bin/moto_server";

pub struct MotoServer {
    child: Option<Child>,
    host: String,
    port: u16,
    log: PathBuf,
    tls: bool,
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn command() -> Command {
    if let Some(path) = std::env::var_os("PGPILOT_MOTO_SERVER") {
        return Command::new(path);
    }
    if Path::new(SETUP_VENV_BIN).is_file() {
        return Command::new(SETUP_VENV_BIN);
    }
    if let Some(path) = on_path("moto_server") {
        return Command::new(path);
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "moto.server"]);
    cmd
}

impl MotoServer {
    /// Start moto on a free port; its output goes to `<dir>/moto.log`.
    pub fn start(dir: &Path) -> anyhow::Result<MotoServer> {
        Self::spawn(dir, &[])
    }

    /// Start moto on `host:port` (an address of the test's own loopback
    /// network; the same port again after [`MotoServer::kill`] brings the
    /// repository back, empty).
    pub fn start_on(dir: &Path, host: &str, port: u16) -> anyhow::Result<MotoServer> {
        Self::spawn_on(dir, host, port, &[])
    }

    /// Start moto behind TLS, with a certificate for 127.0.0.1 signed by a
    /// fresh test CA (openssl). Returns the server and the CA's PEM file.
    pub fn start_tls(dir: &Path) -> anyhow::Result<(MotoServer, PathBuf)> {
        Self::start_tls_on(dir, "127.0.0.1", free_port())
    }

    /// The same on `host:port`, the certificate for `host`.
    pub fn start_tls_on(
        dir: &Path,
        host: &str,
        port: u16,
    ) -> anyhow::Result<(MotoServer, PathBuf)> {
        let (ca, cert, key) = test_certificates(dir, host)?;
        let cert = cert.display().to_string();
        let key = key.display().to_string();
        let server = Self::spawn_on(dir, host, port, &["-s", "-c", &cert, "-k", &key])?;
        Ok((server, ca))
    }

    fn spawn(dir: &Path, extra: &[&str]) -> anyhow::Result<MotoServer> {
        Self::spawn_on(dir, "127.0.0.1", free_port(), extra)
    }

    fn spawn_on(dir: &Path, host: &str, port: u16, extra: &[&str]) -> anyhow::Result<MotoServer> {
        let log = dir.join("moto.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = command()
            .args(["-H", host, "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start moto's server ({e}): run scripts/setup.sh, which installs \
                     moto[server], or set PGPILOT_MOTO_SERVER"
                )
            })?;
        let mut server = MotoServer {
            child: Some(child),
            host: host.to_string(),
            port,
            log,
            tls: !extra.is_empty(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect((host, port)).is_err() {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!(
                    "moto's server exited ({status}) before listening:\n{}",
                    crate::file_tail(&server.log, 20)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "moto's server did not listen on port {port} within 60 s:\n{}",
                    crate::file_tail(&server.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Freeze the server (SIGSTOP): connections are accepted by the kernel
    /// but nothing answers — the hung-repository case.
    pub fn pause(&self) {
        signal(self.pid(), Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.pid(), Signal::SIGCONT);
    }

    /// Kill the server (its buckets are lost): the refused-connection case.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, Signal::SIGCONT);
            signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Create a bucket (moto accepts unsigned requests). Over plain HTTP
    /// only: the harness's HTTP client has no TLS.
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        anyhow::ensure!(!self.tls, "create_bucket speaks plain HTTP only");
        let url = format!("{}/{bucket}", self.endpoint());
        let reply = crate::http::client()
            .put(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("PUT {url}: {e}"))?;
        anyhow::ensure!(
            reply.status().is_success(),
            "PUT {url}: HTTP {}",
            reply.status()
        );
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA and a server certificate for the IP address `host` signed by
/// it, made with the openssl command: (CA PEM, server certificate PEM,
/// server key PEM).
fn test_certificates(dir: &Path, host: &str) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    crate::openssl::self_signed_ca(dir, "ca", "pgpilot test CA")?;
    crate::openssl::issue(
        dir,
        "server",
        &format!("/CN={host}"),
        &format!(
            "subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    Ok((ca, cert, key))
}
