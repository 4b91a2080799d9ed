//! Scrape a PostgreSQL server N times with the collector and print the
//! latency (median, p99) and the size of the output.
//!
//! ```sh
//! cargo run --release -p pgpilot-exporters --example scrape -- \
//!     "host=/run/postgresql port=5432 user=postgres dbname=postgres" 50
//! ```

use std::time::{Duration, Instant};

use pgpilot_exporters::{Exporter, ExporterOptions, PostgresOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(conninfo) = args.next() else {
        eprintln!("usage: scrape CONNINFO [COUNT]");
        std::process::exit(2);
    };
    let count: usize = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50)
        .max(1);
    let config: tokio_postgres::Config = match conninfo.parse() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bad connection string: {e}");
            std::process::exit(2);
        }
    };
    let exporter = Exporter::new(ExporterOptions {
        postgres: Some(PostgresOptions::new(config)),
    });
    let started = Instant::now();
    let first = exporter.render(None, None).await;
    let first_took = started.elapsed();
    let mut took: Vec<Duration> = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let _ = exporter.render(None, None).await;
        took.push(started.elapsed());
    }
    took.sort();
    let series = first.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "{series} series, {} bytes; first scrape {first_took:?}; next {count}: median {:?}, p99 {:?}, max {:?}",
        first.len(),
        took[count / 2],
        took[(count * 99 / 100).min(count - 1)],
        took[count - 1],
    );
    // Where a round's time goes (the last scrape).
    let last = exporter.render(None, None).await;
    let mut durations: Vec<(f64, &str)> = last
        .lines()
        .filter_map(|l| l.strip_prefix("pg_scrape_collector_duration_seconds{collector=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter_map(|(name, v)| Some((v.parse().ok()?, name)))
        .collect();
    durations.sort_by(|a, b| b.0.total_cmp(&a.0));
    let round = last
        .lines()
        .find_map(|l| l.strip_prefix("pg_exporter_last_scrape_duration_seconds "))
        .unwrap_or("?");
    let slowest: Vec<String> = durations
        .iter()
        .take(4)
        .map(|(v, n)| format!("{n} {:.1} ms", v * 1000.0))
        .collect();
    println!(
        "last round {round} s; slowest collectors: {}",
        slowest.join(", ")
    );
    if first.contains("pg_up 0") {
        eprintln!("pg_up is 0: check the connection string");
    }
}
