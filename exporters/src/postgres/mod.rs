//! The PostgreSQL collector: one round of queries per scrape (shared by
//! concurrent scrapes) over long-lived sessions, turned into families.

mod conn;
mod replication;
mod server;
mod settings;
mod tables;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::family::{Budget, Family, Kind};
use conn::{Conn, PgError, SessionLimits};
use server::{Collector, Ctx};
use tables::DbTables;

/// Where and how to collect PostgreSQL metrics.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The monitoring connection (Unix socket or TCP, no TLS). Its database
    /// is the main session's; other databases are reached with the same
    /// settings and another `dbname`.
    pub connection: tokio_postgres::Config,
    /// Longest wait for a connection (default 2 s).
    pub connect_timeout: Duration,
    /// `statement_timeout` of every session (default 5 s); the client gives
    /// up one second later.
    pub statement_timeout: Duration,
    /// `lock_timeout` of every session (default 1 s): table sizes need a
    /// lock an `ALTER TABLE` may hold.
    pub lock_timeout: Duration,
    /// A round's whole time budget (default 8 s, under Prometheus's default
    /// 10 s scrape timeout); collectors not run by then count as failed.
    pub scrape_timeout: Duration,
    /// Reopen a session this old (default 1 h): a backend's memory grows
    /// with the catalog caches it fills.
    pub max_connection_age: Duration,
    /// Reuse a round that finished this recently (default 0: only rounds
    /// in flight are shared).
    pub cache_max_age: Duration,
    /// Collect table statistics of every database, one session each
    /// (default true); false: only the connection's own database.
    pub all_databases: bool,
    /// Databases visited for table statistics (default 64), lowest oid
    /// first. Each holds one backend.
    pub max_databases: usize,
    /// Tables per database (default 1000), largest first.
    pub max_tables_per_database: usize,
    /// PostgreSQL series per scrape (default 100,000), the exporter's own
    /// `pg_up` / `pg_exporter_*` / `pg_scrape_collector_*` not counted.
    pub max_series: usize,
    /// Databases whose table statistics run at the same time (default 2).
    pub database_concurrency: usize,
    /// How often the table statistics of databases other than the main
    /// session's are read again (default 60 s); in between, scrapes serve
    /// the last read.
    pub table_stats_interval: Duration,
    /// Keep a session open per database between reads (default false).
    /// Each held backend keeps its catalog caches (about 4 MiB each with
    /// 20 tables in our benchmark) and counts against max_connections; off,
    /// a database costs one short connection per `table_stats_interval`.
    pub keep_database_sessions: bool,
}

impl PostgresOptions {
    pub fn new(connection: tokio_postgres::Config) -> PostgresOptions {
        PostgresOptions {
            connection,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(1),
            scrape_timeout: Duration::from_secs(8),
            max_connection_age: Duration::from_secs(3600),
            cache_max_age: Duration::ZERO,
            all_databases: true,
            max_databases: 64,
            max_tables_per_database: 1000,
            max_series: 100_000,
            database_concurrency: 2,
            table_stats_interval: Duration::from_secs(60),
            keep_database_sessions: false,
        }
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            lock_timeout: self.lock_timeout,
        }
    }
}

/// The outcome of one round: the families already encoded (once, for
/// every scrape sharing the round).
pub struct Round {
    pub text: String,
    /// Names of the families in `text`.
    pub names: HashSet<String>,
    pub finished: Instant,
}

impl Round {
    fn new(mut families: Vec<Family>) -> Round {
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut names = HashSet::new();
        let mut text = String::with_capacity(families.iter().map(|f| f.len() * 96 + 128).sum());
        for family in &families {
            if family.is_empty() {
                continue;
            }
            if !names.insert(family.name().to_string()) {
                tracing::warn!(
                    family = family.name(),
                    "PostgreSQL metric family built twice: second one dropped"
                );
                continue;
            }
            family.encode_into(&mut text);
        }
        Round {
            text,
            names,
            finished: Instant::now(),
        }
    }
}

/// A database's session, kept between rounds.
#[derive(Default)]
struct DbSlot {
    conn: Option<Conn>,
    /// After a failed connection, wait before trying this database again.
    retry_after: Option<Instant>,
    /// The last clean read, served until it is `table_stats_interval` old.
    cached: Option<(Instant, Arc<DbTables>)>,
}

