//! `GET /metrics`: always 200 with the text exposition; whatever fails
//! shows in the metrics themselves (`pg_up 0`, `pgbackrest_exporter_status 0`).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::dcs::Dcs;

pub async fn metrics<D: Dcs>(State(state): State<ApiState<D>>) -> Response {
    let shared = &state.shared;
    let status = state.node_status().await;
    let ha = crate::metrics::ha_input(shared, &status);
    let backup = shared.repo_watch.as_ref().and_then(|watch| {
        let config = shared.config();
        let stanza = config
            .backup
            .as_ref()
            .map(|b| b.stanza(&config.cluster.scope))?;
        let mut input = crate::metrics::backup_input(stanza, &watch.state())?;
        input.archive = shared
            .archive_ahead
            .get()
            .map(|ahead| crate::metrics::archive_stats(&ahead.snapshot()));
        Some(input)
    });
    let body = shared.exporter().render(Some(&ha), backup.as_ref()).await;
    ([(CONTENT_TYPE, pgpilot_exporters::CONTENT_TYPE)], body).into_response()
}
