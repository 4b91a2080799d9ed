//! The charm's configuration options: declared once in [`OPTIONS`] (name,
//! type, default, the PostgreSQL parameter it maps to, its limits, whether
//! it restarts PostgreSQL), checked by [`validate`] with a message that names
//! the option and the limit, and turned into PostgreSQL parameters and the
//! extensions to create ([`plugins`]).
//!
//! charmcraft.yaml declares the same options for Juju; a test checks that the
//! two agree (names, order, types, defaults, descriptions). Option names are
//! today's charm's (charm-snap.md §1.3) so that existing bundles deploy
//! unchanged: every `<prefix>_<parameter>` option maps to the PostgreSQL
//! parameter with the prefix stripped. An option whose feature is not built
//! yet is accepted at its default only ([`Limit::DefaultOnly`]): any other
//! value blocks, naming the option, instead of being ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

mod options;
pub mod plugins;

pub use options::OPTIONS;
pub use plugins::Extensions;

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
    /// `auto` (left to PostgreSQL), or 2 to 10 processes per vCPU, at most
    /// this many (PostgreSQL's maximum).
    Workers(i64),
    /// A locale this snap has ([`SNAP_LOCALES`]).
    Locale,
    /// Only its default is accepted: the feature behind it is not built yet
    /// (why, for the message).
    DefaultOnly(&'static str),
    /// Checked by code that knows the machine or other options.
    Special,
}

/// The locales PostgreSQL finds in the snap: glibc's built-in ones (the snap
/// ships no locale data; today's charm's snap had every locale).
pub const SNAP_LOCALES: &[&str] = &["C", "C.UTF-8", "C.utf8", "POSIX"];

/// Loaded by every member, as today's charm loads it, so that the
/// `optimizer_pg_stat_statements_*` options and `plugin_pg_stat_statements_enable`
/// mean what they say.
pub const PRELOAD_LIBRARIES: &str = "pg_stat_statements";

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
    /// Changing it restarts PostgreSQL (`pg_settings.context` is
    /// `postmaster`): pgpilot flags the members pending restart and the
    /// charm rolls them, replicas first.
    pub restart: bool,
    pub description: &'static str,
}

impl OptionSpec {
    const fn restart(mut self) -> Self {
        self.restart = true;
        self
    }

    const fn member(mut self) -> Self {
        self.scope = Scope::Member;
        self
    }

    const fn charm(mut self) -> Self {
        self.scope = Scope::Charm;
        self
    }
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
        restart: false,
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
        restart: false,
        description,
    }
}

/// A `plugin_<name>_enable` option ([`plugins::PLUGINS`] says what it creates).
const fn plugin(name: &'static str, default: bool, description: &'static str) -> OptionSpec {
    opt(
        name,
        OptionType::Boolean,
        DefaultValue::Bool(default),
        Limit::None,
        description,
    )
}

/// PostgreSQL's largest `integer` setting.
pub(crate) const INT_MAX: i64 = 2_147_483_647;
/// PostgreSQL's largest `real` setting (a C double).
pub(crate) const REAL_MAX: f64 = f64::MAX;
const NO_LDAP: &str = "this charm has no LDAP integration";

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
    /// Every extension the snap ships that a plugin option manages: whether
    /// it should exist in the databases.
    pub extensions: Extensions,
    /// Values accepted although they do nothing yet (logged at config-changed).
    pub notes: Vec<String>,
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

    member_parameters.insert(
        "shared_preload_libraries".to_string(),
        Value::from(PRELOAD_LIBRARIES),
    );

    let mut cluster_parameters = BTreeMap::new();
    // Which option set each parameter with a value of its own (two of
    // today's options set track_functions).
    let mut set_by: BTreeMap<String, (&'static str, Value)> = BTreeMap::new();
    for o in OPTIONS.iter().filter(|o| o.scope == Scope::Cluster) {
        let v = get(o.name);
        let parameter = o
            .parameter
            .expect("cluster options name a parameter")
            .to_string();
        let value = match (o.limit, &v) {
            (_, Value::Null) => None,
            (Limit::Workers(pg_max), Value::String(s)) => workers(o.name, &v, s, pg_max, machine)?,
            _ => Some(v.clone()),
        };
        let at_default = v == o.default.to_json();
        if let Some((other, theirs)) = set_by.get(&parameter) {
            if at_default {
                continue;
            }
            if *theirs != v {
                return Err(err(
                    o.name,
                    &v,
                    format!(
                        "{other} sets the same parameter ({parameter}) to {}; give both the same value or reset one",
                        shown(theirs)
                    ),
                ));
            }
        }
        if !at_default {
            set_by.insert(parameter.clone(), (o.name, v.clone()));
        }
        cluster_parameters.insert(parameter, value);
    }

    let (extensions, notes) = plugins::desired(&get)?;

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
        extensions,
        notes,
    })
}

/// A `cpu_*` option: `auto` (left to PostgreSQL) or 2 to 10 processes per
/// vCPU, never more than PostgreSQL's maximum.
fn workers(
    option: &str,
    v: &Value,
    text: &str,
    pg_max: i64,
    machine: Machine,
) -> Result<Option<Value>, ConfigError> {
    let text = text.trim();
    if text == "auto" {
        return Ok(None);
    }
    let per_cpu = 10 * i64::from(machine.cpus);
    let max = per_cpu.min(pg_max);
    match text.parse::<i64>() {
        Ok(n) if (2..=max).contains(&n) => Ok(Some(Value::from(n))),
        _ => Err(ConfigError {
            option: option.to_string(),
            value: shown(v),
            requirement: if per_cpu <= pg_max {
                format!(
                    "must be auto or between 2 and {max} (10 x {} vCPUs)",
                    machine.cpus
                )
            } else {
                format!("must be auto or between 2 and {max} (PostgreSQL's maximum)")
            },
        }),
    }
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
            _ => Err(err(format!(
                "must be between {} and {}",
                real(lo),
                real(hi)
            ))),
        },
        (Limit::Locale, Value::String(s)) => {
            if SNAP_LOCALES.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(err(
                    "must be a locale this snap has: C, C.UTF-8 or POSIX (other locales are not supported yet)"
                        .into(),
                ))
            }
        }
        (Limit::DefaultOnly(why), _) => {
            let unset = v.as_str().is_some_and(|s| s.is_empty());
            if *v == o.default.to_json() || (unset && o.default == DefaultValue::None) {
                Ok(())
            } else {
                Err(err(format!(
                    "not supported yet ({why}); reset it to its default"
                )))
            }
        }
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

/// A `real` limit as people write it (PostgreSQL's largest as 1.8e308).
fn real(f: f64) -> String {
    if f.abs() >= 1e15 {
        format!("{f:.1e}")
    } else {
        f.to_string()
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
mod tests;
