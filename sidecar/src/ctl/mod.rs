//! `pgpilot ctl`: operator commands, read from etcd directly or sent to a member's REST API.
//!
//! Which cluster: either a member's configuration file (`-c FILE` or
//! `PGPILOT_CONFIG`), whose `[dcs]` and `[cluster]` sections say where etcd
//! is and what the cluster is called, or `--etcd URL --scope NAME`
//! (`--namespace` defaults to `pgpilot`).

mod config;
mod diff;
mod history;
pub(crate) mod list;
mod member;
mod rest;
mod switchover;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, DcsTls};
use crate::dcs::etcd::{connect, load_view, EtcdSettings};
use crate::dcs::{keys, DcsError};
use crate::exit;
use crate::tls::ClientTls;

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "PGPILOT_CONFIG";

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// A member's configuration file: etcd endpoints, credentials, TLS,
    /// namespace and scope are taken from it [env: PGPILOT_CONFIG].
    #[arg(
        short,
        long,
        value_name = "FILE",
        global = true,
        conflicts_with = "etcd"
    )]
    pub config: Option<PathBuf>,

    /// etcd client URL (repeat for several endpoints); use with --scope.
    #[arg(long = "etcd", value_name = "URL", global = true)]
    pub etcd: Vec<String>,

    /// Cluster name (overrides the file's cluster.scope).
    #[arg(long, value_name = "NAME", global = true)]
    pub scope: Option<String>,

    /// Top-level etcd key prefix (overrides the file's cluster.namespace) [default: pgpilot].
    #[arg(long, value_name = "NAME", global = true)]
    pub namespace: Option<String>,

    /// With --etcd: PEM bundle of the CA that signed etcd's certificates.
    #[arg(long, value_name = "FILE", global = true, requires = "etcd")]
    pub cacert: Option<PathBuf>,

    /// With --etcd: client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, value_name = "FILE", global = true, requires_all = ["etcd", "key"])]
    pub cert: Option<PathBuf>,

    /// With --etcd: client private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", global = true, requires_all = ["etcd", "cert"])]
    pub key: Option<PathBuf>,

    /// With --etcd: etcd user as NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD", global = true, requires = "etcd")]
    pub user: Option<String>,

    /// How to reach the members' REST API.
    #[command(flatten)]
    pub api: Box<ApiFlags>,

    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Options for the members' REST API (switchover, pause, restart, ...).
#[derive(clap::Args, Debug, Default)]
pub struct ApiFlags {
    /// Credentials for the members' REST API (POST, PUT, PATCH, DELETE)
    /// [default: the file's api.username and api.password].
    #[arg(long = "api-user", value_name = "USER:PASSWORD", global = true)]
    pub api_user: Option<String>,

    /// CA bundle (PEM) for the members' https API [default: the file's
    /// api.tls.ca_file, else the system's roots].
    #[arg(long = "api-cacert", value_name = "FILE", global = true)]
    pub api_cacert: Option<PathBuf>,

    /// Client certificate (PEM) for the members' API, with --api-key
    /// [default: the file's api.tls.cert_file].
    #[arg(
        long = "api-cert",
        value_name = "FILE",
        global = true,
        requires = "api_key"
    )]
    pub api_cert: Option<PathBuf>,

    /// Client private key (PEM) for --api-cert.
    #[arg(
        long = "api-key",
        value_name = "FILE",
        global = true,
        requires = "api_cert"
    )]
    pub api_key: Option<PathBuf>,

    /// Do not verify the certificates of the members' https API.
    #[arg(short = 'k', long, global = true)]
    pub insecure: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Show the members of the cluster: host, role, state, timeline and lag.
    List(list::ListArgs),
    /// Hand the leadership over to a replica (planned, no data loss), now or at a set time.
    Switchover(Box<switchover::SwitchoverArgs>),
    /// Make a named member the leader, also when there is no leader.
    Failover(switchover::FailoverArgs),
    /// Maintenance mode: nothing is started, stopped, promoted or demoted automatically.
    Pause(config::PauseArgs),
    /// Leave maintenance mode.
    Resume(config::PauseArgs),
    /// Print the cluster-wide configuration (the etcd `config` key).
    ShowConfig(config::ShowConfigArgs),
    /// Change the cluster-wide configuration: shows the change, then applies it.
    EditConfig(Box<config::EditConfigArgs>),
    /// Show the timeline history: every promotion with its LSN and reason.
    History(history::HistoryArgs),
    /// Restart PostgreSQL on members (replicas first, the leader last).
    Restart(Box<member::RestartArgs>),
    /// Re-render postgresql.conf and reload PostgreSQL on members.
    Reload(Box<member::ReloadArgs>),
    /// Throw away a replica's data directory and clone it again from the leader.
    Reinit(Box<member::ReinitArgs>),
}

