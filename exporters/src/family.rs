//! Building metric families: one name, one type, fixed label names, and
//! never two series with the same label values.

use std::collections::HashSet;
use std::sync::Arc;

use prometheus::proto::{self, MetricFamily, MetricType};

/// A series' label values. Shared: the 29 table families hold one copy
/// per table, not 29.
pub type Labels = Arc<[String]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Legacy names whose original type promtool rejects (see the crate
    /// docs), and `pg_static`.
    Untyped,
}

/// A family under construction.
#[derive(Debug)]
pub struct Family {
    name: String,
    help: String,
    kind: Kind,
    label_names: Vec<&'static str>,
    samples: Vec<(Labels, f64)>,
    seen: HashSet<Labels>,
}

impl Family {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Family {
        Family::with_labels(name, help, kind, &[])
    }

    pub fn with_labels(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        label_names: &[&'static str],
    ) -> Family {
        let name = name.into();
        debug_assert!(valid_metric_name(&name), "bad metric name {name}");
        debug_assert!(label_names.iter().all(|l| valid_label_name(l)));
        Family {
            name,
            help: help.into(),
            kind,
            label_names: label_names.to_vec(),
            samples: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// One family with a single unlabelled sample.
    pub fn single(name: &str, help: &str, kind: Kind, value: f64) -> Family {
        let mut family = Family::new(name, help, kind);
        family.add(Vec::new(), value);
        family
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Add a series; false (and nothing added) when a series with these
    /// label values is already there.
    pub fn add(&mut self, label_values: Vec<String>, value: f64) -> bool {
        self.add_shared(label_values.into(), value)
    }

    /// `add` with label values other families share.
    pub fn add_shared(&mut self, labels: Labels, value: f64) -> bool {
        assert_eq!(
            labels.len(),
            self.label_names.len(),
            "{}: label values do not match the label names",
            self.name
        );
        if !self.seen.insert(labels.clone()) {
            return false;
        }
        self.samples.push((labels, value));
        true
    }

    /// `add` with borrowed label values.
    pub fn push(&mut self, label_values: &[&str], value: f64) -> bool {
        self.add(label_values.iter().map(|v| v.to_string()).collect(), value)
    }

    /// Keep the first `n` series.
    pub fn truncate(&mut self, n: usize) {
        for (labels, _) in self.samples.drain(n.min(self.samples.len())..) {
            self.seen.remove(&labels);
        }
    }

    pub fn into_proto(self) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name);
        family.set_help(self.help);
        family.set_field_type(match self.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Untyped => MetricType::UNTYPED,
        });
        let names = self.label_names;
        let metrics = self
            .samples
            .into_iter()
            .map(|(values, value)| {
                let mut metric = proto::Metric::default();
                metric.set_label(label_pairs(&names, values.to_vec()));
                match self.kind {
                    Kind::Counter => {
                        let mut c = proto::Counter::default();
                        c.set_value(value);
                        metric.set_counter(c);
                    }
                    // The crate's Untyped value is deprecated: untyped
                    // families keep theirs in the gauge field, where
                    // `text::encode` reads it.
                    Kind::Gauge | Kind::Untyped => {
                        let mut g = proto::Gauge::default();
                        g.set_value(value);
                        metric.set_gauge(g);
                    }
                }
                metric
            })
            .collect();
        family.set_metric(metrics);
        family
    }
}

impl Family {
    /// Write the family in the text format (see [`crate::text`]) without
    /// building the `prometheus` model first: the big PostgreSQL families
    /// go straight to text.
    pub fn encode_into(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        };
        crate::text::header(out, &self.name, &self.help, kind);
        for (values, value) in &self.samples {
            let pairs = self
                .label_names
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str));
            crate::text::sample(out, &self.name, pairs, *value);
        }
    }
}

pub fn label_pairs(names: &[&str], values: Vec<String>) -> Vec<proto::LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect()
}

