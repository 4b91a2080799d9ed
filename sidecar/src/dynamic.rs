//! Cluster-wide ("dynamic") configuration kept in the store's `config` key.
//!
//! The member file seeds it under `[bootstrap]`; afterwards the store is the
//! source of truth. The JSON field names match Patroni's so existing tooling
//! (and the charm's `PATCH /config`) keeps working.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Invalid, ParamValue};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Seconds the leader lease lives without renewal.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Seconds between HA cycles.
    #[serde(default = "default_loop_wait")]
    pub loop_wait: u64,
    /// Seconds a store or PostgreSQL operation is retried before it counts as failed.
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout: u64,
    /// Bytes a replica may lag behind the last known leader position and still promote.
    #[serde(default = "default_max_lag")]
    pub maximum_lag_on_failover: u64,
    /// Seconds a crashed primary gets to restart in place before failing over.
    #[serde(default = "default_primary_start_timeout")]
    pub primary_start_timeout: u64,
    /// Seconds the leader keeps the replication slot of a member whose key
    /// is gone (Patroni 4's `member_slots_ttl`); PostgreSQL's
    /// `max_slot_wal_keep_size` bounds the WAL it holds meanwhile.
    #[serde(default = "default_member_slots_ttl")]
    pub member_slots_ttl: u64,
    /// Synchronous replication managed by pgpilot.
    #[serde(default)]
    pub synchronous_mode: bool,
    /// Block writes rather than run without a synchronous standby.
    #[serde(default)]
    pub synchronous_mode_strict: bool,
    /// How many synchronous standbys to keep.
    #[serde(default = "default_sync_count")]
    pub synchronous_node_count: u32,
    /// Maintenance mode: nothing is started, stopped, promoted or demoted automatically.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// Cluster-wide PostgreSQL settings.
    #[serde(default)]
    pub postgresql: DynamicPostgres,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicPostgres {
    /// Rewind a diverged former primary instead of re-cloning it.
    #[serde(default = "default_true")]
    pub use_pg_rewind: bool,
    /// When pg_rewind fails, wipe the data directory and clone the leader again.
    #[serde(default)]
    pub remove_data_directory_on_rewind_failure: bool,
    /// PostgreSQL parameters for every member.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
}

impl Default for DynamicPostgres {
    fn default() -> Self {
        DynamicPostgres {
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: false,
            parameters: BTreeMap::new(),
        }
    }
}

fn default_ttl() -> u64 {
    10
}
fn default_loop_wait() -> u64 {
    2
}
fn default_retry_timeout() -> u64 {
    3
}
fn default_max_lag() -> u64 {
    1_048_576
}
fn default_primary_start_timeout() -> u64 {
    300
}
fn default_member_slots_ttl() -> u64 {
    1800
}
fn default_sync_count() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_max_lag(),
            primary_start_timeout: default_primary_start_timeout(),
            member_slots_ttl: default_member_slots_ttl(),
            synchronous_mode: false,
            synchronous_mode_strict: false,
            synchronous_node_count: default_sync_count(),
            pause: false,
            postgresql: DynamicPostgres::default(),
        }
    }
}

/// etcd's largest lease TTL in seconds (`MaxLeaseTTL` of its lease
/// package; a grant above it fails with "too large lease TTL"). Every
/// duration in seconds is bounded by it, which also keeps `Instant +
/// Duration` far from overflowing.
pub const MAX_LEASE_TTL: u64 = 9_000_000_000;

/// A duration in seconds within `min..=max`, or an error naming `key`.
pub fn check_seconds(key: &str, value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if value < min {
        let unit = if min == 1 { "second" } else { "seconds" };
        return Err(Invalid::new(key, format!("must be at least {min} {unit}")));
    }
    if value > max {
        return Err(Invalid::new(
            key,
            format!("{value} seconds is more than the largest allowed, {max}"),
        ));
    }
    Ok(())
}

