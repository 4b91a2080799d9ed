//! One plain PostgreSQL 15 server (no pgpilot sidecar), for tests that need
//! a real archiver: initdb as the `postgres` OS user in a temporary
//! directory, Unix socket only, a free port. Dropping it stops the
//! postmaster by pid (SIGQUIT, then SIGKILL).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::ports::free_port;
use crate::{PG_BIN_DIR, PG_OS_USER};

pub struct Standalone {
    base: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
    uid: u32,
    gid: u32,
}

/// uid and gid of PostgreSQL's OS user.
pub fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let user = nix::unistd::User::from_name(PG_OS_USER)?
        .ok_or_else(|| anyhow::anyhow!("no OS user {PG_OS_USER}: install postgresql-15"))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Give `path` to PostgreSQL's OS user.
pub fn give_to_postgres(path: &Path) -> anyhow::Result<()> {
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    Ok(())
}

impl Standalone {
    /// initdb a new cluster in `<root>/<name>/data`. `root` is made
    /// traversable (0755) so that PostgreSQL's user can reach it.
    pub fn init(root: &Path, name: &str) -> anyhow::Result<Standalone> {
        Self::init_with(root, name, &[])
    }

    /// [`Standalone::init`] with more initdb arguments (`--data-checksums`).
    pub fn init_with(root: &Path, name: &str, initdb_args: &[&str]) -> anyhow::Result<Standalone> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
        let base = root.join(name);
        let socket_dir = base.join("run");
        std::fs::create_dir_all(&socket_dir)?;
        let (uid, gid) = postgres_ids()?;
        for dir in [&base, &socket_dir] {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        let server = Standalone {
            data: base.join("data"),
            log: base.join("postgres.log"),
            socket_dir,
            port: free_port(),
            base,
            uid,
            gid,
        };
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .args(initdb_args)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(server)
    }

    /// A server for a data directory that something else fills (a
    /// restore into `<root>/<name>/data`): no initdb. The directory is not
    /// created.
    pub fn adopt(root: &Path, name: &str) -> anyhow::Result<Standalone> {
        let base = root.join(name);
        let socket_dir = base.join("run");
        std::fs::create_dir_all(&socket_dir)?;
        let (uid, gid) = postgres_ids()?;
        for dir in [&base, &socket_dir] {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        Ok(Standalone {
            data: base.join("data"),
            log: base.join("postgres.log"),
            socket_dir,
            port: free_port(),
            base,
            uid,
            gid,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Run one of PostgreSQL's programs (pgbench, pg_dump, ...) as its OS
    /// user against this server; its stdout when it succeeds.
    pub fn run_program(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(program)
            .args(["-h", &self.socket_dir.display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(Path::new(PG_BIN_DIR).join(program));
        cmd.uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.base)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Append `key = value` lines to postgresql.conf (values as PostgreSQL
    /// wants them, quotes included).
    pub fn configure(&self, settings: &[(&str, String)]) -> anyhow::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        for (key, value) in settings {
            writeln!(file, "{key} = {value}")?;
        }
        Ok(())
    }

    pub fn start(&self) -> anyhow::Result<()> {
        self.start_with("")
    }

    /// Start with extra postgres options (`-c name=value ...`).
    pub fn start_with(&self, extra: &str) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses='' {extra}",
            self.port,
            self.socket_dir.display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "pg_ctl start failed:\n{}",
            crate::file_tail(&self.log, 30)
        );
        Ok(())
    }

    /// Connect as `postgres` through the Unix socket.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The system identifier, from the first field of global/pg_control.
    pub fn system_identifier(&self) -> anyhow::Result<u64> {
        let bytes = std::fs::read(self.data.join("global/pg_control"))?;
        Ok(u64::from_ne_bytes(bytes[..8].try_into()?))
    }

    /// Stop cleanly (`pg_ctl stop -m fast`): a shutdown checkpoint, and no
    /// crash recovery at the next start.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", "fast", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "pg_ctl stop failed:\n{}",
            crate::file_tail(&self.log, 30)
        );
        Ok(())
    }

    /// Stop at once (SIGQUIT, SIGKILL after 10 s).
    pub fn stop(&self) {
        crate::process::kill_postmaster_blocking(&self.data, Duration::from_secs(10));
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.stop();
    }
}
