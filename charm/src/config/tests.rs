//! Tests of the options: defaults, limits and messages, the parameter each
//! option sets, and which ones restart PostgreSQL.

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
    assert!(!c.member_parameters.contains_key("shared_buffers"));
    assert!(!c.member_parameters.contains_key("effective_cache_size"));
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
    const PREFIXES: &[&str] = &[
        "connection_",
        "cpu_",
        "durability_",
        "experimental_",
        "instance_",
        "logging_",
        "memory_",
        "optimizer_",
        "request_",
        "response_",
        "session_",
        "storage_",
        "vacuum_",
    ];
    for o in OPTIONS {
        let Some(prefix) = PREFIXES.iter().find(|p| o.name.starts_with(**p)) else {
            assert_eq!(o.parameter, None, "{}", o.name);
            continue;
        };
        let parameter = o.parameter.expect(o.name);
        let stripped = &o.name[prefix.len()..];
        // Today's charm's three renames (charm-snap.md §1.3).
        let expected = match stripped {
            "date_style" => "DateStyle".to_string(),
            "time_zone" => "TimeZone".to_string(),
            s => match s.strip_prefix("pg_stat_statements_") {
                Some(rest) => format!("pg_stat_statements.{rest}"),
                None => s.to_string(),
            },
        };
        assert_eq!(parameter, expected, "{}", o.name);
    }
}

/// PostgreSQL 15's parameters with `pg_settings.context = 'postmaster'`
/// among those the options set (16 agrees): changing one restarts.
const POSTMASTER_CONTEXT: &[&str] = &[
    "autovacuum_freeze_max_age",
    "autovacuum_max_workers",
    "max_connections",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_prepared_transactions",
    "max_worker_processes",
    "old_snapshot_threshold",
    "shared_buffers",
    "track_activity_query_size",
];

#[test]
fn the_options_that_restart_postgresql_are_marked_and_say_so() {
    for o in OPTIONS {
        let restarts = o.parameter.is_some_and(|p| POSTMASTER_CONTEXT.contains(&p));
        assert_eq!(o.restart, restarts, "{}", o.name);
        assert_eq!(
            o.description.contains("restarts PostgreSQL"),
            restarts,
            "{}: the description says whether it restarts",
            o.name
        );
    }
}

#[test]
fn every_option_is_declared_once_with_a_default_of_its_type() {
    let mut names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), OPTIONS.len());
    let c = validate(&with(&[]), MACHINE).unwrap();
    for o in OPTIONS {
        let d = o.default.to_json();
        assert!(check_type(o, &d).is_ok(), "{}", o.name);
        assert!(
            check_limit(o, &d).is_ok(),
            "{}: its default is within its limit",
            o.name
        );
        if o.scope == Scope::Cluster && !d.is_null() && !matches!(o.limit, Limit::Workers(_)) {
            let p = o.parameter.unwrap();
            assert_eq!(c.cluster_parameters[p], Some(d), "{}", o.name);
        }
    }
}

#[test]
fn limits_are_postgresqls() {
    let rows: Vec<(&str, Value, &str)> = vec![
        (
            "optimizer_geqo_selection_bias",
            json!(1.4),
            "config optimizer_geqo_selection_bias=1.4: must be between 1.5 and 2",
        ),
        (
            "optimizer_parallel_setup_cost",
            json!(-1.0),
            "config optimizer_parallel_setup_cost=-1.0: must be between 0 and 1.8e308",
        ),
        (
            "request_track_activity_query_size",
            json!(99),
            "config request_track_activity_query_size=99: must be between 100 and 1048576",
        ),
        (
            "storage_old_snapshot_threshold",
            json!(86401),
            "config storage_old_snapshot_threshold=86401: must be between -1 and 86400",
        ),
        (
            "vacuum_vacuum_failsafe_age",
            json!(2_100_000_001_i64),
            "config vacuum_vacuum_failsafe_age=2100000001: must be between 0 and 2100000000",
        ),
        (
            "logging_track_functions",
            json!("some"),
            "config logging_track_functions=\"some\": must be one of: none, pl, all",
        ),
        (
            "optimizer_pg_stat_statements_track",
            json!("nested"),
            "config optimizer_pg_stat_statements_track=\"nested\": must be one of: none, top, all",
        ),
        (
            "cpu_max_parallel_maintenance_workers",
            json!("1"),
            "config cpu_max_parallel_maintenance_workers=\"1\": must be auto or between 2 and 40 (10 x 4 vCPUs)",
        ),
    ];
    for (option, value, message) in rows {
        let e = validate(&with(&[(option, value)]), MACHINE).unwrap_err();
        assert_eq!(e.to_string(), message);
    }
    // Never above PostgreSQL's maximum, however many vCPUs.
    let big = Machine {
        memory_mb: 8192,
        cpus: 256,
    };
    let e = validate(&with(&[("cpu_max_parallel_workers", json!("2000"))]), big).unwrap_err();
    assert_eq!(
        e.requirement,
        "must be auto or between 2 and 1024 (PostgreSQL's maximum)"
    );
    let c = validate(&with(&[("cpu_max_worker_processes", json!("2000"))]), big).unwrap();
    assert_eq!(
        c.cluster_parameters["max_worker_processes"],
        Some(json!(2000))
    );
}

