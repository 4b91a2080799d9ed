//! `pgpilot run`: load the configuration, check the preconditions, then run
//! the lease keeper, the REST API and the HA loop until SIGTERM/SIGINT.
//! SIGHUP re-reads the member file ([`crate::ha::reload`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, LiveConfig};
use crate::dcs::etcd::{EtcdDcs, EtcdSettings};
use crate::dcs::Dcs;
use crate::exit;
use crate::postgres::Postgres;
use crate::state::Shared;

/// Entry point of `pgpilot run` on the runtime the binary made; returns
/// the process exit code.
pub fn main(config_path: &Path, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgpilot: {e}");
            return exit::USAGE;
        }
    };
    let log_file = match &config.log.file {
        None => None,
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!("pgpilot: cannot open log.file {}: {e}", path.display());
                return exit::USAGE;
            }
        },
    };
    crate::logging::set_up_with_file(&config.log.level, config.log.json, log_file);
    runtime.block_on(run(Arc::new(config)))
}

/// Connections the kernel queues for a listener before pgpilot accepts them.
/// tokio's `bind` keeps std's 128: a burst of 200 connections (a monitoring
/// system, a load balancer's checks) made some wait a second for a SYN retry.
const LISTEN_BACKLOG: u32 = 1024;

/// A TCP listener on `address` with [`LISTEN_BACKLOG`].
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A start-up failure: message and exit code.
struct StartError(i32, String);

async fn run(config: Arc<Config>) -> i32 {
    match start(config).await {
        Ok(code) => code,
        Err(StartError(code, message)) => {
            // Once: the log goes to stderr already (and to log.file when set).
            tracing::error!("{message}");
            code
        }
    }
}

async fn start(config: Arc<Config>) -> Result<i32, StartError> {
    let usage = |m: String| StartError(exit::USAGE, m);
    // Before anything can tell others our pid: a SIGHUP must never find
    // the default action (which ends the process, and PostgreSQL with it).
    let mut signals = Signals::new().map_err(|e| {
        StartError(
            exit::FAILURE,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let pid_file = match crate::pidfile::hold(&config.pid_file()) {
        Ok(held) => Some(held),
        Err(e) => {
            tracing::warn!("no pid file: {e} (the snap's configure hook then restarts pgpilot instead of reloading it)");
            None
        }
    };
    let live = Arc::new(LiveConfig::new(config.clone()));
    let postgres = Postgres::new(live.clone()).map_err(|e| usage(e.to_string()))?;
    postgres
        .check_binaries()
        .map_err(|e| usage(e.to_string()))?;
    if !postgres.is_running() {
        postgres
            .check_data_dir()
            .map_err(|e| usage(e.to_string()))?;
    }
    let postgres = Arc::new(postgres);

    let dynamic = &config.bootstrap;
    let settings = EtcdSettings::from_section(&config.dcs, dynamic.retry_timeout());
    let dcs = EtcdDcs::connect(
        &settings,
        &config.cluster.namespace,
        &config.cluster.scope,
        &config.cluster.name,
        dynamic.ttl(),
    )
    .await
    .map_err(|e| {
        usage(format!(
            "cannot reach etcd at {}: {e}; check dcs.endpoints and that etcd runs",
            config.dcs.endpoints.join(", ")
        ))
    })?;
    // The lease TTL follows the cluster's ttl when the cluster already has one.
    let view = dcs
        .load()
        .await
        .map_err(|e| usage(format!("cannot read the cluster from etcd: {e}")))?;
    let mut dcs = dcs;
    if let Some(cluster) = &view.config {
        dcs.set_ttl(cluster.ttl());
    }
    refuse_duplicate(&dcs, &view, &config).await?;

    let listener = listen(config.api.listen).map_err(|e| {
        usage(format!(
            "cannot listen on {} (api.listen): {e}",
            config.api.listen
        ))
    })?;

    let metrics_listener = match config.metrics.listen.filter(|_| config.metrics.enabled) {
        Some(address) => Some(
            listen(address)
                .map_err(|e| usage(format!("cannot listen on {address} (metrics.listen): {e}")))?,
        ),
        None => None,
    };

    let shared = Shared::new(live, postgres);
    shared.update(|s| {
        s.view = view.clone();
        if let Some(d) = &view.config {
            s.dynamic = d.clone();
        }
    });
    let dcs = Arc::new(dcs);
    tracing::info!(
        member = %config.cluster.name,
        scope = %config.cluster.scope,
        api = %config.api.listen,
        "pgpilot {} starting",
        crate::VERSION
    );

    let (stop_ha, ha_stop_rx) = watch::channel(false);
    let (stop_rest, rest_stop_rx) = watch::channel(false);
    let lease_task = tokio::spawn(crate::ha::lease::keep_lease(
        dcs.clone(),
        shared.clone(),
        rest_stop_rx.clone(),
    ));
    let fence_task = tokio::spawn(crate::ha::fence::guard(
        shared.clone(),
        rest_stop_rx.clone(),
    ));
    // Async WAL archiving: the push-ahead worker (its status is for metrics).
    let (ahead_status, ahead_task) =
        crate::archive::ahead::start(config.clone(), rest_stop_rx.clone()).unzip();
    if let Some(status) = ahead_status {
        let _ = shared.archive_ahead.set(status);
    }
    // The backup repository's summary for /metrics, read in the background.
    if let (Some(repo), Some(section)) = (shared.repo_watch.clone(), config.backup.clone()) {
        let path = config.source.clone().unwrap_or_default();
        match crate::backup::Context::with((*config).clone(), section, &path) {
            Ok(context) => {
                tokio::spawn(crate::backup::command::watch::keep_watching(
                    context,
                    repo,
                    rest_stop_rx.clone(),
                ));
            }
            Err(e) => tracing::warn!(error = %e, "backup metrics off: cannot open the repository"),
        }
    }
    let api_task = tokio::spawn(crate::api::serve(
        listener,
        metrics_listener,
        shared.clone(),
        dcs.clone(),
        rest_stop_rx,
    ));
    let ha = crate::ha::Ha::new(dcs.clone(), shared.clone());
    let mut ha_task = tokio::spawn(ha.run(ha_stop_rx));

    let outcome = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Received::Hangup => {
                    tracing::info!("received SIGHUP: re-reading the member file");
                    // Logged there, whatever the outcome.
                    let _ = crate::ha::reload::member_file(&shared);
                }
                Received::Stop(name) => {
                    tracing::info!("received {name}: stopping");
                    let _ = stop_ha.send(true);
                    break (&mut ha_task).await;
                }
            },
            result = &mut ha_task => break result,
        }
    };
    // The lease and the API live until the HA loop has handed over.
    let _ = stop_rest.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), fence_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    if let Some(task) = ahead_task {
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    // An on_stop started by the shutdown (say, one removing a virtual IP)
    // may finish, within callback_timeout.
    shared.callbacks.finish().await;
    drop(pid_file);
    match outcome {
        Ok(Ok(())) => Ok(exit::OK),
        Ok(Err(e)) => Err(StartError(exit::FAILURE, e.to_string())),
        Err(e) => Err(StartError(exit::FAILURE, format!("HA loop crashed: {e}"))),
    }
}