impl DynamicConfig {
    /// Validate; `prefix` is where the keys live (`bootstrap` in the file, `` in the store).
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        check_seconds(&key("ttl"), self.ttl, 4, MAX_LEASE_TTL)?;
        check_seconds(&key("loop_wait"), self.loop_wait, 1, MAX_LEASE_TTL)?;
        check_seconds(&key("retry_timeout"), self.retry_timeout, 1, MAX_LEASE_TTL)?;
        check_seconds(
            &key("primary_start_timeout"),
            self.primary_start_timeout,
            0,
            MAX_LEASE_TTL,
        )?;
        check_seconds(
            &key("member_slots_ttl"),
            self.member_slots_ttl,
            0,
            MAX_LEASE_TTL,
        )?;
        // Checked arithmetic: within the bounds above this cannot overflow,
        // but the rule must hold whatever the bounds become.
        let needed = self
            .retry_timeout
            .checked_mul(2)
            .and_then(|r| r.checked_add(self.loop_wait));
        if needed.is_none_or(|n| n > self.ttl) {
            let sum = needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            return Err(Invalid::new(
                key("ttl"),
                format!(
                    "loop_wait ({}) + 2 * retry_timeout ({}) = {sum} exceeds ttl ({}): a leader could \
                     lose its lease before it notices; raise ttl or lower loop_wait/retry_timeout",
                    self.loop_wait, self.retry_timeout, self.ttl
                ),
            ));
        }
        if self.synchronous_node_count < 1 {
            return Err(Invalid::new(
                key("synchronous_node_count"),
                "must be at least 1",
            ));
        }
        for name in self.postgresql.parameters.keys() {
            if let Some(owner) = crate::config::managed::managed_parameter(name) {
                return Err(Invalid::new(
                    key(&format!("postgresql.parameters.{name}")),
                    format!("is set by pgpilot from {owner}"),
                ));
            }
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }
    pub fn loop_wait(&self) -> Duration {
        Duration::from_secs(self.loop_wait)
    }
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_secs(self.retry_timeout)
    }

    /// How long before the lease deadline a leader stops accepting writes.
    /// A third of the TTL, at least one second: room for the demotion itself.
    pub fn fence_margin(&self) -> Duration {
        Duration::from_millis((self.ttl.saturating_mul(1000) / 3).max(1000))
    }

    /// How often the lease keeper renews: several times per TTL (invariant 7).
    pub fn lease_renew_interval(&self) -> Duration {
        Duration::from_millis((self.ttl.saturating_mul(1000) / 4).max(500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let d = DynamicConfig::default();
        d.validate("").unwrap();
        let json = serde_json::to_string(&d).unwrap();
        let back: DynamicConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(d, back);
        assert!(!json.contains("pause"));
    }

    #[test]
    fn patroni_style_json_is_read() {
        let d: DynamicConfig = serde_json::from_str(
            r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"postgresql":{"parameters":{"max_connections":100}}}"#,
        )
        .unwrap();
        assert_eq!(d.ttl, 30);
        assert_eq!(
            d.postgresql.parameters["max_connections"],
            ParamValue::Int(100)
        );
        d.validate("").unwrap();
    }

    #[test]
    fn timing_rule_is_enforced() {
        let d = DynamicConfig {
            ttl: 8,
            loop_wait: 4,
            retry_timeout: 3,
            ..Default::default()
        };
        assert_eq!(d.validate("").unwrap_err().key, "ttl");
    }

    #[test]
    fn timing_rule_does_not_wrap_around() {
        for (loop_wait, retry_timeout) in
            [(u64::MAX, 3), (3, i64::MAX as u64), (3, u64::MAX / 2 + 1)]
        {
            let d = DynamicConfig {
                ttl: 30,
                loop_wait,
                retry_timeout,
                ..Default::default()
            };
            assert!(d.validate("").is_err(), "{loop_wait} {retry_timeout}");
        }
        // Within every bound, the sum itself too large for the ttl.
        let d = DynamicConfig {
            ttl: MAX_LEASE_TTL,
            loop_wait: MAX_LEASE_TTL,
            retry_timeout: MAX_LEASE_TTL,
            ..Default::default()
        };
        let e = d.validate("bootstrap").unwrap_err();
        assert_eq!(e.key, "bootstrap.ttl");
        assert!(
            e.message.contains("= 27000000000 exceeds ttl"),
            "{}",
            e.message
        );
    }

    #[test]
    fn durations_are_bounded_by_etcds_largest_lease() {
        let at = |ttl| DynamicConfig {
            ttl,
            ..Default::default()
        };
        at(MAX_LEASE_TTL).validate("").unwrap();
        let e = at(MAX_LEASE_TTL + 1).validate("").unwrap_err();
        assert_eq!(e.key, "ttl");
        assert!(e.message.contains("9000000000"), "{}", e.message);
        assert_eq!(at(i64::MAX as u64).validate("").unwrap_err().key, "ttl");
        let d = DynamicConfig {
            primary_start_timeout: u64::MAX,
            ..Default::default()
        };
        assert_eq!(
            d.validate("bootstrap").unwrap_err().key,
            "bootstrap.primary_start_timeout"
        );
        // The largest valid values leave room for deadlines.
        let d = DynamicConfig {
            ttl: MAX_LEASE_TTL,
            loop_wait: MAX_LEASE_TTL / 4,
            retry_timeout: MAX_LEASE_TTL / 4,
            primary_start_timeout: MAX_LEASE_TTL,
            ..Default::default()
        };
        d.validate("").unwrap();
        let now = std::time::Instant::now();
        for t in [d.ttl(), d.loop_wait(), d.retry_timeout(), d.fence_margin()] {
            assert!(now.checked_add(t).is_some());
        }
    }
}
