//! The PostgreSQL exporter of this member, as `[metrics]` configures it,
//! and the login it monitors with. The shared state builds it at start
//! and after a reload; it needs nothing of the state itself.

use std::time::Duration;

use pgpilot_exporters::{Exporter, ExporterOptions, PostgresOptions};

use crate::config::Config;

/// The role and password the monitoring connection logs in with:
/// `metrics.username`'s, else the superuser's.
pub fn monitoring_login(config: &Config) -> (String, String) {
    match (&config.metrics.username, &config.metrics.password) {
        (Some(user), Some(password)) => (user.clone(), password.clone()),
        _ => {
            let su = &config.postgresql.authentication.superuser;
            (su.username.clone(), su.password.clone())
        }
    }
}

/// The exporter for this member: PostgreSQL over the local socket, as the
/// monitoring role. No I/O until the first scrape.
pub fn exporter(config: &Config) -> Exporter {
    let section = &config.metrics;
    let mut connection = crate::postgres::probe::local_conninfo(config, &section.database);
    if let (Some(user), Some(password)) = (&section.username, &section.password) {
        connection.user(user).password(password);
    }
    connection.application_name("pgpilot-metrics");
    let mut postgres = PostgresOptions::new(connection);
    postgres.all_databases = section.all_databases;
    postgres.max_databases = section.max_databases;
    postgres.max_tables_per_database = section.max_tables_per_database;
    postgres.max_series = section.max_series;
    postgres.table_stats_interval = Duration::from_secs(section.table_stats_interval);
    postgres.keep_database_sessions = section.keep_database_sessions;
    postgres.statement_timeout = Duration::from_millis(section.statement_timeout_ms);
    postgres.scrape_timeout = Duration::from_millis(section.scrape_timeout_ms);
    Exporter::new(ExporterOptions {
        postgres: Some(postgres),
    })
}
