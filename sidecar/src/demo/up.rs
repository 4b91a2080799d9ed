//! `pgpilot demo up`: etcd, then N sidecars, then wait for a healthy cluster.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::procs::{self, spawn_detached};
use super::{absolute_dir, DemoError, Layout, PidsFile, Recorded, UpArgs, SCOPE};
use crate::api::cluster::ClusterReport;
use crate::config::Config;
use crate::ctl::list::{render, Format};
use crate::dcs::etcd::{connect, load_view, EtcdSettings};
use crate::dcs::keys;

const NAMESPACE: &str = "pgpilot";
const SUPERUSER: &str = "postgres";
const REPLICATION_USER: &str = "replicator";
/// PostgreSQL programs a member needs.
const PG_PROGRAMS: [&str; 5] = [
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_controldata",
];

/// Generated once per demo and written into every member's file.
#[derive(Debug, Clone)]
pub struct Passwords {
    pub superuser: String,
    pub replication: String,
}

impl Passwords {
    pub fn generate() -> Result<Passwords, DemoError> {
        Ok(Passwords {
            superuser: random_password(20)?,
            replication: random_password(20)?,
        })
    }
}

fn random_password(len: usize) -> Result<String, DemoError> {
    crate::secret::random_password(len)
        .map_err(|e| DemoError::failure(format!("cannot read /dev/urandom: {e}")))
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The configuration file of member `n`.
pub fn member_config(layout: &Layout, n: u8, bin_dir: &Path, passwords: &Passwords) -> String {
    let path = |p: &Path| quote(&p.to_string_lossy());
    format!(
        r#"# Member {name} of the pgpilot demo in {dir}, written by `pgpilot demo up`.
# Reference: docs/configuration.md

[cluster]
scope = {scope}
name = {name_q}
namespace = {namespace}

[dcs]
endpoints = [{etcd}]

[postgresql]
bin_dir = {bin_dir}
data_dir = {data_dir}
listen = "127.0.0.1"
port = {pg_port}
connect_address = "127.0.0.1:{pg_port}"
socket_dir = {socket_dir}

[postgresql.authentication.superuser]
username = {superuser}
password = {superuser_password}

[postgresql.authentication.replication]
username = {replication}
password = {replication_password}

[api]
listen = "127.0.0.1:{api_port}"

# WAL archiving and base backups to a directory shared by the members.
[backup]
repository = "posix"

[backup.posix]
path = {repo}

# Cluster-wide settings, copied into etcd by the member that bootstraps.
[bootstrap]
ttl = 10
loop_wait = 1
retry_timeout = 3
"#,
        name = layout.name(n),
        dir = layout.dir.display(),
        scope = quote(SCOPE),
        name_q = quote(&layout.name(n)),
        namespace = quote(NAMESPACE),
        etcd = quote(&layout.etcd_url()),
        bin_dir = path(bin_dir),
        data_dir = path(&layout.data_dir(n)),
        pg_port = layout.pg_port(n),
        socket_dir = path(&layout.member_dir(n)),
        superuser = quote(SUPERUSER),
        superuser_password = quote(&passwords.superuser),
        replication = quote(REPLICATION_USER),
        replication_password = quote(&passwords.replication),
        api_port = layout.api_port(n),
        repo = path(&layout.repo_dir()),
    )
}

/// Is the cluster as the demo wants it: every member present, one leader
/// running, every other member streaming?
pub fn is_healthy(report: &ClusterReport, layout: &Layout) -> bool {
    let leaders = report
        .members
        .iter()
        .filter(|m| m.role == "leader" && m.state == "running")
        .count();
    leaders == 1
        && layout.numbers().all(|n| {
            let name = layout.name(n);
            report.members.iter().any(|m| {
                m.name == name
                    && ((m.role == "leader" && m.state == "running")
                        || (m.role != "leader" && m.state == "streaming"))
            })
        })
}

/// One line about every member, to show progress while waiting.
pub fn progress(report: &ClusterReport, layout: &Layout) -> String {
    layout
        .numbers()
        .map(|n| {
            let name = layout.name(n);
            match report.members.iter().find(|m| m.name == name) {
                Some(m) => format!("{name} {} {}", m.role, m.state),
                None => format!("{name} -"),
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn settings(url: &str, timeout: Duration) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![url.to_string()],
        username: None,
        password: None,
        tls: None,
        connect_timeout: timeout,
        request_timeout: timeout,
    }
}

/// Preconditions that need no process: programs, user, directory, ports.
fn check(args: &UpArgs, layout: &Layout) -> Result<PathBuf, DemoError> {
    if !args.bin_dir.is_absolute() {
        return Err(DemoError::usage(format!(
            "--bin-dir {}: must be an absolute path",
            args.bin_dir.display()
        )));
    }
    for program in PG_PROGRAMS {
        if !args.bin_dir.join(program).is_file() {
            return Err(DemoError::usage(format!(
                "{} not found: point --bin-dir at PostgreSQL's programs \
                 (Debian: install postgresql-15, or run scripts/setup.sh)",
                args.bin_dir.join(program).display()
            )));
        }
    }
    let etcd = procs::which("etcd").ok_or_else(|| {
        DemoError::usage(
            "etcd not found on PATH (Debian: install etcd-server, or run scripts/setup.sh)",
        )
    })?;
    if nix::unistd::Uid::effective().is_root() {
        let Ok(Some(user)) = nix::unistd::User::from_name(SUPERUSER) else {
            return Err(DemoError::usage(
                "running as root, PostgreSQL must run as the OS user `postgres`, which does not \
                 exist (Debian: install postgresql-15)",
            ));
        };
        // PostgreSQL runs as `postgres`: it must be able to reach DIR.
        for ancestor in layout.dir.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            if meta.mode() & 0o001 == 0 && meta.uid() != user.uid.as_raw() {
                return Err(DemoError::usage(format!(
                    "the `postgres` user cannot enter {} (mode {:o}), so PostgreSQL could not \
                     reach --dir {}; choose a directory under /tmp or /var/tmp",
                    ancestor.display(),
                    meta.mode() & 0o7777,
                    layout.dir.display()
                )));
            }
        }
    }
    for (port, what) in layout.ports() {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(DemoError::usage(format!(
                "port {port} ({what}) is in use on 127.0.0.1; is another demo running? \
                 choose another --base-port (a demo uses --base-port .. --base-port + 29)"
            )));
        }
    }
    Ok(etcd)
}

/// Refuse a directory that holds a running demo, or that is not empty and
/// not a demo's. Returns whether it holds a stopped demo (to clear).
fn inspect_dir(dir: &Path) -> Result<bool, DemoError> {
    if dir.exists() && !dir.is_dir() {
        return Err(DemoError::usage(format!(
            "--dir {}: exists and is not a directory",
            dir.display()
        )));
    }
    if let Some(previous) = PidsFile::read(dir).map_err(DemoError::usage)? {
        let running: Vec<String> = previous
            .processes
            .iter()
            .filter(|p| procs::is_ours(p))
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        if !running.is_empty() {
            return Err(DemoError::usage(format!(
                "a demo is already running in {}: {}; stop it with `pgpilot demo down --dir {}` \
                 or choose another --dir and --base-port",
                dir.display(),
                running.join(", "),
                dir.display()
            )));
        }
        return Ok(true);
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| DemoError::usage(format!("cannot read {}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(DemoError::usage(format!(
                "--dir {} exists, is not empty and holds no demo (no demo.pids); \
                 choose another --dir",
                dir.display()
            )));
        }
    }
    Ok(false)
}

