//! The one object the sidecar keeps: collects every source and merges the
//! families of a scrape.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::core::Metric as _;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, Registry};

use crate::backup::{self, BackupInput};
use crate::family::{label_pairs, Family};
use crate::ha::{self, HaInput};
use crate::postgres::{PgCollector, PostgresOptions};
use crate::process;

/// What to collect besides HA and backups (which come with each scrape).
#[derive(Debug, Clone, Default)]
pub struct ExporterOptions {
    /// PostgreSQL to collect from; `None`: no `pg_*` families at all.
    pub postgres: Option<PostgresOptions>,
}

/// Collects and renders the metrics of one member. Cheap to clone (shared
/// state); build one at start and keep it.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    postgres: Option<Arc<PgCollector>>,
    registry: Registry,
    ha_cycle: Histogram,
}

const HA_CYCLE: &str = "pgpilot_ha_cycle_duration_seconds";

impl Exporter {
    /// No I/O: PostgreSQL is first reached at the first scrape.
    pub fn new(options: ExporterOptions) -> Exporter {
        let ha_cycle = Histogram::with_opts(
            HistogramOpts::new(
                HA_CYCLE,
                "Duration of the HA loop's cycles (observe, decide, act).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("static histogram options are valid");
        Exporter {
            inner: Arc::new(Inner {
                postgres: options.postgres.map(|o| Arc::new(PgCollector::new(o))),
                registry: Registry::new(),
                ha_cycle,
            }),
        }
    }

    /// A registry for the caller's own collectors; gathered at every
    /// scrape after the built-in families.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Record one HA cycle (`pgpilot_ha_cycle_duration_seconds`, rendered
    /// with the `{scope,name}` of the scrape's [`HaInput`]).
    pub fn observe_ha_cycle(&self, duration: Duration) {
        self.inner.ha_cycle.observe(duration.as_secs_f64());
    }

    /// The text exposition of one scrape (serve it with
    /// [`crate::CONTENT_TYPE`] and status 200, whatever it says): the
    /// PostgreSQL families (encoded once per round), then the others by
    /// name. Each family name appears once, and no family holds two series
    /// with the same labels.
    pub async fn render(&self, ha: Option<&HaInput>, backup: Option<&BackupInput>) -> String {
        let round = match &self.inner.postgres {
            Some(pg) => Some(pg.collect().await),
            None => None,
        };
        let rest: Vec<MetricFamily> = merge(
            self.local_families(ha, backup),
            self.inner.registry.gather(),
        )
        .into_iter()
        .filter(|f| {
            let taken = round.as_ref().is_some_and(|r| r.names.contains(f.name()));
            if taken {
                tracing::warn!(
                    family = f.name(),
                    "metric family already served by pgpilot: dropped"
                );
            }
            !taken
        })
        .collect();
        let rest = crate::text::encode(&rest);
        let pg = round.as_ref().map_or("", |r| r.text.as_str());
        let mut out = String::with_capacity(pg.len() + rest.len());
        out.push_str(pg);
        out.push_str(&rest);
        out
    }

    /// HA, backup and process families.
    fn local_families(
        &self,
        ha: Option<&HaInput>,
        backup: Option<&BackupInput>,
    ) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut built: Vec<Family> = Vec::new();
        if let Some(ha) = ha {
            built.extend(ha::families(ha));
            out.push(self.ha_cycle_family(ha));
        }
        if let Some(backup) = backup {
            built.extend(backup::families(backup, SystemTime::now()));
        }
        built.extend(process::families());
        out.extend(
            built
                .into_iter()
                .filter(|f| !f.is_empty())
                .map(Family::into_proto),
        );
        out
    }

    fn ha_cycle_family(&self, ha: &HaInput) -> MetricFamily {
        let mut metric = self.inner.ha_cycle.metric();
        metric.set_label(label_pairs(
            &["scope", "name"],
            vec![ha.scope.clone(), ha.name.clone()],
        ));
        let mut family = MetricFamily::default();
        family.set_name(HA_CYCLE.to_string());
        family.set_help("Duration of the HA loop's cycles (observe, decide, act).".to_string());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        family
    }
}

/// A series' labels, sorted, for duplicate checks.
type LabelKey = Vec<(String, String)>;

fn label_key(metric: &prometheus::proto::Metric) -> LabelKey {
    let mut key: LabelKey = metric
        .get_label()
        .iter()
        .map(|l| (l.name().to_string(), l.value().to_string()))
        .collect();
    key.sort();
    key
}

/// Built-in families first, then the registry's. A name seen twice keeps
/// the first family (a later one of the same type adds only series with
/// new label sets); within a family a repeated label set keeps the first.
fn merge(builtin: Vec<MetricFamily>, registered: Vec<MetricFamily>) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<String, (MetricFamily, HashSet<LabelKey>)> = BTreeMap::new();
    let builtin_count = builtin.len();
    for (i, mut family) in builtin.into_iter().chain(registered).enumerate() {
        let metrics = family.take_metric();
        match by_name.entry(family.name().to_string()) {
            Entry::Vacant(entry) => {
                let mut seen = HashSet::new();
                let kept: Vec<_> = metrics
                    .into_iter()
                    .filter(|m| seen.insert(label_key(m)))
                    .collect();
                family.set_metric(kept);
                entry.insert((family, seen));
            }
            Entry::Occupied(mut entry) => {
                let (existing, seen) = entry.get_mut();
                if i >= builtin_count || existing.get_field_type() != family.get_field_type() {
                    tracing::warn!(
                        family = family.name(),
                        "metric family already served by pgpilot: the registered one is dropped"
                    );
                    continue;
                }
                for metric in metrics {
                    if seen.insert(label_key(&metric)) {
                        existing.mut_metric().push(metric);
                    }
                }
            }
        }
    }
    by_name
        .into_values()
        .map(|(family, _)| family)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Kind;

