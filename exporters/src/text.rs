//! The Prometheus text format 0.0.4. Written here rather than with the
//! `prometheus` crate's `TextEncoder`, which panics on untyped families and
//! writes infinities as `inf` (Prometheus wants `+Inf`).

use std::fmt::Write;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// Encode `families` in order: `# HELP`, `# TYPE`, then every sample of the
/// family. Families without samples are skipped. Callers keep names unique
/// (see [`crate::Exporter::gather`]).
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(families.len() * 128);
    for family in families {
        if family.get_metric().is_empty() {
            continue;
        }
        let kind = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
            MetricType::HISTOGRAM => "histogram",
        };
        header(&mut out, family.name(), family.help(), kind);
        for metric in family.get_metric() {
            write_metric(&mut out, family.name(), family.get_field_type(), metric);
        }
    }
    out
}

/// `# HELP` (when there is a help text) and `# TYPE`.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    if !help.is_empty() {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn pairs(labels: &[LabelPair]) -> impl Iterator<Item = (&str, &str)> {
    labels.iter().map(|l| (l.name(), l.value()))
}

fn write_metric(out: &mut String, name: &str, kind: MetricType, metric: &Metric) {
    let labels = metric.get_label();
    match kind {
        MetricType::COUNTER => sample(out, name, pairs(labels), metric.get_counter().get_value()),
        // Untyped values live in the gauge field (see `Family::into_proto`).
        MetricType::GAUGE | MetricType::UNTYPED => {
            sample(out, name, pairs(labels), metric.get_gauge().get_value())
        }
        MetricType::HISTOGRAM => {
            let h = metric.get_histogram();
            let bucket = format!("{name}_bucket");
            let mut saw_inf = false;
            for b in h.get_bucket() {
                let bound = b.upper_bound();
                saw_inf |= bound == f64::INFINITY;
                let le = format_value(bound);
                let with_le = pairs(labels).chain([("le", le.as_str())]);
                sample(out, &bucket, with_le, b.cumulative_count() as f64);
            }
            let count = h.get_sample_count() as f64;
            if !saw_inf {
                sample(out, &bucket, pairs(labels).chain([("le", "+Inf")]), count);
            }
            sample(
                out,
                &format!("{name}_sum"),
                pairs(labels),
                h.get_sample_sum(),
            );
            sample(out, &format!("{name}_count"), pairs(labels), count);
        }
        MetricType::SUMMARY => {
            let s = metric.get_summary();
            for q in s.get_quantile() {
                let quantile = format_value(q.quantile());
                let with_q = pairs(labels).chain([("quantile", quantile.as_str())]);
                sample(out, name, with_q, q.value());
            }
            sample(out, &format!("{name}_sum"), pairs(labels), s.sample_sum());
            sample(
                out,
                &format!("{name}_count"),
                pairs(labels),
                s.sample_count() as f64,
            );
        }
    }
}

/// One sample line: `name{label="value",...} value`.
pub fn sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    out.push_str(name);
    let mut first = true;
    for (label, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value_into(out, value);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

fn push_value(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&format_value(v));
    }
}

/// A sample value: Go's spellings for the special values, else the shortest
/// decimal that reads back as the same float.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn escape_label_value_into(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::{Family, Kind};

    #[test]
    fn golden_output_of_each_type() {
        let mut gauge = Family::with_labels(
            "pg_locks_count",
            "Locks",
            Kind::Untyped,
            &["datname", "mode"],
        );
        gauge.push(&["app", "sharelock"], 3.0);
        gauge.push(&["odd\"name\\with\nnewline", "exclusivelock"], 0.0);
        let counter = Family::single("pg_exporter_scrapes_total", "Scrapes", Kind::Counter, 12.0);
        let special = Family::single(
            "x_seconds",
            "help with \\ and\nnewline",
            Kind::Gauge,
            f64::INFINITY,
        );
        let text = encode(&[
            gauge.into_proto(),
            counter.into_proto(),
            special.into_proto(),
        ]);
        assert_eq!(
            text,
            "# HELP pg_locks_count Locks\n\
             # TYPE pg_locks_count untyped\n\
             pg_locks_count{datname=\"app\",mode=\"sharelock\"} 3\n\
             pg_locks_count{datname=\"odd\\\"name\\\\with\\nnewline\",mode=\"exclusivelock\"} 0\n\
             # HELP pg_exporter_scrapes_total Scrapes\n\
             # TYPE pg_exporter_scrapes_total counter\n\
             pg_exporter_scrapes_total 12\n\
             # HELP x_seconds help with \\\\ and\\nnewline\n\
             # TYPE x_seconds gauge\n\
             x_seconds +Inf\n"
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(-1.0), "-1");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn histograms_get_an_inf_bucket_sum_and_count() {
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("h_seconds", "h").buckets(vec![0.1, 1.0]),
        )
        .unwrap();
        h.observe(0.05);
        h.observe(5.0);
        let families = prometheus::core::Collector::collect(&h);
        let text = encode(&families);
        assert_eq!(
            text,
            "# HELP h_seconds h\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"1\"} 1\n\
             h_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 5.05\nh_seconds_count 2\n"
        );
    }
}