#[test]
fn what_is_not_built_yet_is_accepted_at_its_default_only() {
    let c = validate(&with(&[("ldap_map", json!(""))]), MACHINE);
    assert!(c.is_ok(), "unset");
    let rows: Vec<(&str, Value, &str)> = vec![
        (
            "ldap_map",
            json!("admins=dba"),
            "config ldap_map=\"admins=dba\": not supported yet (this charm has no LDAP integration); reset it to its default",
        ),
        (
            "ldap_search_filter",
            json!("(cn=$username)"),
            "config ldap_search_filter=\"(cn=$username)\": not supported yet (this charm has no LDAP integration); reset it to its default",
        ),
        (
            "response_lc_monetary",
            json!("en_US.UTF-8"),
            "config response_lc_monetary=\"en_US.UTF-8\": must be a locale this snap has: C, C.UTF-8 or POSIX (other locales are not supported yet)",
        ),
        (
            "plugin_postgis_enable",
            json!(true),
            "config plugin_postgis_enable=true: extension postgis is not in this snap",
        ),
    ];
    for (option, value, message) in rows {
        let e = validate(&with(&[(option, value)]), MACHINE).unwrap_err();
        assert_eq!(e.to_string(), message);
    }
    let c = validate(&with(&[("response_lc_time", json!("C.UTF-8"))]), MACHINE).unwrap();
    assert_eq!(c.cluster_parameters["lc_time"], Some(json!("C.UTF-8")));
}

#[test]
fn two_options_of_one_parameter_must_agree() {
    let c = validate(
        &with(&[("optimizer_track_functions", json!("pl"))]),
        MACHINE,
    )
    .unwrap();
    assert_eq!(c.cluster_parameters["track_functions"], Some(json!("pl")));
    let c = validate(&with(&[("logging_track_functions", json!("all"))]), MACHINE).unwrap();
    assert_eq!(c.cluster_parameters["track_functions"], Some(json!("all")));
    let both = with(&[
        ("logging_track_functions", json!("all")),
        ("optimizer_track_functions", json!("pl")),
    ]);
    assert_eq!(
        validate(&both, MACHINE).unwrap_err().to_string(),
        "config optimizer_track_functions=\"pl\": logging_track_functions sets the same parameter (track_functions) to \"all\"; give both the same value or reset one"
    );
    let same = with(&[
        ("logging_track_functions", json!("pl")),
        ("optimizer_track_functions", json!("pl")),
    ]);
    assert!(validate(&same, MACHINE).is_ok());
}

#[test]
fn every_member_loads_pg_stat_statements() {
    for profile in ["production", "testing"] {
        let c = validate(&with(&[("profile", json!(profile))]), MACHINE).unwrap();
        assert_eq!(
            c.member_parameters["shared_preload_libraries"],
            json!("pg_stat_statements")
        );
    }
    let c = validate(&with(&[]), MACHINE).unwrap();
    assert_eq!(
        c.cluster_parameters["pg_stat_statements.track"],
        Some(json!("top"))
    );
}
