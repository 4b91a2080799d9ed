//! `pg_settings_*`: postgres_exporter's rules for turning a server
//! parameter into a metric name and value.
//!
//! - only `bool`, `integer` and `real` parameters; `on` is 1, anything
//!   else of a bool is 0;
//! - `.` and `-` in the name become `_` (custom parameters such as
//!   `pg_stat_statements.max`);
//! - time units become `_seconds` (ms, s, min, h, d), size units `_bytes`
//!   (B, kB, MB, GB, TB and the block units 1kB … 64kB, 16MB … 64MB), and
//!   the value is converted, except -1 (the "disabled" marker stays -1);
//! - a parameter with another unit is skipped.

use crate::family::{sanitize_name_part, valid_metric_name};

/// One row of `pg_settings`.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    pub setting: String,
    pub unit: String,
    pub vartype: String,
}

/// The metric name, help and value of `s`, or why it is skipped.
pub fn normalise(s: &Setting) -> Result<(String, String, f64), String> {
    let base = sanitize_name_part(&s.name);
    let help = format!("Server Parameter: {}", s.name);
    let (suffix, value) = match s.vartype.as_str() {
        "bool" => ("", if s.setting == "on" { 1.0 } else { 0.0 }),
        "integer" | "real" => {
            let raw: f64 = s
                .setting
                .trim()
                .parse()
                .map_err(|_| format!("value {:?} is not a number", s.setting))?;
            let (suffix, factor) = unit_factor(&s.unit)?;
            let value = if raw == -1.0 { raw } else { raw * factor };
            (suffix, value)
        }
        other => return Err(format!("type {other} is not exported")),
    };
    let name = format!("pg_settings_{base}{suffix}");
    if !valid_metric_name(&name) {
        return Err(format!("{name:?} is not a valid metric name"));
    }
    let help = if suffix.is_empty() {
        help
    } else {
        format!("{help} [Units converted to {}.]", &suffix[1..])
    };
    Ok((name, help, value))
}

/// Name suffix and multiplier to base units.
fn unit_factor(unit: &str) -> Result<(&'static str, f64), String> {
    const KB: f64 = 1024.0;
    const MB: f64 = KB * 1024.0;
    Ok(match unit {
        "" => ("", 1.0),
        "ms" => ("_seconds", 0.001),
        "s" => ("_seconds", 1.0),
        "min" => ("_seconds", 60.0),
        "h" => ("_seconds", 3600.0),
        "d" => ("_seconds", 86400.0),
        "B" => ("_bytes", 1.0),
        "kB" | "1kB" => ("_bytes", KB),
        "2kB" => ("_bytes", 2.0 * KB),
        "4kB" => ("_bytes", 4.0 * KB),
        "8kB" => ("_bytes", 8.0 * KB),
        "16kB" => ("_bytes", 16.0 * KB),
        "32kB" => ("_bytes", 32.0 * KB),
        "64kB" => ("_bytes", 64.0 * KB),
        "MB" => ("_bytes", MB),
        "16MB" => ("_bytes", 16.0 * MB),
        "32MB" => ("_bytes", 32.0 * MB),
        "64MB" => ("_bytes", 64.0 * MB),
        "GB" => ("_bytes", 1024.0 * MB),
        "TB" => ("_bytes", 1024.0 * 1024.0 * MB),
        other => return Err(format!("unknown unit {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, setting: &str, unit: &str, vartype: &str) -> (String, f64) {
        let s = Setting {
            name: name.into(),
            setting: setting.into(),
            unit: unit.into(),
            vartype: vartype.into(),
        };
        let (name, _, value) = normalise(&s).unwrap();
        (name, value)
    }

    #[test]
    fn units_follow_postgres_exporter() {
        assert_eq!(
            n("shared_buffers", "16384", "8kB", "integer"),
            ("pg_settings_shared_buffers_bytes".into(), 134217728.0)
        );
        assert_eq!(
            n("work_mem", "4096", "kB", "integer"),
            ("pg_settings_work_mem_bytes".into(), 4194304.0)
        );
        assert_eq!(
            n("max_wal_size", "1024", "MB", "integer"),
            ("pg_settings_max_wal_size_bytes".into(), 1073741824.0)
        );
        assert_eq!(
            n("wal_segment_size", "16777216", "B", "integer"),
            ("pg_settings_wal_segment_size_bytes".into(), 16777216.0)
        );
        assert_eq!(
            n("min_wal_size", "5", "16MB", "integer"),
            ("pg_settings_min_wal_size_bytes".into(), 83886080.0)
        );
        assert_eq!(
            n("checkpoint_timeout", "300", "s", "integer"),
            ("pg_settings_checkpoint_timeout_seconds".into(), 300.0)
        );
        assert_eq!(
            n("deadlock_timeout", "1000", "ms", "integer"),
            ("pg_settings_deadlock_timeout_seconds".into(), 1.0)
        );
        assert_eq!(
            n("log_rotation_age", "1440", "min", "integer"),
            ("pg_settings_log_rotation_age_seconds".into(), 86400.0)
        );
        assert_eq!(
            n("x_hours", "2", "h", "integer"),
            ("pg_settings_x_hours_seconds".into(), 7200.0)
        );
        assert_eq!(
            n("x_days", "1", "d", "integer"),
            ("pg_settings_x_days_seconds".into(), 86400.0)
        );
        assert_eq!(
            n("autovacuum_vacuum_cost_delay", "2", "ms", "real"),
            (
                "pg_settings_autovacuum_vacuum_cost_delay_seconds".into(),
                0.002
            )
        );
        assert_eq!(
            n("max_connections", "100", "", "integer"),
            ("pg_settings_max_connections".into(), 100.0)
        );
        assert_eq!(
            n("random_page_cost", "1.1", "", "real"),
            ("pg_settings_random_page_cost".into(), 1.1)
        );
    }

    #[test]
    fn minus_one_keeps_its_meaning_and_the_suffix() {
        assert_eq!(
            n("log_min_duration_statement", "-1", "ms", "integer"),
            (
                "pg_settings_log_min_duration_statement_seconds".into(),
                -1.0
            )
        );
        assert_eq!(
            n("temp_file_limit", "-1", "kB", "integer"),
            ("pg_settings_temp_file_limit_bytes".into(), -1.0)
        );
    }

    #[test]
    fn booleans_and_names() {
        assert_eq!(
            n("fsync", "on", "", "bool"),
            ("pg_settings_fsync".into(), 1.0)
        );
        assert_eq!(n("jit", "off", "", "bool"), ("pg_settings_jit".into(), 0.0));
        assert_eq!(
            n("pg_stat_statements.max", "5000", "", "integer"),
            ("pg_settings_pg_stat_statements_max".into(), 5000.0)
        );
        assert_eq!(
            n("my-ext.some-knob", "1", "", "integer"),
            ("pg_settings_my_ext_some_knob".into(), 1.0)
        );
    }

    #[test]
    fn skipped_settings_say_why() {
        let s = |setting: &str, unit: &str, vartype: &str| Setting {
            name: "x".into(),
            setting: setting.into(),
            unit: unit.into(),
            vartype: vartype.into(),
        };
        assert!(normalise(&s("1", "weeks", "integer"))
            .unwrap_err()
            .contains("unit"));
        assert!(normalise(&s("abc", "", "integer"))
            .unwrap_err()
            .contains("not a number"));
        assert!(normalise(&s("on", "", "string")).is_err());
    }
}
