//! The charm's configuration options: declared once in [`OPTIONS`] (name,
//! type, default, the PostgreSQL parameter it maps to, its limits), checked by
//! [`validate`] with a message that names the option and the limit, and
//! turned into PostgreSQL parameters.
//!
//! charmcraft.yaml declares the same options for Juju; a test checks that the
//! two agree (names, types, defaults). Option names are today's charm's
//! (charm-snap.md §1.3) so that existing bundles deploy unchanged: every
//! `<prefix>_<parameter>` option maps to the PostgreSQL parameter with the
//! prefix stripped.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// An option's Juju type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    String,
    Int,
    Float,
    Boolean,
    Secret,
}

impl OptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            OptionType::String => "string",
            OptionType::Int => "int",
            OptionType::Float => "float",
            OptionType::Boolean => "boolean",
            OptionType::Secret => "secret",
        }
    }
}

/// A default value (or none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    None,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl DefaultValue {
    pub fn to_json(self) -> Value {
        match self {
            DefaultValue::None => Value::Null,
            DefaultValue::Str(s) => Value::from(s),
            DefaultValue::Int(i) => Value::from(i),
            DefaultValue::Float(f) => Value::from(f),
            DefaultValue::Bool(b) => Value::from(b),
        }
    }
}

/// What a value must satisfy beyond its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    None,
    Int(i64, i64),
    Float(f64, f64),
    OneOf(&'static [&'static str]),
    /// Checked by code that knows the machine or other options.
    Special,
}

/// Where a parameter is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not a PostgreSQL parameter (charm behaviour, HA settings).
    Charm,
    /// Cluster-wide: pgpilot's dynamic configuration (PATCH /config on one unit).
    Cluster,
    /// Depends on the machine: each member's own file, through `snap set`.
    Member,
}

#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptionType,
    pub default: DefaultValue,
    /// The PostgreSQL parameter it sets (for prefixed options).
    pub parameter: Option<&'static str>,
    pub scope: Scope,
    pub limit: Limit,
    pub description: &'static str,
}

const fn opt(
    name: &'static str,
    kind: OptionType,
    default: DefaultValue,
    limit: Limit,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        parameter: None,
        scope: Scope::Charm,
        limit,
        description,
    }
}

const fn pg(
    name: &'static str,
    parameter: &'static str,
    kind: OptionType,
    default: DefaultValue,
    limit: Limit,
    description: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        parameter: Some(parameter),
        scope: Scope::Cluster,
        limit,
        description,
    }
}

const INT_MAX: i64 = 2_147_483_647;
use DefaultValue as D;
use OptionType as T;