/// The signals `pgpilot run` acts on, handled from start-up on (a signal
/// that comes before the loop is ready waits for it).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

enum Received {
    /// SIGTERM or SIGINT: hand over and stop.
    Stop(&'static str),
    /// SIGHUP: re-read the member file. It never ends the sidecar (and with
    /// it PostgreSQL).
    Hangup,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Hangup,
        }
    }
}

/// Refuse to start when a live member with our name is registered: its
/// REST API answers. A key left by a dead process (API silent) is taken over.
async fn refuse_duplicate(
    dcs: &EtcdDcs,
    view: &crate::cluster::ClusterView,
    config: &Config,
) -> Result<(), StartError> {
    let Some(existing) = view.member(&config.cluster.name) else {
        return Ok(());
    };
    let _ = dcs;
    // The same client members use for each other: it speaks TLS when the API does.
    let http = crate::client::ApiClient::for_member(config)
        .map_err(|e| StartError(exit::USAGE, e))?
        .with_timeout(Duration::from_secs(2));
    let liveness = format!(
        "{}/liveness",
        crate::client::base_url(&existing.status.api_url)
    );
    if let Ok(reply) = http.request(axum::http::Method::GET, &liveness, None).await {
        if reply.is_success() || reply.status == 503 {
            return Err(StartError(
                exit::USAGE,
                format!(
                    "can't start: there is already a member named {:?} running in cluster {:?} (its API {} answers); \
                     give this member another cluster.name",
                    config.cluster.name, config.cluster.scope, existing.status.api_url
                ),
            ));
        }
    }
    tracing::warn!(member = %config.cluster.name, "taking over the member key of a previous run that no longer answers");
    Ok(())
}
