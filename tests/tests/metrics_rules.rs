//! The alert rules in exporters/monitoring/alerts.yaml against our real
//! `/metrics` (issue 5): `promtool check rules`, then `promtool test rules`
//! with one test per alert whose input series are series scraped from a
//! running cluster (with their real names and label sets, plus the
//! `instance`/`job` labels Prometheus adds), given values that must make the
//! alert fire, and healthy values that must not. A rule on a metric we do
//! not serve, or on labels our series do not carry, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use pgpilot_e2e::exposition::{Scrape, Series};
use pgpilot_e2e::monitoring::{
    alerts_and_exprs, metric_names, promtool, rules_file, without_annotations, BackedUpPair,
};
use pgpilot_e2e::wait_until;

const READY: Duration = Duration::from_secs(120);

/// Which member's scrape a series comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Leader,
    Replica,
    Both,
}

/// Input: every scraped series called `name` (restricted to `only` labels,
/// if any) from `from`, with promtool `values` when the alert must fire and
/// `healthy` when it must not.
struct Input {
    name: &'static str,
    only: &'static [(&'static str, &'static str)],
    from: Source,
    firing: &'static str,
    healthy: &'static str,
}

/// What the firing alert carries besides `severity`: the labels of the
/// input series (`Series`), only these labels of them (`By`), or a fixed set.
enum Expect {
    Series,
    By(&'static [&'static str]),
    Fixed(&'static [(&'static str, &'static str)]),
}

struct Case {
    alert: &'static str,
    severity: &'static str,
    inputs: Vec<Input>,
    /// Which input's series name the alert's labels (the first by default).
    expect: Expect,
    eval: &'static str,
    /// Prometheus's own `up` series for the scrape targets (not in /metrics).
    up: Option<(Source, &'static str, &'static str)>,
}

fn input(name: &'static str, from: Source, firing: &'static str, healthy: &'static str) -> Input {
    Input {
        name,
        only: &[],
        from,
        firing,
        healthy,
    }
}

fn cases() -> Vec<Case> {
    use Source::*;
    vec![
        Case {
            alert: "PgpilotNoPrimary",
            severity: "critical",
            inputs: vec![input("patroni_primary", Both, "0x10", "")],
            expect: Expect::By(&["scope"]),
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotMultiplePrimaries",
            severity: "critical",
            inputs: vec![input("patroni_primary", Both, "1x10", "")],
            expect: Expect::By(&["scope"]),
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotClusterUnlocked",
            severity: "critical",
            inputs: vec![input("patroni_cluster_unlocked", Both, "1x10", "0x10")],
            expect: Expect::By(&["scope"]),
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotLeaseRenewalsFailing",
            severity: "warning",
            inputs: vec![input(
                "pgpilot_lease_renewal_failures_total",
                Leader,
                "0+2x10",
                "3x10",
            )],
            expect: Expect::Series,
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotEtcdUnreachable",
            severity: "warning",
            // The value is an epoch second: frozen at 0 is far in the past by
            // the evaluation time; rising with the clock is current.
            inputs: vec![input("patroni_dcs_last_seen", Replica, "0x10", "0+60x10")],
            expect: Expect::Series,
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotSidecarDown",
            severity: "critical",
            inputs: vec![],
            expect: Expect::Series,
            eval: "5m",
            up: Some((Replica, "0x10", "1x10")),
        },
        Case {
            alert: "PgpilotMetricsAbsent",
            severity: "critical",
            inputs: vec![input("patroni_postgres_running", Both, "1 _x20", "1x20")],
            expect: Expect::Fixed(&[("job", "pgpilot")]),
            eval: "15m",
            up: None,
        },
        Case {
            alert: "PgpilotPostgresqlDown",
            severity: "critical",
            inputs: vec![input("pg_up", Replica, "0x10", "1x10")],
            expect: Expect::Series,
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotReplicationLag",
            severity: "warning",
            inputs: vec![input(
                "pg_replication_lag_seconds",
                Replica,
                "120x10",
                "0x10",
            )],
            expect: Expect::Series,
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotReplicaNotStreaming",
            severity: "warning",
            inputs: vec![
                input("patroni_replica", Replica, "1x10", "1x10"),
                input("patroni_postgres_streaming", Replica, "0x10", "1x10"),
            ],
            expect: Expect::Series,
            eval: "8m",
            up: None,
        },
        Case {
            alert: "PgpilotWalArchivingFailing",
            severity: "critical",
            inputs: vec![
                input("pg_stat_archiver_failed_count", Leader, "0+1x20", "2x20"),
                input("pg_stat_archiver_archived_count", Leader, "5x20", "5+1x20"),
            ],
            expect: Expect::Series,
            eval: "15m",
            up: None,
        },
        Case {
            alert: "PgpilotBackupTooOld",
            severity: "warning",
            inputs: vec![Input {
                name: "pgbackrest_backup_since_last_completion_seconds",
                only: &[("backup_type", "incr")],
                from: Leader,
                firing: "700000x10",
                healthy: "3600x10",
            }],
            expect: Expect::By(&["stanza"]),
            eval: "5m",
            up: None,
        },
        Case {
            alert: "PgpilotLastBackupFailed",
            severity: "warning",
            inputs: vec![input(
                "pgbackrest_backup_last_error_status",
                Leader,
                "1x10",
                "0x10",
            )],
            expect: Expect::By(&["stanza"]),
            eval: "5m",
            up: None,
        },
    ]
}

