//! `/patroni` (member status), `/history` and `/config`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{json_or_status, ApiState};
use crate::dcs::Dcs;

/// The member status, always 200.
pub async fn patroni<D: Dcs>(State(state): State<ApiState<D>>, method: Method) -> Response {
    let status = state.node_status().await;
    let mut body = serde_json::to_value(&status).expect("the status serializes");
    // A scheduled restart, as Patroni shows it: its time and conditions.
    if let Some(scheduled) = state.shared.scheduled_restart().as_ref() {
        let mut shown = scheduled.conditions.clone();
        shown.insert(
            "schedule".into(),
            crate::timestamp::format_timestamp(scheduled.at).into(),
        );
        body["scheduled_restart"] = serde_json::Value::Object(shown);
    }
    json_or_status(&method, StatusCode::OK, &body)
}

/// Timeline history as `[[timeline, lsn, reason, timestamp, new_leader], ...]`.
pub async fn history<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    let view = super::cluster::fresh_view(&state).await;
    axum::Json(view.history).into_response()
}

/// The cluster-wide configuration; 502 when the store has none yet.
pub async fn config<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    match super::cluster::fresh_view(&state).await.config {
        Some(config) => axum::Json(config).into_response(),
        None => (
            StatusCode::BAD_GATEWAY,
            "the cluster has no configuration in etcd yet (not bootstrapped)\n",
        )
            .into_response(),
    }
}