/// `wanted`, or untyped when promtool would reject the name for that type
/// (`_count`, `_sum`, `_bucket` outside histograms and summaries; `_total`
/// on a non-counter): for names we do not choose, such as settings.
pub fn lint_safe_kind(name: &str, wanted: Kind) -> Kind {
    let reserved = ["_count", "_sum", "_bucket"]
        .iter()
        .any(|s| name.ends_with(s));
    let total = name.ends_with("_total");
    match wanted {
        Kind::Counter if !total || reserved => Kind::Untyped,
        Kind::Gauge if total || reserved => Kind::Untyped,
        kind => kind,
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A metric name part from something PostgreSQL named (a setting): every
/// character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_name_part(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Families in a scrape under a budget of series: past it, families are
/// cut and the dropped series counted.
#[derive(Debug)]
pub struct Budget {
    left: usize,
    pub dropped: usize,
}

impl Budget {
    pub fn new(max_series: usize) -> Budget {
        Budget {
            left: max_series,
            dropped: 0,
        }
    }

    pub fn left(&self) -> usize {
        self.left
    }

    /// Admit `family`, cut to what the budget allows; `None` when nothing
    /// of it fits.
    pub fn admit(&mut self, mut family: Family) -> Option<Family> {
        if family.len() > self.left {
            self.dropped += family.len() - self.left;
            family.truncate(self.left);
        }
        self.left -= family.len();
        (!family.is_empty()).then_some(family)
    }

    /// Count series that were never built (rows a query left out).
    pub fn count_dropped(&mut self, n: usize) {
        self.dropped += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_label_set_is_not_added_twice() {
        let mut f = Family::with_labels("pg_x", "x", Kind::Gauge, &["a", "b"]);
        assert!(f.push(&["1", "2"], 1.0));
        assert!(!f.push(&["1", "2"], 5.0));
        assert!(f.push(&["1", "3"], 1.0));
        assert_eq!(f.len(), 2);
        let proto = f.into_proto();
        assert_eq!(proto.get_metric()[0].get_gauge().get_value(), 1.0);
    }

    #[test]
    fn direct_encoding_matches_the_model_encoding() {
        let build = || {
            let mut f =
                Family::with_labels("pg_x_count", "help \\ text", Kind::Untyped, &["a", "b"]);
            f.push(&["q\"uote", "back\\slash\nline"], 1.5);
            let shared: Labels = vec!["s".to_string(), "t".to_string()].into();
            f.add_shared(shared.clone(), f64::NAN);
            assert!(!f.add_shared(shared, 2.0));
            f
        };
        let mut direct = String::new();
        build().encode_into(&mut direct);
        assert_eq!(direct, crate::text::encode(&[build().into_proto()]));
        assert!(direct.contains("pg_x_count{a=\"s\",b=\"t\"} NaN\n"));
    }

    #[test]
    fn truncate_forgets_the_removed_label_sets() {
        let mut f = Family::with_labels("pg_x", "x", Kind::Gauge, &["a"]);
        f.push(&["1"], 1.0);
        f.push(&["2"], 1.0);
        f.truncate(1);
        assert!(f.push(&["2"], 2.0));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn the_budget_cuts_families_and_counts_what_it_cut() {
        let mut budget = Budget::new(3);
        let mut a = Family::with_labels("a", "a", Kind::Gauge, &["l"]);
        a.push(&["1"], 1.0);
        a.push(&["2"], 1.0);
        assert_eq!(budget.admit(a).unwrap().len(), 2);
        let mut b = Family::with_labels("b", "b", Kind::Gauge, &["l"]);
        b.push(&["1"], 1.0);
        b.push(&["2"], 1.0);
        assert_eq!(budget.admit(b).unwrap().len(), 1);
        let c = Family::single("c", "c", Kind::Gauge, 1.0);
        assert!(budget.admit(c).is_none());
        assert_eq!(budget.dropped, 2);
    }

    #[test]
    fn names_promtool_would_reject_become_untyped() {
        assert_eq!(
            lint_safe_kind("pg_settings_tcp_keepalives_count", Kind::Gauge),
            Kind::Untyped
        );
        assert_eq!(
            lint_safe_kind("pg_settings_x_total", Kind::Gauge),
            Kind::Untyped
        );
        assert_eq!(
            lint_safe_kind("pg_settings_work_mem_bytes", Kind::Gauge),
            Kind::Gauge
        );
        assert_eq!(lint_safe_kind("a_total", Kind::Counter), Kind::Counter);
        assert_eq!(lint_safe_kind("a", Kind::Counter), Kind::Untyped);
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("pg_settings_work_mem_bytes"));
        assert!(!valid_metric_name("9pg"));
        assert!(!valid_metric_name("pg-x"));
        assert!(valid_label_name("datname"));
        assert!(!valid_label_name("__name__"));
        assert_eq!(
            sanitize_name_part("pg_stat_statements.max"),
            "pg_stat_statements_max"
        );
        assert_eq!(sanitize_name_part("a-b.c"), "a_b_c");
    }
}