/// A failure of a ctl command: what to print and the exit code.
#[derive(Debug)]
pub struct CtlError {
    pub code: i32,
    pub message: String,
}

impl CtlError {
    /// Bad arguments or configuration (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CtlError {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// Something failed at run time (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        CtlError {
            code: exit::FAILURE,
            message: message.into(),
        }
    }

    /// A store error while talking to `endpoints`: refusals (credentials,
    /// TLS files, malformed URLs) are configuration problems, the rest are
    /// run-time failures.
    fn from_dcs(error: DcsError, endpoints: &[String]) -> Self {
        let message = format!("etcd at {}: {error}", endpoints.join(", "));
        match error {
            DcsError::Refused(_) => CtlError::usage(message),
            DcsError::Unavailable(_) | DcsError::Corrupt { .. } => CtlError::failure(message),
        }
    }
}

/// How to reach the members' REST API.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    pub tls: ClientTls,
    /// HTTP Basic credentials for unsafe methods.
    pub credentials: Option<(String, String)>,
}

/// Where the cluster lives: resolved from the file or the flags.
#[derive(Debug, Clone)]
pub struct Target {
    pub settings: EtcdSettings,
    pub namespace: String,
    pub scope: String,
    pub api: ApiAccess,
}

impl Target {
    /// `/<namespace>/<scope>/`
    pub fn prefix(&self) -> String {
        keys::prefix(&self.namespace, &self.scope)
    }

    /// The etcd settings and cluster of a member's configuration.
    pub fn from_config(config: &Config) -> Target {
        Target {
            settings: EtcdSettings::from_section(&config.dcs, request_timeout()),
            namespace: config.cluster.namespace.clone(),
            scope: config.cluster.scope.clone(),
            api: ApiAccess {
                tls: ClientTls::for_member(config),
                credentials: config.api.username.clone().zip(config.api.password.clone()),
            },
        }
    }
}