/// Every option, in charmcraft.yaml's order.
pub const OPTIONS: &[OptionSpec] = &[
    opt("synchronous_node_count", T::String, D::Str("all"), Limit::Special,
        "Synchronous standbys: all (units - 1), majority (units / 2) or a number (capped at units - 1)."),
    opt("synchronous_mode_strict", T::Boolean, D::Bool(true), Limit::None,
        "Refuse writes rather than run without a synchronous standby (with more than one unit)."),
    opt("profile", T::String, D::Str("production"), Limit::OneOf(&["production", "testing"]),
        "production: shared_buffers is 25% of the memory; testing: PostgreSQL's defaults."),
    opt("profile_limit_memory", T::Int, D::None, Limit::Int(128, 9_999_999),
        "Memory (MB) the production profile sizes PostgreSQL for, instead of the machine's."),
    pg("experimental_max_connections", "max_connections", T::Int, D::None, Limit::Int(10, 262_143),
        "max_connections (restarts PostgreSQL, replicas first)."),
    opt("system-users", T::Secret, D::None, Limit::Special,
        "A user secret with the system users' passwords (operator, replication, monitoring, patroni: <password>)."),
    OptionSpec { scope: Scope::Member, ..pg("memory_shared_buffers", "shared_buffers", T::Int, D::None, Limit::Special,
        "shared_buffers in 8 kB pages (16 ... 40% of the memory); restarts PostgreSQL, replicas first.") },
    pg("memory_work_mem", "work_mem", T::Int, D::Int(4096), Limit::Int(64, INT_MAX), "work_mem (kB)."),
    pg("memory_maintenance_work_mem", "maintenance_work_mem", T::Int, D::Int(65536), Limit::Int(1024, INT_MAX),
        "maintenance_work_mem (kB)."),
    pg("memory_temp_buffers", "temp_buffers", T::Int, D::Int(1024), Limit::Int(100, 1_073_741_823),
        "temp_buffers (8 kB pages)."),
    pg("memory_max_prepared_transactions", "max_prepared_transactions", T::Int, D::Int(0), Limit::Int(0, 262_143),
        "max_prepared_transactions (restarts PostgreSQL, replicas first)."),
    pg("durability_synchronous_commit", "synchronous_commit", T::String, D::Str("on"),
        Limit::OneOf(&["on", "remote_apply", "remote_write"]), "synchronous_commit."),
    pg("durability_wal_keep_size", "wal_keep_size", T::Int, D::Int(4096), Limit::Int(0, INT_MAX),
        "wal_keep_size (MB)."),
    OptionSpec { scope: Scope::Charm, ..pg("durability_maximum_lag_on_failover", "maximum_lag_on_failover", T::Int,
        D::Int(1_048_576), Limit::Int(0, i64::MAX), "Bytes a replica may lag and still be promoted in a failover.") },
    pg("cpu_max_worker_processes", "max_worker_processes", T::String, D::Str("auto"), Limit::Special,
        "max_worker_processes: auto or 2 ... 10 x vCPUs (restarts PostgreSQL, replicas first)."),
    pg("cpu_max_parallel_workers", "max_parallel_workers", T::String, D::Str("auto"), Limit::Special,
        "max_parallel_workers: auto or 2 ... 10 x vCPUs."),
    pg("cpu_wal_compression", "wal_compression", T::Boolean, D::Bool(true), Limit::None, "wal_compression."),
    pg("connection_authentication_timeout", "authentication_timeout", T::Int, D::Int(60), Limit::Int(1, 600),
        "authentication_timeout (s)."),
    pg("connection_statement_timeout", "statement_timeout", T::Int, D::Int(0), Limit::Int(0, INT_MAX),
        "statement_timeout (ms, 0: none)."),
    pg("instance_password_encryption", "password_encryption", T::String, D::Str("scram-sha-256"),
        Limit::OneOf(&["md5", "scram-sha-256"]), "password_encryption."),
    pg("instance_default_text_search_config", "default_text_search_config", T::String,
        D::Str("pg_catalog.simple"), Limit::Special, "default_text_search_config (schema.name)."),
    pg("instance_max_locks_per_transaction", "max_locks_per_transaction", T::Int, D::Int(64),
        Limit::Int(10, INT_MAX), "max_locks_per_transaction (restarts PostgreSQL, replicas first)."),
    pg("logging_log_connections", "log_connections", T::Boolean, D::Bool(true), Limit::None, "log_connections."),
    pg("logging_log_disconnections", "log_disconnections", T::Boolean, D::Bool(true), Limit::None,
        "log_disconnections."),
    pg("logging_log_min_duration_statement", "log_min_duration_statement", T::Int, D::Int(-1),
        Limit::Int(-1, INT_MAX), "log_min_duration_statement (ms, -1: off)."),
    pg("logging_client_min_messages", "client_min_messages", T::String, D::Str("notice"),
        Limit::OneOf(&["debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice", "warning", "error"]),
        "client_min_messages."),
    pg("optimizer_constraint_exclusion", "constraint_exclusion", T::String, D::Str("partition"),
        Limit::OneOf(&["on", "off", "partition"]), "constraint_exclusion."),
    pg("optimizer_default_statistics_target", "default_statistics_target", T::Int, D::Int(100),
        Limit::Int(1, 10_000), "default_statistics_target."),
    pg("optimizer_from_collapse_limit", "from_collapse_limit", T::Int, D::Int(8), Limit::Int(1, INT_MAX),
        "from_collapse_limit."),
    pg("optimizer_join_collapse_limit", "join_collapse_limit", T::Int, D::Int(8), Limit::Int(1, INT_MAX),
        "join_collapse_limit."),
    pg("optimizer_cpu_tuple_cost", "cpu_tuple_cost", T::Float, D::Float(0.01), Limit::Float(0.0, 1.0e10),
        "cpu_tuple_cost."),
    pg("optimizer_jit", "jit", T::Boolean, D::Bool(true), Limit::None, "jit."),
    pg("request_date_style", "DateStyle", T::String, D::Str("ISO, MDY"), Limit::Special, "DateStyle."),
    pg("request_time_zone", "TimeZone", T::String, D::Str("UTC"), Limit::Special, "TimeZone."),
    pg("request_default_transaction_isolation", "default_transaction_isolation", T::String,
        D::Str("read committed"),
        Limit::OneOf(&["serializable", "repeatable read", "read committed", "read uncommitted"]),
        "default_transaction_isolation."),
    pg("request_standard_conforming_strings", "standard_conforming_strings", T::Boolean, D::Bool(true),
        Limit::None, "standard_conforming_strings."),
    pg("response_bytea_output", "bytea_output", T::String, D::Str("hex"), Limit::OneOf(&["escape", "hex"]),
        "bytea_output."),
    pg("response_extra_float_digits", "extra_float_digits", T::Int, D::Int(1), Limit::Int(-15, 3),
        "extra_float_digits."),
    pg("storage_default_table_access_method", "default_table_access_method", T::String, D::Str("heap"),
        Limit::Special, "default_table_access_method."),
    pg("vacuum_autovacuum_analyze_scale_factor", "autovacuum_analyze_scale_factor", T::Float, D::Float(0.1),
        Limit::Float(0.0, 100.0), "autovacuum_analyze_scale_factor."),
    pg("vacuum_autovacuum_vacuum_scale_factor", "autovacuum_vacuum_scale_factor", T::Float, D::Float(0.2),
        Limit::Float(0.0, 100.0), "autovacuum_vacuum_scale_factor."),
    pg("vacuum_autovacuum_naptime", "autovacuum_naptime", T::Int, D::Int(60), Limit::Int(1, 2_147_483),
        "autovacuum_naptime (s)."),
    pg("vacuum_autovacuum_max_workers", "autovacuum_max_workers", T::Int, D::Int(3), Limit::Int(1, 262_143),
        "autovacuum_max_workers (restarts PostgreSQL, replicas first)."),
    pg("vacuum_vacuum_freeze_min_age", "vacuum_freeze_min_age", T::Int, D::Int(50_000_000),
        Limit::Int(0, 1_000_000_000), "vacuum_freeze_min_age."),
];

pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The facts about this machine the options are checked and sized against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub memory_mb: u64,
    pub cpus: u32,
}

/// A bad option value: the status message names the option and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {option}={value}: {requirement}")]
pub struct ConfigError {
    pub option: String,
    /// The value as given (secret values are not shown).
    pub value: String,
    pub requirement: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCount {
    All,
    Majority,
    Exactly(u32),
}

impl SyncCount {
    /// Synchronous standbys wanted with this many units.
    pub fn resolve(self, units: usize) -> u32 {
        let max = units.saturating_sub(1) as u32;
        match self {
            SyncCount::All => max,
            SyncCount::Majority => (units / 2) as u32,
            SyncCount::Exactly(n) => n.min(max),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Production,
    Testing,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CharmConfig {
    pub synchronous_node_count: SyncCount,
    pub synchronous_mode_strict: bool,
    pub maximum_lag_on_failover: u64,
    pub profile: Profile,
    pub profile_limit_memory_mb: Option<u64>,
    /// The `system-users` secret's URI.
    pub system_users: Option<String>,
    /// Machine-dependent parameters: each member's own (snap set).
    pub member_parameters: BTreeMap<String, Value>,
    /// Every cluster-wide parameter this charm manages: `None` = not set
    /// (removed from the dynamic configuration if there).
    pub cluster_parameters: BTreeMap<String, Option<Value>>,
}

/// `8 kB` pages in `mb` megabytes.
fn pages(mb: u64) -> u64 {
    mb * 1024 / 8
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Check every option; the first bad one (in charmcraft.yaml's order) is
/// reported. Nothing is applied when this fails.
pub fn validate(raw: &Map<String, Value>, machine: Machine) -> Result<CharmConfig, ConfigError> {
    let mut values: BTreeMap<&'static str, Value> = BTreeMap::new();
    for o in OPTIONS {
        let v = raw
            .get(o.name)
            .cloned()
            .unwrap_or_else(|| o.default.to_json());
        check_type(o, &v)?;
        check_limit(o, &v)?;
        values.insert(o.name, v);
    }
    let get = |name: &str| values.get(name).cloned().unwrap_or(Value::Null);
    let err = |o: &str, v: &Value, req: String| ConfigError {
        option: o.to_string(),
        value: shown(v),
        requirement: req,
    };

    let sync_raw = get("synchronous_node_count");
    let synchronous_node_count = match sync_raw.as_str().unwrap_or_default().trim() {
        "all" => SyncCount::All,
        "majority" => SyncCount::Majority,
        n => match n.parse::<u32>() {
            Ok(n) => SyncCount::Exactly(n),
            Err(_) => {
                return Err(err(
                    "synchronous_node_count",
                    &sync_raw,
                    "must be all, majority or a number of standbys (0 or more)".into(),
                ))
            }
        },
    };

    let system_users = match get("system-users") {
        Value::String(s) if !s.trim().is_empty() => {
            let s = s.trim();
            if !s.starts_with("secret:") && s.contains(char::is_whitespace) {
                return Err(ConfigError {
                    option: "system-users".into(),
                    value: "(not shown)".into(),
                    requirement: "must be a secret URI (juju add-secret, then juju grant-secret)"
                        .into(),
                });
            }
            Some(s.to_string())
        }
        _ => None,
    };

    let profile = if get("profile").as_str() == Some("testing") {
        Profile::Testing
    } else {
        Profile::Production
    };
    let limit_mb = get("profile_limit_memory").as_u64();
    let available_mb = limit_mb
        .unwrap_or(machine.memory_mb)
        .min(machine.memory_mb.max(1));

    // shared_buffers: 16 pages ... 40% of the memory.
    let mut member_parameters = BTreeMap::new();
    let sb_raw = get("memory_shared_buffers");
    let shared_buffers = match sb_raw.as_i64() {
        Some(p) => {
            let max = pages(available_mb) * 40 / 100;
            if p < 16 || p as u64 > max {
                return Err(err(
                    "memory_shared_buffers",
                    &sb_raw,
                    format!(
                        "must be between 16 and {max} pages of 8 kB (40% of {available_mb} MB of memory)"
                    ),
                ));
            }
            Some(p as u64)
        }
        None if profile == Profile::Production => Some(pages(available_mb) / 4),
        None => None,
    };
    if let Some(sb) = shared_buffers {
        member_parameters.insert("shared_buffers".to_string(), Value::from(sb));
        if profile == Profile::Production {
            let cache = pages(available_mb).saturating_sub(sb);
            member_parameters.insert("effective_cache_size".to_string(), Value::from(cache));
        }
    }

    let mut cluster_parameters = BTreeMap::new();
    for o in OPTIONS.iter().filter(|o| o.scope == Scope::Cluster) {
        let v = get(o.name);
        let parameter = o
            .parameter
            .expect("cluster options name a parameter")
            .to_string();
        let value = match (o.name, &v) {
            (_, Value::Null) => None,
            ("cpu_max_worker_processes" | "cpu_max_parallel_workers", Value::String(s)) => {
                let s = s.trim();
                if s == "auto" {
                    None
                } else {
                    let max = 10 * machine.cpus as u64;
                    match s.parse::<u64>() {
                        Ok(n) if (2..=max).contains(&n) => Some(Value::from(n)),
                        _ => {
                            return Err(err(
                                o.name,
                                &v,
                                format!(
                                    "must be auto or between 2 and {max} (10 x {} vCPUs)",
                                    machine.cpus
                                ),
                            ))
                        }
                    }
                }
            }
            _ => Some(v.clone()),
        };
        cluster_parameters.insert(parameter, value);
    }

    Ok(CharmConfig {
        synchronous_node_count,
        synchronous_mode_strict: get("synchronous_mode_strict").as_bool().unwrap_or(true),
        maximum_lag_on_failover: get("durability_maximum_lag_on_failover")
            .as_u64()
            .unwrap_or(1_048_576),
        profile,
        profile_limit_memory_mb: limit_mb,
        system_users,
        member_parameters,
        cluster_parameters,
    })
}

fn check_type(o: &OptionSpec, v: &Value) -> Result<(), ConfigError> {
    let ok = match (o.kind, v) {
        (_, Value::Null) => true,
        (OptionType::String | OptionType::Secret, Value::String(_)) => true,
        (OptionType::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (OptionType::Float, Value::Number(_)) => true,
        (OptionType::Boolean, Value::Bool(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            option: o.name.to_string(),
            value: if o.kind == OptionType::Secret {
                "(not shown)".into()
            } else {
                shown(v)
            },
            requirement: format!("must be of type {}", o.kind.as_str()),
        })
    }
}

fn check_limit(o: &OptionSpec, v: &Value) -> Result<(), ConfigError> {
    let err = |requirement: String| ConfigError {
        option: o.name.to_string(),
        value: shown(v),
        requirement,
    };
    match (o.limit, v) {
        (_, Value::Null) => Ok(()),
        (Limit::Int(lo, hi), Value::Number(n)) => match n.as_i64() {
            Some(i) if (lo..=hi).contains(&i) => Ok(()),
            _ => Err(err(format!("must be between {lo} and {hi}"))),
        },
        (Limit::Float(lo, hi), Value::Number(n)) => match n.as_f64() {
            Some(f) if f >= lo && f <= hi => Ok(()),
            _ => Err(err(format!("must be between {lo} and {hi}"))),
        },
        (Limit::OneOf(allowed), Value::String(s)) => {
            if allowed.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(err(format!("must be one of: {}", allowed.join(", "))))
            }
        }
        (Limit::Special, Value::String(s)) => match o.name {
            // Checked against the database by today's charm; here their form.
            "instance_default_text_search_config"
            | "storage_default_table_access_method"
            | "request_time_zone"
            | "request_date_style" => {
                let fine = !s.trim().is_empty()
                    && s.len() <= 63 * 2 + 1
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.,/+- ".contains(c));
                if fine {
                    Ok(())
                } else {
                    Err(err(
                        "must be a name PostgreSQL knows (letters, digits, _ . , / + -)".into(),
                    ))
                }
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

impl fmt::Display for SyncCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncCount::All => write!(f, "all"),
            SyncCount::Majority => write!(f, "majority"),
            SyncCount::Exactly(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MACHINE: Machine = Machine {
        memory_mb: 8192,
        cpus: 4,
    };

    fn with(pairs: &[(&str, Value)]) -> Map<String, Value> {
        let mut m: Map<String, Value> = OPTIONS
            .iter()
            .map(|o| (o.name.to_string(), o.default.to_json()))
            .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn defaults_are_valid_and_size_production() {
        let c = validate(&with(&[]), MACHINE).unwrap();
        assert_eq!(c.synchronous_node_count, SyncCount::All);
        assert!(c.synchronous_mode_strict);
        // 25% of 8 GB in 8 kB pages, the rest as cache.
        assert_eq!(c.member_parameters["shared_buffers"], json!(262_144));
        assert_eq!(c.member_parameters["effective_cache_size"], json!(786_432));
        assert_eq!(c.cluster_parameters["work_mem"], Some(json!(4096)));
        assert_eq!(c.cluster_parameters["DateStyle"], Some(json!("ISO, MDY")));
        assert_eq!(c.cluster_parameters["max_connections"], None);
        assert_eq!(c.cluster_parameters["max_worker_processes"], None, "auto");
        assert!(!c.cluster_parameters.contains_key("maximum_lag_on_failover"));
        assert!(!c.cluster_parameters.contains_key("shared_buffers"));
    }

    #[test]
    fn an_empty_map_means_every_default() {
        assert_eq!(
            validate(&Map::new(), MACHINE).unwrap(),
            validate(&with(&[]), MACHINE).unwrap()
        );
    }

    #[test]
    fn testing_profile_leaves_memory_to_postgresql() {
        let c = validate(&with(&[("profile", json!("testing"))]), MACHINE).unwrap();
        assert!(c.member_parameters.is_empty());
    }

    #[test]
    fn bad_values_name_the_option_and_the_limit() {
        let rows: Vec<(&str, Value, &str)> = vec![
            (
                "memory_shared_buffers",
                json!(900_000),
                "config memory_shared_buffers=900000: must be between 16 and 419430 pages of 8 kB (40% of 8192 MB of memory)",
            ),
            (
                "memory_shared_buffers",
                json!(8),
                "config memory_shared_buffers=8: must be between 16 and 419430 pages of 8 kB (40% of 8192 MB of memory)",
            ),
            (
                "connection_authentication_timeout",
                json!(601),
                "config connection_authentication_timeout=601: must be between 1 and 600",
            ),
            (
                "profile",
                json!("fast"),
                "config profile=\"fast\": must be one of: production, testing",
            ),
            (
                "durability_synchronous_commit",
                json!("off"),
                "config durability_synchronous_commit=\"off\": must be one of: on, remote_apply, remote_write",
            ),
            (
                "synchronous_node_count",
                json!("most"),
                "config synchronous_node_count=\"most\": must be all, majority or a number of standbys (0 or more)",
            ),
            (
                "cpu_max_worker_processes",
                json!("64"),
                "config cpu_max_worker_processes=\"64\": must be auto or between 2 and 40 (10 x 4 vCPUs)",
            ),
            (
                "memory_work_mem",
                json!("lots"),
                "config memory_work_mem=\"lots\": must be of type int",
            ),
            (
                "vacuum_autovacuum_vacuum_scale_factor",
                json!(-0.5),
                "config vacuum_autovacuum_vacuum_scale_factor=-0.5: must be between 0 and 100",
            ),
            (
                "request_time_zone",
                json!("UTC'; DROP"),
                "config request_time_zone=\"UTC'; DROP\": must be a name PostgreSQL knows (letters, digits, _ . , / + -)",
            ),
        ];
        for (option, value, message) in rows {
            let e = validate(&with(&[(option, value)]), MACHINE).unwrap_err();
            assert_eq!(e.option, option);
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn profile_limit_memory_sizes_and_bounds_shared_buffers() {
        let c = validate(&with(&[("profile_limit_memory", json!(1024))]), MACHINE).unwrap();
        assert_eq!(c.member_parameters["shared_buffers"], json!(32_768));
        let e = validate(
            &with(&[
                ("profile_limit_memory", json!(1024)),
                ("memory_shared_buffers", json!(100_000)),
            ]),
            MACHINE,
        )
        .unwrap_err();
        assert!(e.requirement.contains("40% of 1024 MB"), "{e}");
    }

    #[test]
    fn sync_count_resolves_against_units() {
        assert_eq!(SyncCount::All.resolve(3), 2);
        assert_eq!(SyncCount::All.resolve(1), 0);
        assert_eq!(SyncCount::Majority.resolve(5), 2);
        assert_eq!(SyncCount::Exactly(4).resolve(3), 2);
        assert_eq!(SyncCount::Exactly(1).resolve(3), 1);
    }

    #[test]
    fn secret_values_are_not_shown() {
        let e = validate(&with(&[("system-users", json!(42))]), MACHINE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config system-users=(not shown): must be of type secret"
        );
        let c = validate(
            &with(&[("system-users", json!("secret:cn8fk1ffhcmc79f7r5l0"))]),
            MACHINE,
        )
        .unwrap();
        assert_eq!(
            c.system_users.as_deref(),
            Some("secret:cn8fk1ffhcmc79f7r5l0")
        );
    }

    #[test]
    fn every_prefixed_option_names_its_parameter() {
        for o in OPTIONS {
            let prefixed = [
                "connection_",
                "cpu_",
                "durability_",
                "instance_",
                "logging_",
                "memory_",
                "optimizer_",
                "request_",
                "response_",
                "session_",
                "storage_",
                "vacuum_",
            ]
            .iter()
            .find(|p| o.name.starts_with(**p));
            if let Some(prefix) = prefixed {
                let parameter = o.parameter.expect(o.name);
                let stripped = &o.name[prefix.len()..];
                let renamed = matches!(o.name, "request_date_style" | "request_time_zone");
                assert!(
                    renamed || stripped == parameter,
                    "{} maps to {parameter}, not {stripped}",
                    o.name
                );
            }
        }
    }
}