const DB_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The sessions, touched by one round at a time.
#[derive(Default)]
struct Sessions {
    main: Option<Conn>,
    databases: HashMap<String, DbSlot>,
    rounds: u64,
    /// Last error per collector, to log a problem once rather than at
    /// every scrape.
    last_errors: HashMap<String, String>,
}

pub struct PgCollector {
    options: PostgresOptions,
    sessions: tokio::sync::Mutex<Sessions>,
    /// The round in flight, if any: later callers wait on it.
    inflight: Mutex<Option<watch::Receiver<Option<Arc<Round>>>>>,
    last: Mutex<Option<Arc<Round>>>,
}

impl PgCollector {
    pub fn new(options: PostgresOptions) -> PgCollector {
        PgCollector {
            options,
            sessions: tokio::sync::Mutex::new(Sessions::default()),
            inflight: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// The families of the round in flight, or of a new round.
    pub async fn collect(self: &Arc<Self>) -> Arc<Round> {
        let mut receiver = {
            let mut inflight = self.inflight.lock().unwrap();
            if let Some(last) = self.last.lock().unwrap().as_ref() {
                if last.finished.elapsed() < self.options.cache_max_age {
                    return last.clone();
                }
            }
            match inflight.as_ref() {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    *inflight = Some(receiver.clone());
                    let me = self.clone();
                    // On its own task: a caller that goes away does not
                    // cancel the round the others wait for.
                    tokio::spawn(async move {
                        let round = Arc::new(me.round().await);
                        // Kept only when it may serve later scrapes: a
                        // round's text is megabytes on a big catalog.
                        if !me.options.cache_max_age.is_zero() {
                            *me.last.lock().unwrap() = Some(round.clone());
                        }
                        me.inflight.lock().unwrap().take();
                        let _ = sender.send(Some(round));
                    });
                    receiver
                }
            }
        };
        let outcome = receiver.wait_for(Option::is_some).await.map(|r| r.clone());
        match outcome {
            Ok(Some(round)) => round,
            _ => {
                // The round's task died (a panic): forget it so that the
                // next scrape starts afresh, and report PostgreSQL as down.
                let mut inflight = self.inflight.lock().unwrap();
                if inflight.as_ref().is_some_and(|r| r.same_channel(&receiver)) {
                    inflight.take();
                }
                tracing::error!("the PostgreSQL metrics round failed unexpectedly");
                Arc::new(Round::new(own_families(false, 0.0, 0, true, &[], 0, 0)))
            }
        }
    }

    async fn round(&self) -> Round {
        let started = Instant::now();
        let deadline = started + self.options.scrape_timeout;
        let mut sessions = self.sessions.lock().await;
        sessions.rounds += 1;
        let mut report = RoundReport::default();
        let mut budget = Budget::new(self.options.max_series);
        let mut families: Vec<Family> = Vec::new();
        let up = self
            .run_queries(
                &mut sessions,
                deadline,
                &mut report,
                &mut budget,
                &mut families,
            )
            .await;
        let failed = !up || report.outcomes.iter().any(|(_, _, ok)| !ok);
        log_changes(&mut sessions.last_errors, &report.errors);
        if budget.dropped > 0 || report.databases_skipped > 0 {
            tracing::warn!(
                series_dropped = budget.dropped,
                databases_skipped = report.databases_skipped,
                "PostgreSQL metrics cut to stay under the caps (max_series, max_databases, max_tables_per_database)"
            );
        }
        let mut out = families;
        out.extend(own_families(
            up,
            started.elapsed().as_secs_f64(),
            sessions.rounds,
            failed,
            &report.outcomes,
            budget.dropped,
            report.databases_skipped,
        ));
        Round::new(out)
    }

    /// All queries of a round; false when PostgreSQL did not answer the
    /// first one (`pg_up 0`).
    async fn run_queries(
        &self,
        sessions: &mut Sessions,
        deadline: Instant,
        report: &mut RoundReport,
        budget: &mut Budget,
        families: &mut Vec<Family>,
    ) -> bool {
        let options = &self.options;
        let limits = options.limits();
        // The main session: reuse it while it is open and young; at most
        // one new connection per round.
        let probe = loop {
            let reused = match ensure_session(
                &mut sessions.main,
                &options.connection,
                &limits,
                options.max_connection_age,
            )
            .await
            {
                Ok(reused) => reused,
                Err(e) => {
                    report.errors.push(("connection".into(), e.describe()));
                    return false;
                }
            };
            let Some(main) = sessions.main.as_mut() else {
                return false;
            };
            match server::probe(main, deadline).await {
                Ok(probe) => break probe,
                Err(e) => {
                    sessions.main = None;
                    // A session closed since the last scrape (PostgreSQL
                    // restarted): one new connection decides.
                    if reused && e.breaks_session() {
                        continue;
                    }
                    report.errors.push(("connection".into(), e.describe()));
                    return false;
                }
            }
        };
        let Some(main) = sessions.main.as_mut() else {
            return false;
        };
        for family in probe.families {
            families.extend(budget.admit(family));
        }

        // Which databases get table statistics, and their sessions.
        let mut targets = vec![probe.database.clone()];
        let mut own_pids = vec![main.pid];
        let databases_started = Instant::now();
        let databases = if options.all_databases {
            list_databases(main, deadline).await
        } else {
            Ok(Vec::new())
        };
        match databases {
            Ok(names) => {
                let others: Vec<String> =
                    names.into_iter().filter(|n| *n != probe.database).collect();
                let room = options.max_databases.saturating_sub(1);
                report.databases_skipped = others.len().saturating_sub(room);
                targets.extend(others.into_iter().take(room));
                // Sessions of databases that are gone or out of the cap
                // are closed.
                sessions
                    .databases
                    .retain(|name, _| targets[1..].contains(name));
            }
            Err(e) => {
                let broken = e.breaks_session();
                report.fail("databases", databases_started, e);
                if broken {
                    sessions.main = None;
                    return true;
                }
            }
        }
        own_pids.extend(
            sessions
                .databases
                .values()
                .filter_map(|s| s.conn.as_ref().map(|c| c.pid)),
        );

        let ctx = Ctx {
            version: probe.version,
            own_pids,
            deadline,
        };
        let mut main_broken = false;
        for collector in Collector::ALL {
            let collector_started = Instant::now();
            if main_broken {
                report.fail(collector.name(), collector_started, PgError::SessionLost);
                continue;
            }
            let Some(main) = sessions.main.as_mut() else {
                break;
            };
            match collector.run(main, &ctx).await {
                Ok(found) => {
                    report.ok(collector.name(), collector_started);
                    for family in found {
                        families.extend(budget.admit(family));
                    }
                }
                Err(e) => {
                    main_broken = e.breaks_session();
                    report.fail(collector.name(), collector_started, e);
                }
            }
        }
        if main_broken {
            sessions.main = None;
        }

        // Table statistics: the main database on the main session, the
        // others on their own sessions, a few at a time.
        let tables_started = Instant::now();
        let mut dbs: Vec<Arc<DbTables>> = Vec::new();
        if let Some(main) = sessions.main.as_mut() {
            let found = tables::collect(
                main,
                &probe.database,
                options.max_tables_per_database,
                deadline,
            )
            .await;
            if found
                .tables_error
                .as_ref()
                .is_some_and(PgError::breaks_session)
            {
                sessions.main = None;
            }
            dbs.push(Arc::new(found));
        }
        // Other databases: served from the last read while it is fresh,
        // read again (on a short or kept session) when it is not.
        let interval = options.table_stats_interval;
        let mut fresh: Vec<(usize, Arc<DbTables>)> = Vec::new();
        let mut slots: Vec<(usize, String, DbSlot)> = Vec::new();
        for (order, name) in targets[1..].iter().enumerate() {
            let slot = sessions.databases.remove(name).unwrap_or_default();
            match &slot.cached {
                Some((at, tables)) if at.elapsed() < interval => {
                    fresh.push((order, tables.clone()));
                    sessions.databases.insert(name.clone(), slot);
                }
                _ => slots.push((order, name.clone(), slot)),
            }
        }
        let max_tables = options.max_tables_per_database;
        let keep = options.keep_database_sessions;
        let results: Vec<(usize, String, DbSlot, Result<DbTables, PgError>)> =
            futures_util::stream::iter(slots.drain(..).map(|(order, name, slot)| {
                let limits = limits.clone();
                async move {
                    let (slot, result) = visit_database(
                        &options.connection,
                        &limits,
                        options.max_connection_age,
                        &name,
                        slot,
                        max_tables,
                        deadline,
                    )
                    .await;
                    let mut slot = slot;
                    if !keep {
                        slot.conn = None;
                    }
                    (order, name, slot, result)
                }
            }))
            .buffer_unordered(options.database_concurrency.max(1))
            .collect()
            .await;
        let mut read: Vec<(usize, Arc<DbTables>)> = fresh;
        for (order, name, mut slot, result) in results {
            match result {
                Ok(found) => {
                    let found = Arc::new(found);
                    let clean = found.tables_error.is_none() && found.indexes_error.is_none();
                    slot.cached = clean.then(|| (Instant::now(), found.clone()));
                    read.push((order, found));
                    sessions.databases.insert(name.clone(), slot);
                }
                Err(e) => {
                    slot.cached = None;
                    sessions.databases.insert(name.clone(), slot);
                    report
                        .errors
                        .push((format!("stat_user_tables ({name})"), e.describe()));
                    report.table_failures += 1;
                }
            }
        }
        read.sort_by_key(|(order, _)| *order);
        dbs.extend(read.into_iter().map(|(_, tables)| tables));
        self.admit_tables(&dbs, tables_started, report, budget, families);
        true
    }

    fn admit_tables(
        &self,
        dbs: &[Arc<DbTables>],
        started: Instant,
        report: &mut RoundReport,
        budget: &mut Budget,
        families: &mut Vec<Family>,
    ) {
        let mut tables_ok = report.table_failures == 0 && !dbs.is_empty();
        let mut indexes_ok = report.table_failures == 0 && !dbs.is_empty();
        for db in dbs {
            if let Some(e) = &db.tables_error {
                tables_ok = false;
                report
                    .errors
                    .push((format!("stat_user_tables ({})", db.datname), e.describe()));
            }
            if let Some(e) = &db.indexes_error {
                indexes_ok = false;
                report
                    .errors
                    .push((format!("invalid_indexes ({})", db.datname), e.describe()));
            }
            budget.count_dropped(db.tables_left_out * tables::SERIES_PER_TABLE);
        }
        let fit = budget.left() / tables::SERIES_PER_TABLE;
        let (table_families, cut) = tables::table_families(dbs, fit);
        budget.count_dropped(cut * tables::SERIES_PER_TABLE);
        for family in table_families {
            families.extend(budget.admit(family));
        }
        families.extend(budget.admit(tables::invalid_index_family(dbs)));
        let elapsed = started.elapsed().as_secs_f64();
        for (name, ok) in [
            ("stat_user_tables", tables_ok),
            ("statio_user_tables", tables_ok),
            ("invalid_indexes", indexes_ok),
        ] {
            report.outcomes.push((name.to_string(), elapsed, ok));
        }
    }
}

/// Databases to visit: connectable, not templates, and open to this role.
async fn list_databases(conn: &mut Conn, deadline: Instant) -> Result<Vec<String>, PgError> {
    let sql = "SELECT datname::text FROM pg_database \
               WHERE datallowconn AND NOT datistemplate AND has_database_privilege(oid, 'CONNECT') \
               ORDER BY oid";
    conn.query(sql, &[], deadline)
        .await?
        .iter()
        .map(|row| conn::text(row, 0))
        .collect()
}

/// One database's table statistics on its own session (opened if needed,
/// not retried for a while after a failed attempt).
async fn visit_database(
    connection: &tokio_postgres::Config,
    limits: &SessionLimits,
    max_age: Duration,
    name: &str,
    mut slot: DbSlot,
    max_tables: usize,
    deadline: Instant,
) -> (DbSlot, Result<DbTables, PgError>) {
    let mut config = connection.clone();
    config.dbname(name);
    loop {
        if slot.conn.is_none() && slot.retry_after.is_some_and(|t| Instant::now() < t) {
            return (slot, Err(PgError::RetryLater));
        }
        let reused = match ensure_session(&mut slot.conn, &config, limits, max_age).await {
            Ok(reused) => reused,
            Err(e) => {
                slot.retry_after = Some(Instant::now() + DB_RETRY_AFTER);
                return (slot, Err(e));
            }
        };
        slot.retry_after = None;
        let Some(conn) = slot.conn.as_mut() else {
            return (slot, Err(PgError::SessionLost));
        };
        let found = tables::collect(conn, name, max_tables, deadline).await;
        if found
            .tables_error
            .as_ref()
            .is_some_and(PgError::breaks_session)
        {
            slot.conn = None;
            // A session closed since the last scrape: one new connection.
            if reused {
                continue;
            }
        }
        return (slot, Ok(found));
    }
}

/// Make sure `slot` holds an open session younger than `max_age`; true
/// when the one it held is kept.
async fn ensure_session(
    slot: &mut Option<Conn>,
    config: &tokio_postgres::Config,
    limits: &SessionLimits,
    max_age: Duration,
) -> Result<bool, PgError> {
    if slot
        .as_ref()
        .is_some_and(|c| c.is_closed() || c.opened.elapsed() > max_age)
    {
        *slot = None;
    }
    if slot.is_some() {
        return Ok(true);
    }
    *slot = Some(Conn::open(config, limits).await?);
    Ok(false)
}

/// Per-collector outcomes of a round.
#[derive(Default)]
struct RoundReport {
    /// (collector, seconds, success)
    outcomes: Vec<(String, f64, bool)>,
    /// (what, message) for the log.
    errors: Vec<(String, String)>,
    databases_skipped: usize,
    table_failures: usize,
}

impl RoundReport {
    fn ok(&mut self, name: &str, started: Instant) {
        self.outcomes
            .push((name.to_string(), started.elapsed().as_secs_f64(), true));
    }