/// Create `dir` with mode 0755, clearing a stopped demo first.
fn prepare_dir(dir: &Path, stopped_demo: bool) -> Result<(), DemoError> {
    if stopped_demo {
        say!("Removing the stopped demo in {}", dir.display());
        super::remove_demo_files(dir).map_err(DemoError::failure)?;
    }
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| DemoError::failure(format!("cannot create {}: {e}", dir.display())))
}

/// The processes started so far, with their handles (to notice an early exit).
struct Started {
    file: PidsFile,
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Started {
    fn add(&mut self, record: Recorded, child: Child) -> Result<(), DemoError> {
        self.children.push((record.name.clone(), child));
        self.file.processes.push(record);
        self.file.write(&self.dir).map_err(DemoError::failure)
    }

    /// A process that exited already: name and status.
    fn exited(&mut self) -> Option<(String, String)> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((name.clone(), status.to_string()));
            }
        }
        None
    }

    /// Undo a start that failed half-way: stop everything, members first.
    async fn abandon(&mut self) {
        let running = |etcd: bool| -> Vec<i32> {
            self.file
                .processes
                .iter()
                .filter(|r| (r.name == "etcd") == etcd && procs::is_ours(r))
                .map(|r| r.pid)
                .collect()
        };
        let (members, etcd) = (running(false), running(true));
        self.stop_and_reap(&members).await;
        for record in &self.file.processes {
            if let Some(pm) = record.data_dir.as_deref().and_then(procs::postmaster_of) {
                procs::stop(
                    &[pm],
                    nix::sys::signal::Signal::SIGQUIT,
                    Duration::from_secs(10),
                )
                .await;
            }
        }
        self.stop_and_reap(&etcd).await;
    }

    async fn stop_and_reap(&mut self, pids: &[i32]) {
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut running = false;
            for (_, child) in &mut self.children {
                if pids.contains(&(child.id() as i32)) && matches!(child.try_wait(), Ok(None)) {
                    running = true;
                }
            }
            if !running {
                return;
            }
            if Instant::now() > deadline {
                for (_, child) in &mut self.children {
                    if pids.contains(&(child.id() as i32)) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn up(args: UpArgs) -> Result<(), DemoError> {
    let started_at = Instant::now();
    let dir = absolute_dir(&args.dir)?;
    let layout = Layout {
        dir: dir.clone(),
        base_port: args.base_port,
        members: args.members,
    };
    let exe = std::env::current_exe()
        .map_err(|e| DemoError::failure(format!("cannot find pgpilot's own binary: {e}")))?;
    let stopped_demo = inspect_dir(&dir)?;
    let etcd_program = check(&args, &layout)?;
    prepare_dir(&dir, stopped_demo)?;

    let mut started = Started {
        file: PidsFile {
            etcd_url: layout.etcd_url(),
            namespace: NAMESPACE.to_string(),
            scope: SCOPE.to_string(),
            processes: Vec::new(),
        },
        children: Vec::new(),
        dir: dir.clone(),
    };
    // Written before anything starts: it marks the directory as a demo's.
    started.file.write(&dir).map_err(DemoError::failure)?;

    // PostgreSQL runs `pgpilot archive-push`/`archive-get` as its own user,
    // who may not reach the binary where it was built (a clone in /root is
    // 0700): the members run a copy inside DIR, which that user can reach.
    let member_exe = copy_binary(&exe, &layout.bin_path())?;
    match start_all(&args, &layout, &member_exe, &etcd_program, &mut started).await {
        Ok(etcd_ready) => {
            wait_healthy(&args, &layout, &exe, &mut started, started_at, etcd_ready).await
        }
        Err(e) => {
            eprintln!("pgpilot demo: {}; stopping what was started", e.message);
            started.abandon().await;
            Err(DemoError {
                code: e.code,
                message: format!("demo not started; files are in {}", dir.display()),
            })
        }
    }
}

/// Start etcd, wait for it, write the member files and start the members.
/// Returns how long etcd took to answer.
async fn start_all(
    args: &UpArgs,
    layout: &Layout,
    exe: &Path,
    etcd_program: &Path,
    started: &mut Started,
) -> Result<Duration, DemoError> {
    let etcd_begin = Instant::now();
    let etcd_dir = layout.etcd_dir();
    let etcd_dir_s = etcd_dir.to_string_lossy().into_owned();
    let client_url = layout.etcd_url();
    let peer_url = format!("http://127.0.0.1:{}", layout.etcd_peer_port());
    let initial_cluster = format!("pgpilot-demo={peer_url}");
    let token = format!("pgpilot-demo-{}", layout.base_port);
    let etcd_args = [
        "--name",
        "pgpilot-demo",
        "--data-dir",
        &etcd_dir_s,
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &initial_cluster,
        "--initial-cluster-token",
        &token,
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
    ];
    // etcd refuses flags that an ETCD_* variable also sets: keep the environment out.
    let etcd_env: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("ETCD_"))
        .collect();
    say!(
        "Starting etcd on {client_url} (data {}, log {})",
        etcd_dir.display(),
        layout.etcd_log().display()
    );
    let child = spawn_detached(
        etcd_program,
        &etcd_args,
        &layout.etcd_log(),
        &layout.dir,
        &etcd_env,
    )
    .map_err(DemoError::failure)?;
    started.add(
        Recorded {
            name: "etcd".into(),
            pid: child.id() as i32,
            program: "etcd".into(),
            marker: etcd_dir_s.clone(),
            data_dir: None,
        },
        child,
    )?;
    wait_etcd(layout, started).await?;
    let etcd_ready = etcd_begin.elapsed();

    let passwords = Passwords::generate()?;
    let pg_owner = if nix::unistd::Uid::effective().is_root() {
        nix::unistd::User::from_name(SUPERUSER).ok().flatten()
    } else {
        None
    };
    // The backup repository: PostgreSQL's archive_command writes there as its user.
    make_dir(&layout.repo_dir(), 0o750, pg_owner.as_ref())?;
    for n in layout.numbers() {
        let name = layout.name(n);
        let member_dir = layout.member_dir(n);
        // The member directory is PostgreSQL's socket directory: its user writes there.
        make_dir(&member_dir, 0o755, pg_owner.as_ref())?;
        let text = member_config(layout, n, &args.bin_dir, &passwords);
        let config_path = layout.config_path(n);
        // Never hand a member a file it would refuse.
        Config::parse(&text, &config_path)
            .map_err(|e| DemoError::failure(format!("generated an invalid file: {e}")))?;
        write_private(&config_path, &text)?;
        // archive_command runs `pgpilot archive-push` as PostgreSQL's user,
        // which reads this file.
        if let Some(user) = &pg_owner {
            nix::unistd::chown(&config_path, Some(user.uid), Some(user.gid)).map_err(|e| {
                DemoError::failure(format!("cannot chown {}: {e}", config_path.display()))
            })?;
        }

        let config_s = config_path.to_string_lossy().into_owned();
        let member_args = ["run", "--config", config_s.as_str()];
        let child = spawn_detached(exe, &member_args, &layout.log_path(n), &member_dir, &[])
            .map_err(DemoError::failure)?;
        say!(
            "Started {name} (pid {}): PostgreSQL 127.0.0.1:{}, API http://127.0.0.1:{}, log {}",
            child.id(),
            layout.pg_port(n),
            layout.api_port(n),
            layout.log_path(n).display()
        );
        started.add(
            Recorded {
                name,
                pid: child.id() as i32,
                program: exe
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "pgpilot".into()),
                marker: config_s,
                data_dir: Some(layout.data_dir(n)),
            },
            child,
        )?;
    }
    Ok(etcd_ready)
}

/// Copy `exe` to `to` (mode 0755), through a temporary file and a rename.
fn copy_binary(exe: &Path, to: &Path) -> Result<PathBuf, DemoError> {
    let fail = |e: std::io::Error| {
        DemoError::failure(format!(
            "cannot copy {} to {}: {e}",
            exe.display(),
            to.display()
        ))
    };
    let dir = to.parent().unwrap_or(Path::new("/"));
    make_dir(dir, 0o755, None)?;
    let tmp = to.with_extension("tmp");
    std::fs::copy(
        crate::postgres::conf::pgpilot_exe().unwrap_or(exe.to_path_buf()),
        &tmp,
    )
    .map_err(fail)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
    std::fs::rename(&tmp, to).map_err(fail)?;
    Ok(to.to_path_buf())
}

/// Create `dir` with `mode`, owned by `owner` when given (PostgreSQL's user).
fn make_dir(dir: &Path, mode: u32, owner: Option<&nix::unistd::User>) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| DemoError::failure(format!("cannot create {}: {e}", dir.display())))?;
    if let Some(user) = owner {
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| DemoError::failure(format!("cannot chown {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Write a file only its owner can read (it holds passwords).
fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| DemoError::failure(format!("cannot write {}: {e}", path.display())))
}

async fn wait_etcd(layout: &Layout, started: &mut Started) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let settings = settings(&layout.etcd_url(), Duration::from_secs(1));
    loop {
        if let Some((_, status)) = started.exited() {
            return Err(DemoError::failure(format!(
                "etcd exited ({status}); last lines of {}:\n{}",
                layout.etcd_log().display(),
                procs::tail(&layout.etcd_log(), 15)
            )));
        }
        match connect(&settings).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(DemoError::failure(format!(
                    "etcd did not answer on {} within 30 s ({e}); last lines of {}:\n{}",
                    layout.etcd_url(),
                    layout.etcd_log().display(),
                    procs::tail(&layout.etcd_log(), 15)
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn wait_healthy(
    args: &UpArgs,
    layout: &Layout,
    exe: &Path,
    started: &mut Started,
    started_at: Instant,
    etcd_ready: Duration,
) -> Result<(), DemoError> {
    let deadline = started_at + Duration::from_secs(args.timeout);
    let settings = settings(&layout.etcd_url(), Duration::from_secs(2));
    let prefix = keys::prefix(NAMESPACE, SCOPE);
    let mut client = None;
    let mut last_progress = String::new();
    let mut last_report = None;
    say!(
        "Waiting up to {} s for {} healthy member(s)...",
        args.timeout,
        layout.members
    );
    loop {
        if let Some((name, status)) = started.exited() {
            let log = if name == "etcd" {
                layout.etcd_log()
            } else {
                layout.dir.join(&name).join("pgpilot.log")
            };
            return Err(DemoError::failure(format!(
                "{name} exited ({status}); last lines of {}:\n{}\n\n{}",
                log.display(),
                procs::tail(&log, 20),
                left_running(layout, exe)
            )));
        }
        if client.is_none() {
            client = connect(&settings).await.ok();
        }
        if let Some(c) = &client {
            match load_view(c, &prefix).await {
                Ok(view) => {
                    let report = crate::api::cluster::report(&view, SCOPE);
                    let line = progress(&report, layout);
                    if line != last_progress {
                        say!("  {:5.1}s  {line}", started_at.elapsed().as_secs_f64());
                        last_progress = line;
                    }
                    if is_healthy(&report, layout) {
                        print_success(layout, exe, &report, started_at.elapsed(), etcd_ready);
                        return Ok(());
                    }
                    last_report = Some(report);
                }
                Err(e) => {
                    if e.is_transient() {
                        client = None;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            let mut message = format!(
                "the cluster was not healthy within {} s (one leader running, the other \
                 members streaming)",
                args.timeout
            );
            if let Some(report) = &last_report {
                let _ = write!(message, "; last seen:\n{}", render(report, Format::Pretty));
            }
            let _ = write!(
                message,
                "\nLogs: {}/pg*/pgpilot.log (sidecars), {}/pg*/data.log (PostgreSQL), {}\n\n{}",
                layout.dir.display(),
                layout.dir.display(),
                layout.etcd_log().display(),
                left_running(layout, exe)
            );
            return Err(DemoError::failure(message));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn left_running(layout: &Layout, exe: &Path) -> String {
    format!(
        "The demo is left running for inspection; stop it with:\n  {} demo down --dir {}",
        exe.display(),
        layout.dir.display()
    )
}

fn print_success(
    layout: &Layout,
    exe: &Path,
    report: &ClusterReport,
    took: Duration,
    etcd_ready: Duration,
) {
    let config = Config::load(&layout.config_path(1)).ok();
    let password = config
        .as_ref()
        .map(|c| c.postgresql.authentication.superuser.password.clone())
        .unwrap_or_else(|| format!("(see {})", layout.config_path(1).display()));
    let leader = report
        .members
        .iter()
        .find(|m| m.role == "leader")
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let dir = layout.dir.display();
    let exe = exe.display();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nThe cluster is healthy: {} member(s) in {:.1} s (etcd answered after {:.1} s).\n",
        layout.members,
        took.as_secs_f64(),
        etcd_ready.as_secs_f64()
    );
    out.push_str(&render(report, Format::Pretty));
    let _ = writeln!(out, "\nPostgreSQL (user {SUPERUSER}, password {password}):");
    for n in layout.numbers() {
        let name = layout.name(n);
        let role = if name == leader {
            "  (leader, read-write)"
        } else {
            "  (replica, read-only)"
        };
        let _ = writeln!(
            out,
            "  {name}: PGPASSWORD={password} psql -h 127.0.0.1 -p {} -U {SUPERUSER} postgres{role}",
            layout.pg_port(n)
        );
    }
    let _ = writeln!(out, "\nREST API (Patroni-compatible):");
    for n in layout.numbers() {
        let _ = writeln!(
            out,
            "  {}: http://127.0.0.1:{}/patroni   (also /cluster, /health, /primary, /replica, ...)",
            layout.name(n),
            layout.api_port(n)
        );
    }
    let leader_config = layout
        .numbers()
        .find(|&n| layout.name(n) == leader)
        .map(|n| layout.config_path(n))
        .unwrap_or_else(|| layout.config_path(1));
    let config = leader_config.display();
    let _ = writeln!(
        out,
        "\nBackups (posix repository {}, WAL archiving on):\n  \
         {exe} backup -c {config}                     take a full backup (--type incr: incremental)\n  \
         {exe} info -c {config}                       list the backups and the archived WAL\n  \
         {exe} restore -c {config} --data-dir {dir}/restored   restore the latest backup into a new directory\n  \
         (docs/backup.md: point-in-time targets, expire, verify, check)",
        layout.repo_dir().display()
    );
    let _ = writeln!(
        out,
        "\netcd: {} (keys under {})",
        layout.etcd_url(),
        keys::prefix(NAMESPACE, SCOPE)
    );
    let _ = writeln!(
        out,
        "Logs: {dir}/pgN/pgpilot.log (sidecar), {dir}/pgN/data.log (PostgreSQL), {dir}/etcd.log"
    );
    let _ = writeln!(
        out,
        "\nList the members:  {exe} ctl -c {} list",
        layout.config_path(1).display()
    );
    let _ = writeln!(
        out,
        "Stop the demo:     {exe} demo down --dir {dir}   (add --clean to remove {dir})"
    );
    {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::MemberReport;

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/tmp/pgpilot-demo test"),
            base_port: 7100,
            members: 3,
        }
    }

    #[test]
    fn member_files_are_valid_and_use_the_layout() {
        let passwords = Passwords::generate().unwrap();
        let l = layout();
        let text = member_config(&l, 2, Path::new("/usr/lib/postgresql/15/bin"), &passwords);
        let config = Config::parse(&text, Path::new("pg2.toml")).unwrap();
        assert_eq!(config.cluster.name, "pg2");
        assert_eq!(config.cluster.scope, SCOPE);
        assert_eq!(config.dcs.endpoints, vec!["http://127.0.0.1:7100"]);
        assert_eq!(config.postgresql.port, 7112);
        assert_eq!(config.postgresql.connect_address, "127.0.0.1:7112");
        assert_eq!(config.api.listen.port(), 7122);
        assert_eq!(config.postgresql.data_dir, l.data_dir(2));
        assert_eq!(config.postgresql.socket_dir, l.member_dir(2));
        assert_eq!(
            config.postgresql.authentication.superuser.password,
            passwords.superuser
        );
        assert_eq!(
            (
                config.bootstrap.ttl,
                config.bootstrap.loop_wait,
                config.bootstrap.retry_timeout
            ),
            (10, 1, 3)
        );
        let backup = config.backup.expect("a demo member archives WAL");
        assert_eq!(backup.posix.expect("posix repository").path, l.repo_dir());
    }

    #[test]
    fn passwords_are_random_letters_and_digits() {
        let a = random_password(20).unwrap();
        let b = random_password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn quoting_survives_odd_paths() {
        let value: toml::Value = toml::from_str(&format!("k = {}", quote("a\"b\\c\nd"))).unwrap();
        assert_eq!(value["k"].as_str(), Some("a\"b\\c\nd"));
    }

    fn m(name: &str, role: &str, state: &str) -> MemberReport {
        MemberReport {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            api_url: String::new(),
            host: "127.0.0.1".into(),
            port: None,
            timeline: Some(1),
            lag: None,
            tags: Default::default(),
            pending_restart: false,
        }
    }

    fn report(members: Vec<MemberReport>) -> ClusterReport {
        ClusterReport {
            members,
            scope: SCOPE.into(),
            system_id: None,
            pause: false,
            scheduled_switchover: None,
        }
    }

    #[test]
    fn health_needs_one_running_leader_and_streaming_replicas() {
        let l = layout();
        let healthy = report(vec![
            m("pg1", "replica", "streaming"),
            m("pg2", "leader", "running"),
            m("pg3", "replica", "streaming"),
        ]);
        assert!(is_healthy(&healthy, &l));
        let mut missing = healthy.clone();
        missing.members.pop();
        assert!(!is_healthy(&missing, &l));
        let mut cloning = healthy.clone();
        cloning.members[2].state = "creating replica".into();
        assert!(!is_healthy(&cloning, &l));
        let mut leaderless = healthy.clone();
        leaderless.members[1].role = "replica".into();
        assert!(!is_healthy(&leaderless, &l));
        assert_eq!(
            progress(&missing, &l),
            "pg1 replica streaming | pg2 leader running | pg3 -"
        );
    }
}