struct Scraped {
    leader: (String, Scrape),
    replica: (String, Scrape),
}

impl Scraped {
    /// The chosen series, each with `instance` and `job` as Prometheus adds them.
    fn pick(&self, input: &Input) -> anyhow::Result<Vec<Series>> {
        let sources: Vec<&(String, Scrape)> = match input.from {
            Source::Leader => vec![&self.leader],
            Source::Replica => vec![&self.replica],
            Source::Both => vec![&self.leader, &self.replica],
        };
        let mut out = Vec::new();
        for (instance, scrape) in sources {
            for s in scrape.all(input.name) {
                if input
                    .only
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                {
                    let mut s = s.clone();
                    s.labels.insert("instance".into(), instance.clone());
                    s.labels.insert("job".into(), "pgpilot".into());
                    out.push(s);
                }
            }
        }
        anyhow::ensure!(
            !out.is_empty(),
            "the alert test needs {}{:?} from the {:?} scrape, which /metrics does not serve",
            input.name,
            input.only,
            input.from
        );
        Ok(out)
    }

    fn instance(&self, from: Source) -> &str {
        match from {
            Source::Leader | Source::Both => &self.leader.0,
            Source::Replica => &self.replica.0,
        }
    }
}

fn yaml_labels(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}: {}", serde_json::to_string(v).expect("a string")))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// The promtool test file: per case one test where the alert fires and,
/// where healthy values exist, one where it must not.
fn test_file(scraped: &Scraped, rules: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(out, "rule_files:\n  - {}", rules.display())?;
    writeln!(out, "evaluation_interval: 1m\ntests:")?;
    for case in cases() {
        for firing in [true, false] {
            let mut series_yaml = String::new();
            let mut first_labels: Vec<BTreeMap<String, String>> = Vec::new();
            let mut skip = false;
            for (n, input) in case.inputs.iter().enumerate() {
                let values = if firing { input.firing } else { input.healthy };
                if values.is_empty() {
                    skip = true;
                }
                let picked = scraped.pick(input)?;
                for s in &picked {
                    writeln!(
                        series_yaml,
                        "      - series: {}\n        values: '{values}'",
                        serde_json::to_string(&s.selector(&[]))?
                    )?;
                }
                if n == 0 {
                    first_labels = picked.iter().map(|s| s.labels.clone()).collect();
                }
            }
            if let Some((from, on, off)) = case.up {
                let instance = scraped.instance(from);
                let mut labels = BTreeMap::new();
                labels.insert("instance".to_string(), instance.to_string());
                labels.insert("job".to_string(), "pgpilot".to_string());
                writeln!(
                    series_yaml,
                    "      - series: 'up{{instance=\"{instance}\",job=\"pgpilot\"}}'\n        values: '{}'",
                    if firing { on } else { off }
                )?;
                first_labels = vec![labels];
            }
            if skip {
                continue;
            }
            let mut expected: BTreeSet<String> = BTreeSet::new();
            if firing {
                for labels in &first_labels {
                    let mut exp: BTreeMap<String, String> = match &case.expect {
                        Expect::Series => labels.clone(),
                        Expect::By(keys) => keys
                            .iter()
                            .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
                            .collect(),
                        Expect::Fixed(pairs) => pairs
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    };
                    exp.insert("severity".into(), case.severity.into());
                    expected.insert(format!("          - exp_labels: {}", yaml_labels(&exp)));
                }
            }
            writeln!(
                out,
                "  - name: {} {}",
                case.alert,
                if firing { "fires" } else { "stays quiet" }
            )?;
            writeln!(
                out,
                "    interval: 1m\n    input_series:\n{series_yaml}    alert_rule_test:"
            )?;
            writeln!(
                out,
                "      - eval_time: {}\n        alertname: {}\n        exp_alerts:{}",
                case.eval,
                case.alert,
                if expected.is_empty() { " []" } else { "" }
            )?;
            for line in expected {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_fire_on_series_from_a_real_scrape() -> anyhow::Result<()> {
    let rules = rules_file();
    promtool(&["check", "rules", &rules.display().to_string()], None)?;

    let pair = BackedUpPair::start(READY).await?;
    let (c, leader, replica) = (&pair.cluster, pair.leader, pair.replica);
    pair.backup()?;
    let dir = tempfile::Builder::new()
        .prefix("pgpilot-rules-")
        .tempdir()?;

    let mut scrapes = Vec::new();
    for i in [leader, replica] {
        let scrape = wait_until(
            "a scrape with the backup's metrics",
            Duration::from_secs(60),
            async || {
                let reply = c.get(i, "/metrics").await?;
                let s = Scrape::parse(&reply.body)?;
                anyhow::ensure!(s.value("pg_up") == Some(1.0));
                anyhow::ensure!(!s
                    .all("pgbackrest_backup_since_last_completion_seconds")
                    .is_empty());
                Ok(s)
            },
        )
        .await
        .map_err(|e| c.with_logs(e))?;
        scrapes.push((format!("127.0.0.1:{}", c.member(i).api_port), scrape));
    }
    let replica_scrape = scrapes.pop().expect("two scrapes");
    let leader_scrape = scrapes.pop().expect("two scrapes");
    let scraped = Scraped {
        leader: leader_scrape,
        replica: replica_scrape,
    };

    // Every metric a rule names is served by one of the members.
    let served: BTreeSet<String> = scraped
        .leader
        .1
        .names()
        .union(&scraped.replica.1.names())
        .cloned()
        .collect();
    let text = std::fs::read_to_string(&rules)?;
    let mut alerts = BTreeSet::new();
    for (alert, expr) in alerts_and_exprs(&text)? {
        let unserved: Vec<String> = metric_names(&expr)
            .into_iter()
            .filter(|n| !served.contains(n))
            .collect();
        assert!(
            unserved.is_empty(),
            "alert {alert} uses metrics /metrics does not serve: {unserved:?}"
        );
        alerts.insert(alert);
    }
    let tested: BTreeSet<String> = cases().iter().map(|c| c.alert.to_string()).collect();
    assert_eq!(
        alerts, tested,
        "every alert needs a test case here, and only those"
    );

    let bare = dir.path().join("alerts.yaml");
    std::fs::write(&bare, without_annotations(&text))?;
    let tests = dir.path().join("alerts_test.yaml");
    std::fs::write(&tests, test_file(&scraped, &bare)?)?;
    let report = promtool(&["test", "rules", &tests.display().to_string()], None).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n--- generated test file ---\n{}",
            std::fs::read_to_string(&tests).unwrap_or_default()
        )
    })?;
    println!("{report}");
    Ok(())
}