    fn fail(&mut self, name: &str, started: Instant, error: PgError) {
        self.outcomes
            .push((name.to_string(), started.elapsed().as_secs_f64(), false));
        self.errors.push((name.to_string(), error.describe()));
    }
}

/// Log a problem when it appears or changes, and when it goes away.
fn log_changes(last: &mut HashMap<String, String>, now: &[(String, String)]) {
    let current: HashMap<String, String> = now.iter().cloned().collect();
    for (what, message) in &current {
        if last.get(what) != Some(message) {
            tracing::warn!(collector = %what, error = %message, "PostgreSQL metrics: query failed");
        }
    }
    for what in last.keys() {
        if !current.contains_key(what) {
            tracing::info!(collector = %what, "PostgreSQL metrics: working again");
        }
    }
    *last = current;
}

/// `pg_up`, `pg_exporter_*` and `pg_scrape_collector_*` (postgres_exporter's
/// own families; never cut by the budget).
fn own_families(
    up: bool,
    seconds: f64,
    rounds: u64,
    failed: bool,
    outcomes: &[(String, f64, bool)],
    series_dropped: usize,
    databases_skipped: usize,
) -> Vec<Family> {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut out = vec![
        Family::single("pg_up", "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).", Kind::Gauge, flag(up)),
        Family::single("pg_exporter_last_scrape_duration_seconds", "Duration of the last scrape of metrics from PostgreSQL.", Kind::Gauge, seconds),
        Family::single("pg_exporter_scrapes_total", "Total number of times PostgreSQL was scraped for metrics.", Kind::Counter, rounds as f64),
        Family::single("pg_exporter_last_scrape_error", "Whether the last scrape of metrics from PostgreSQL resulted in an error (1 for error, 0 for success).", Kind::Gauge, flag(failed)),
    ];
    if up {
        out.push(Family::single(
            "pg_exporter_series_dropped",
            "PostgreSQL series left out of the last scrape by the series, database and table caps.",
            Kind::Gauge,
            series_dropped as f64,
        ));
        out.push(Family::single(
            "pg_exporter_databases_skipped",
            "Databases whose table statistics the last scrape left out (max_databases).",
            Kind::Gauge,
            databases_skipped as f64,
        ));
        let mut duration = Family::with_labels(
            "pg_scrape_collector_duration_seconds",
            "postgres_exporter: Duration of a collector scrape.",
            Kind::Gauge,
            &["collector"],
        );
        let mut success = Family::with_labels(
            "pg_scrape_collector_success",
            "postgres_exporter: Whether a collector succeeded.",
            Kind::Gauge,
            &["collector"],
        );
        for (name, seconds, ok) in outcomes {
            duration.push(&[name], *seconds);
            success.push(&[name], flag(*ok));
        }
        out.push(duration);
        out.push(success);
    }
    out
}
