//! The Patroni-compatible REST API: the router and the server. Each route
//! group lives in its own file; handlers only read the shared snapshot (and
//! the store, with a short timeout), so they answer while the HA loop waits.

pub(crate) mod cluster;
pub mod config;
pub(crate) mod health;
pub(crate) mod info;
pub(crate) mod member;
pub(crate) mod metrics;
pub(crate) mod security;
pub mod switchover;
pub(crate) mod tls;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post, MethodFilter};
use axum::Router;
use tokio::sync::watch;

use crate::dcs::Dcs;
use crate::state::Shared;
use crate::status::NodeStatus;

/// What every handler gets.
pub struct ApiState<D: Dcs> {
    pub shared: Arc<Shared>,
    pub dcs: Arc<D>,
    /// For asking other members (switchover candidates).
    pub client: crate::client::ApiClient,
}

impl<D: Dcs> Clone for ApiState<D> {
    fn clone(&self) -> Self {
        ApiState {
            shared: self.shared.clone(),
            dcs: self.dcs.clone(),
            client: self.client.clone(),
        }
    }
}

impl<D: Dcs> ApiState<D> {
    /// This member's status, with a fresh look at PostgreSQL when it answers quickly.
    pub async fn node_status(&self) -> NodeStatus {
        let mut snap = self.shared.snapshot();
        let pg = &self.shared.postgres;
        let running = pg.is_running();
        let observation = if running {
            match tokio::time::timeout(Duration::from_secs(2), pg.observe()).await {
                Ok(Ok(o)) => Some(o),
                _ => snap.observation.clone(),
            }
        } else {
            None
        };
        if !running && snap.pg_state == crate::cluster::PgState::Running {
            // The postmaster is gone and the loop has not noticed yet: do
            // not report a running primary (or replica) for up to a cycle.
            snap.pg_state = crate::cluster::PgState::Stopped;
        }
        let config = self.shared.config();
        crate::status::build(
            &snap,
            observation.as_ref(),
            &config.cluster.scope,
            &config.cluster.name,
            &config.tags,
            pg.postmaster_start_time().filter(|_| observation.is_some()),
        )
    }
}

/// GET answers with a JSON body; HEAD and OPTIONS with the status alone
/// (what HAProxy's checks send).
pub fn json_or_status(
    method: &Method,
    status: StatusCode,
    body: &impl serde::Serialize,
) -> Response {
    if method == Method::GET {
        (status, axum::Json(body)).into_response()
    } else {
        status.into_response()
    }
}

pub fn router<D: Dcs>(state: ApiState<D>) -> Router {
    let checks = MethodFilter::GET
        .or(MethodFilter::HEAD)
        .or(MethodFilter::OPTIONS);
    let mut router = Router::new();
    for (path, check) in health::ROUTES {
        let check = *check;
        router = router.route(
            path,
            on(
                checks,
                move |State(state): State<ApiState<D>>,
                      method: Method,
                      Query(query): Query<BTreeMap<String, String>>| {
                    health::respond(state, method, query, check)
                },
            ),
        );
    }
    if state.shared.config().metrics.enabled {
        router = router.route("/metrics", get(metrics::metrics::<D>));
    }
    router
        .route("/patroni", on(checks, info::patroni::<D>))
        .route("/cluster", get(cluster::cluster::<D>))
        .route("/history", get(info::history::<D>))
        .route(
            "/config",
            get(info::config::<D>)
                .patch(config::patch::<D>)
                .put(config::put::<D>),
        )
        .route(
            "/switchover",
            post(switchover::post_switchover::<D>).delete(switchover::delete_switchover::<D>),
        )
        .route("/failover", post(switchover::post_failover::<D>))
        .route(
            "/restart",
            post(member::restart::<D>).delete(member::delete_restart::<D>),
        )
        .route("/reload", post(member::reload::<D>))
        .route("/reinitialize", post(member::reinitialize::<D>))
        // Credentials and client certificates for unsafe methods.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard::<D>,
        ))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n") })
        .with_state(state)
}

/// Serve until `shutdown` flips: HTTPS when `[api.tls]` is set, else HTTP;
/// a reload may turn TLS on or off or renew its certificate ([`crate::tls::TlsSlot`]).
/// `metrics_listener` (from `metrics.listen`) serves `/metrics` alone, over HTTP.
pub async fn serve<D: Dcs>(
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shared: Arc<Shared>,
    dcs: Arc<D>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match crate::client::ApiClient::for_member(&shared.config()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "REST API: cannot build the client for other members");
            return;
        }
    };
    let tls = shared.config().api.tls.clone();
    let state = ApiState {
        shared,
        dcs,
        client,
    };
    if let Some(listener) = metrics_listener {
        let app = Router::new()
            .route("/metrics", get(metrics::metrics::<D>))
            .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
            .with_state(state.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await
            {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let app = router(state.clone());
    let stopping = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    // Checked when the configuration was loaded; this only fails if the
    // files changed since.
    let slot = match crate::tls::slot(tls.as_ref()) {
        Ok(slot) => slot,
        Err(e) => {
            tracing::error!(key = %e.key, "REST API not started: {}", e.message);
            return;
        }
    };
    let _ = state.shared.api_tls.set(slot.clone());
    let listener = match tls::ApiListener::new(listener, slot) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "REST API not started");
            return;
        }
    };
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<tls::PeerInfo>(),
    )
    .with_graceful_shutdown(stopping)
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "REST API stopped");
    }
}
