//! Re-reading the member file while pgpilot runs (`SIGHUP`, `POST /reload`).
//!
//! The file is read and validated by the same code as at start
//! ([`Config::load`]) and compared with the configuration in force
//! ([`crate::config::reload::plan`]). The credentials and callbacks it
//! changes are put in force at once, whole ([`Shared::apply_reload`]); the
//! other keys that differ are named in a warning and keep their running
//! values until pgpilot restarts. An invalid file changes nothing.
//!
//! PostgreSQL follows at the HA loop's next cycle, woken at once: the
//! leader gives the roles their new passwords (`ALTER ROLE`,
//! [`crate::postgres::probe::ensure_roles`]); a replica rewrites the
//! password file its primary_conninfo names (`refresh_conf`), which the
//! WAL receiver reads when it next connects. Nothing restarts.

use std::sync::Arc;

use crate::config::reload::{merge, plan, ReloadPlan};
use crate::config::Config;
use crate::state::Shared;

/// Re-read the member file and put its live keys in force. `Err` (already
/// logged): the file cannot be read or is invalid, and nothing changed.
pub fn member_file(shared: &Shared) -> Result<ReloadPlan, String> {
    let running = shared.config();
    let Some(path) = running.source.clone() else {
        return Err("pgpilot was not started from a member file: nothing to re-read".into());
    };
    let file = match Config::load(&path) {
        Ok(file) => file,
        Err(e) => {
            let message = format!(
                "{}; nothing changed: the running configuration stays in force",
                e.redacted()
            );
            tracing::error!("reload of the member file refused: {message}");
            return Err(message);
        }
    };
    let plan = plan(&running, &file);
    if !plan.restart.is_empty() {
        tracing::warn!(
            keys = %plan.restart.join(", "),
            "reload: the member file changes keys that need a restart of pgpilot; \
             they keep their running values until then"
        );
    }
    if plan.live.is_empty() {
        tracing::info!(file = %path.display(), "reload: no credential, callback or TLS setting changed");
        // The same files may hold a renewed certificate.
        refresh_tls(shared, &running);
        return Ok(plan);
    }
    let merged = merge(&running, &file);
    if let Err(invalid) = merged.validate() {
        // Each part was valid; only a combination could be refused here.
        let message = format!(
            "the reloaded values do not fit the running configuration: key `{}`: {}; nothing changed",
            invalid.key,
            if crate::config::is_secret_key(&invalid.key) {
                "is not valid (value not shown: it is a secret)".to_string()
            } else {
                invalid.message
            }
        );
        tracing::error!("reload of the member file refused: {message}");
        return Err(message);
    }
    let merged = Arc::new(merged);
    shared.apply_reload(
        merged.clone(),
        plan.changes_role_passwords(),
        plan.changes_callbacks(),
    );
    refresh_tls(shared, &merged);
    tracing::info!(
        keys = %plan.live.join(", "),
        "reload: applied without a restart"
    );
    Ok(plan)
}

/// Read the TLS files again: the REST API's new connections get the
/// configuration of `config` (TLS on, off, or a renewed certificate), and
/// PostgreSQL is reloaded when it uses TLS (it re-reads `ssl_cert_file` and
/// friends on SIGHUP; turning TLS on or off follows at the HA loop's next
/// cycle, which rewrites postgresql.conf and pg_hba.conf and reloads).
fn refresh_tls(shared: &Shared, config: &Config) {
    if let Some(slot) = shared.api_tls.get() {
        match config
            .api
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
        {
            Ok(tls) => {
                let on = tls.is_some();
                if let Ok(mut current) = slot.write() {
                    if on || current.is_some() {
                        tracing::info!(tls = on, "REST API: TLS configuration re-read");
                    }
                    *current = tls;
                }
            }
            Err(e) => tracing::error!(
                key = %e.key,
                "REST API keeps its TLS configuration: {}",
                e.message
            ),
        }
    }
    if config.postgresql.tls.is_some() {
        match shared.postgres.reload_now() {
            Ok(()) => tracing::info!("PostgreSQL reloaded: it re-reads its TLS files"),
            Err(e) => tracing::warn!(error = %e, "cannot reload PostgreSQL"),
        }
    }
}

/// One line for an operator: what a reload applied and what waits.
pub fn summary(plan: &ReloadPlan) -> String {
    let mut parts = Vec::new();
    if !plan.live.is_empty() {
        parts.push(format!("applied {}", plan.live.join(", ")));
    }
    if !plan.restart.is_empty() {
        parts.push(format!(
            "needs a restart of pgpilot: {}",
            plan.restart.join(", ")
        ));
    }
    if parts.is_empty() {
        "member file unchanged".into()
    } else {
        format!("member file: {}", parts.join("; "))
    }
}