    #[test]
    fn merge_keeps_the_first_family_and_series() {
        let mut a = Family::with_labels("x", "x", Kind::Gauge, &["l"]);
        a.push(&["1"], 1.0);
        let mut b = Family::with_labels("x", "x", Kind::Gauge, &["l"]);
        b.push(&["1"], 9.0);
        b.push(&["2"], 2.0);
        let mut registered = Family::with_labels("x", "x", Kind::Gauge, &["l"]);
        registered.push(&["3"], 3.0);
        let other = Family::single("a_total", "a", Kind::Counter, 1.0);
        let merged = merge(
            vec![a.into_proto(), b.into_proto()],
            vec![registered.into_proto(), other.into_proto()],
        );
        let text = crate::text::encode(&merged);
        assert_eq!(
            text,
            "# HELP a_total a\n# TYPE a_total counter\na_total 1\n\
             # HELP x x\n# TYPE x gauge\nx{l=\"1\"} 1\nx{l=\"2\"} 2\n"
        );
    }

    #[tokio::test]
    async fn without_postgres_ha_backup_and_process_families_are_served() {
        let exporter = Exporter::new(ExporterOptions::default());
        exporter.observe_ha_cycle(Duration::from_millis(20));
        let ha = HaInput {
            scope: "main".into(),
            name: "pg1".into(),
            ..HaInput::default()
        };
        let text = exporter
            .render(Some(&ha), Some(&BackupInput::new("main")))
            .await;
        assert!(text.contains("patroni_primary{scope=\"main\",name=\"pg1\"} 0\n"));
        assert!(text
            .contains("pgpilot_ha_cycle_duration_seconds_count{scope=\"main\",name=\"pg1\"} 1\n"));
        assert!(text.contains("pgbackrest_stanza_status{stanza=\"main\"} 2\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(!text.contains("pg_up"));
    }
}