fn request_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Names go into etcd keys: the same rule as cluster.scope in the file.
fn check_name(flag: &str, value: &str) -> Result<(), CtlError> {
    let plain = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if plain {
        Ok(())
    } else {
        Err(CtlError::usage(format!(
            "{flag} {value:?}: use 1 to 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn check_endpoint(url: &str) -> Result<(), CtlError> {
    let bad = |why: &str| CtlError::usage(format!("--etcd {url:?}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| bad("must be http(s)://host:port"))?;
    if host.is_empty() {
        return Err(bad("has an empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("has an invalid port")),
    }
}

/// Resolve the target cluster from the arguments (and `PGPILOT_CONFIG`).
pub fn resolve(args: &CtlArgs) -> Result<Target, CtlError> {
    // The environment only stands in for -c when no --etcd was given, so an
    // exported PGPILOT_CONFIG never gets in the way of explicit flags.
    let config_path = args.config.clone().or_else(|| {
        if args.etcd.is_empty() {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        } else {
            None
        }
    });
    let mut target = match config_path {
        Some(path) => {
            let config = Config::load(&path).map_err(|e| CtlError::usage(e.to_string()))?;
            Target::from_config(&config)
        }
        None => {
            if args.etcd.is_empty() {
                return Err(CtlError::usage(
                    "which cluster? give --config FILE (or set PGPILOT_CONFIG), \
                     or --etcd URL and --scope NAME",
                ));
            }
            let Some(scope) = args.scope.clone() else {
                return Err(CtlError::usage(
                    "--etcd needs --scope NAME (the cluster's name)",
                ));
            };
            for url in &args.etcd {
                check_endpoint(url)?;
            }
            let (username, password) = match &args.user {
                Some(user) => match user.split_once(':') {
                    Some((name, password)) if !name.is_empty() => {
                        (Some(name.to_string()), Some(password.to_string()))
                    }
                    _ => return Err(CtlError::usage("--user must be NAME:PASSWORD")),
                },
                None => (None, None),
            };
            let https = args.etcd.iter().any(|u| u.starts_with("https://"));
            let tls = match (&args.cacert, https) {
                (Some(ca), _) => Some(DcsTls {
                    ca_file: ca.clone(),
                    cert_file: args.cert.clone(),
                    key_file: args.key.clone(),
                    domain: None,
                }),
                (None, true) => {
                    return Err(CtlError::usage("https endpoints need --cacert FILE"));
                }
                (None, false) => None,
            };
            Target {
                settings: EtcdSettings {
                    endpoints: args.etcd.clone(),
                    username,
                    password,
                    tls,
                    connect_timeout: Duration::from_secs(5),
                    request_timeout: request_timeout(),
                },
                namespace: "pgpilot".to_string(),
                scope,
                api: ApiAccess::default(),
            }
        }
    };
    if let Some(user) = &args.api.api_user {
        target.api.credentials = match user.split_once(':') {
            Some((name, password)) if !name.is_empty() => {
                Some((name.to_string(), password.to_string()))
            }
            _ => return Err(CtlError::usage("--api-user must be USER:PASSWORD")),
        };
    }
    if let Some(ca) = &args.api.api_cacert {
        target.api.tls.ca_file = Some(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.api.api_cert, &args.api.api_key) {
        target.api.tls.cert_file = Some(cert.clone());
        target.api.tls.key_file = Some(key.clone());
    }
    target.api.tls.insecure = args.api.insecure;
    if let Some(scope) = &args.scope {
        target.scope = scope.clone();
    }
    if let Some(namespace) = &args.namespace {
        target.namespace = namespace.clone();
    }
    check_name("--scope", &target.scope)?;
    check_name("--namespace", &target.namespace)?;
    Ok(target)
}

/// One linearizable read of the cluster from etcd, with the client for
/// further requests.
pub async fn fetch_view(
    target: &Target,
) -> Result<(etcd_client::Client, crate::cluster::ClusterView), CtlError> {
    read_view(target)
        .await
        .map_err(|e| CtlError::from_dcs(e, &target.settings.endpoints))
}

/// Read the cluster's report from etcd, as `GET /cluster` builds it.
pub async fn fetch_report(target: &Target) -> Result<crate::api::cluster::ClusterReport, CtlError> {
    let (_, view) = fetch_view(target).await?;
    Ok(crate::api::cluster::report(&view, &target.scope))
}

/// The view through a client over every endpoint; when that fails for want
/// of an answer, through each endpoint alone, in order. The balanced client
/// sends a call to a member that is down (a unit removed, an etcd
/// restarting) and fails although the others answer; a one-shot command
/// must not fail for that.
async fn read_view(
    target: &Target,
) -> Result<(etcd_client::Client, crate::cluster::ClusterView), DcsError> {
    let prefix = target.prefix();
    let once = |settings: EtcdSettings| {
        let prefix = prefix.clone();
        async move {
            let client = connect(&settings).await?;
            let view = load_view(&client, &prefix).await?;
            Ok::<_, DcsError>((client, view))
        }
    };
    let all = &target.settings;
    let first = match once(all.clone()).await {
        Err(e) if e.is_transient() && all.endpoints.len() > 1 => e,
        done => return done,
    };
    for endpoint in &all.endpoints {
        let alone = EtcdSettings {
            endpoints: vec![endpoint.clone()],
            ..all.clone()
        };
        match once(alone).await {
            Err(e) if e.is_transient() => continue,
            done => return done,
        }
    }
    Err(first)
}

/// Entry point of `pgpilot ctl` on the runtime the binary made (one
/// thread: ctl does one thing at a time); returns the process exit code.
pub fn main(args: CtlArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    match runtime.block_on(run(&args)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("pgpilot ctl: {}", e.message);
            e.code
        }
    }
}

async fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let target = resolve(args)?;
    match &args.command {
        CtlCommand::List(list_args) => list::run(&target, list_args).await,
        CtlCommand::Switchover(a) => switchover::run_switchover(&target, a).await,
        CtlCommand::Failover(a) => switchover::run_failover(&target, a).await,
        CtlCommand::Pause(a) => config::run_pause(&target, a, true).await,
        CtlCommand::Resume(a) => config::run_pause(&target, a, false).await,
        CtlCommand::ShowConfig(a) => config::run_show(&target, a).await,
        CtlCommand::EditConfig(a) => config::run_edit(&target, a).await,
        CtlCommand::History(a) => history::run(&target, a).await,
        CtlCommand::Restart(a) => member::run_restart(&target, a).await,
        CtlCommand::Reload(a) => member::run_reload(&target, a).await,
        CtlCommand::Reinit(a) => member::run_reinit(&target, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let mut argv = vec!["ctl"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.ctl)
    }

    #[test]
    fn flags_give_a_target() {
        let args = parse(&["--etcd", "http://127.0.0.1:2379", "--scope", "demo", "list"]).unwrap();
        let t = resolve(&args).unwrap();
        assert_eq!(t.prefix(), "/pgpilot/demo/");
        assert_eq!(t.settings.endpoints, vec!["http://127.0.0.1:2379"]);
    }

    #[test]
    fn global_flags_may_follow_the_subcommand() {
        let args = parse(&[
            "list",
            "--etcd",
            "http://127.0.0.1:2379",
            "--scope",
            "demo",
            "--namespace",
            "db",
        ])
        .unwrap();
        assert_eq!(resolve(&args).unwrap().prefix(), "/db/demo/");
    }

    #[test]
    fn missing_scope_is_a_usage_error() {
        let args = parse(&["--etcd", "http://127.0.0.1:2379", "list"]).unwrap();
        assert_eq!(resolve(&args).unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn bad_url_is_a_usage_error() {
        let args = parse(&["--etcd", "127.0.0.1:2379", "--scope", "demo", "list"]).unwrap();
        let e = resolve(&args).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.message.contains("http://"), "{}", e.message);
    }

    #[test]
    fn config_and_etcd_conflict() {
        assert!(parse(&["-c", "x.toml", "--etcd", "http://h:1", "list"]).is_err());
    }

    #[test]
    fn unreadable_config_is_a_usage_error() {
        let args = parse(&["-c", "/nonexistent/pgpilot.toml", "list"]).unwrap();
        let e = resolve(&args).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(
            e.message.contains("/nonexistent/pgpilot.toml"),
            "{}",
            e.message
        );
    }

    #[test]
    fn api_flags_give_credentials_and_tls() {
        let args = parse(&[
            "--etcd",
            "http://127.0.0.1:2379",
            "--scope",
            "demo",
            "switchover",
            "--candidate",
            "m2",
            "--force",
            "--api-user",
            "admin:pw:x",
            "-k",
        ])
        .unwrap();
        let t = resolve(&args).unwrap();
        assert_eq!(
            t.api.credentials,
            Some(("admin".to_string(), "pw:x".to_string()))
        );
        assert!(t.api.tls.insecure);
        let args = parse(&[
            "--etcd",
            "http://127.0.0.1:2379",
            "--scope",
            "demo",
            "pause",
            "--api-user",
            "admin",
        ])
        .unwrap();
        assert_eq!(resolve(&args).unwrap_err().code, exit::USAGE);
        assert!(parse(&[
            "--etcd",
            "http://h:1",
            "--scope",
            "d",
            "--api-cert",
            "c.pem",
            "list"
        ])
        .is_err());
    }

    #[test]
    fn verbs_parse() {
        let base = ["--etcd", "http://h:1", "--scope", "d"];
        let ok = |rest: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(rest);
            parse(&argv).map(|_| ()).map_err(|e| e.to_string())
        };
        ok(&["failover", "--candidate", "m2"]).unwrap();
        assert!(ok(&["failover"]).is_err(), "failover needs --candidate");
        ok(&[
            "edit-config",
            "-s",
            "ttl=30",
            "-p",
            "work_mem=8MB",
            "--force",
        ])
        .unwrap();
        ok(&["show-config", "--format", "json"]).unwrap();
        ok(&[
            "restart",
            "m1",
            "m2",
            "--role",
            "replica",
            "--pending",
            "--force",
        ])
        .unwrap();
        ok(&["restart", "--role", "leader"]).unwrap();
        assert!(ok(&["reinit"]).is_err(), "reinit needs a member");
        ok(&["reinit", "m2", "--wait", "--force"]).unwrap();
        ok(&["history", "-f", "json"]).unwrap();
        ok(&["pause", "--wait"]).unwrap();
        ok(&["switchover", "--primary", "m1", "--scheduled", "now"]).unwrap();
    }

    #[test]
    fn config_file_gives_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, crate::config::tests_support::EXAMPLE).unwrap();
        let args = parse(&["-c", path.to_str().unwrap(), "list"]).unwrap();
        let t = resolve(&args).unwrap();
        assert_eq!(t.prefix(), "/pgpilot/demo/");
        assert_eq!(t.settings.endpoints, vec!["http://127.0.0.1:2379"]);
    }
}
