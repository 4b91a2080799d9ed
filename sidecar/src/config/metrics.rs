//! The `[metrics]` section of the member's file: `GET /metrics`, its
//! monitoring connection and its limits ([`crate::metrics`] serves it).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `GET /metrics` on the REST API's port.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Also serve `/metrics` (and nothing else) on this address, e.g.
    /// `"0.0.0.0:9187"`, postgres_exporter's port.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Role of the monitoring connection (the `pg_monitor` role is enough);
    /// default: `postgresql.authentication.superuser`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Database of the main monitoring session.
    #[serde(default = "default_database")]
    pub database: String,
    /// Table statistics of every database (one session each), not only `database`'s.
    #[serde(default = "default_true")]
    pub all_databases: bool,
    /// Databases visited for table statistics, lowest oid first.
    #[serde(default = "default_max_databases")]
    pub max_databases: usize,
    /// Tables per database with statistics, largest first.
    #[serde(default = "default_max_tables")]
    pub max_tables_per_database: usize,
    /// PostgreSQL series per scrape; what is over is dropped and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Seconds between reads of the table statistics of databases other
    /// than `database`; scrapes in between serve the last read.
    #[serde(default = "default_table_stats_interval")]
    pub table_stats_interval: u64,
    /// Hold one session per database between reads (each costs a backend
    /// and its catalog caches) instead of a short session per read.
    #[serde(default)]
    pub keep_database_sessions: bool,
    /// Milliseconds one monitoring statement may run.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Milliseconds a whole scrape's queries may take (keep it under the
    /// scrape timeout of Prometheus, 10 s by default).
    #[serde(default = "default_scrape_timeout_ms")]
    pub scrape_timeout_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_database() -> String {
    "postgres".into()
}
fn default_max_databases() -> usize {
    64
}
fn default_max_tables() -> usize {
    1000
}
fn default_max_series() -> usize {
    100_000
}
fn default_table_stats_interval() -> u64 {
    60
}
fn default_statement_timeout_ms() -> u64 {
    5_000
}
fn default_scrape_timeout_ms() -> u64 {
    8_000
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: None,
            username: None,
            password: None,
            database: default_database(),
            all_databases: true,
            max_databases: default_max_databases(),
            max_tables_per_database: default_max_tables(),
            max_series: default_max_series(),
            table_stats_interval: default_table_stats_interval(),
            keep_database_sessions: false,
            statement_timeout_ms: default_statement_timeout_ms(),
            scrape_timeout_ms: default_scrape_timeout_ms(),
        }
    }
}

impl MetricsSection {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.username.is_some() != self.password.is_some() {
            return Err(Invalid::new(
                "metrics.username",
                "set metrics.username and metrics.password together (or neither, to monitor as the superuser)",
            ));
        }
        if self.statement_timeout_ms == 0 || self.scrape_timeout_ms < self.statement_timeout_ms {
            return Err(Invalid::new(
                "metrics.scrape_timeout_ms",
                format!(
                    "must be at least metrics.statement_timeout_ms ({}), and both above 0",
                    self.statement_timeout_ms
                ),
            ));
        }
        if self.max_databases == 0 || self.max_series == 0 {
            return Err(Invalid::new(
                "metrics.max_series",
                "metrics.max_databases and metrics.max_series must be above 0",
            ));
        }
        Ok(())
    }
}
